/*
 * hostcache: the SSD tier
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * Clean blocks evicted from RAM are written ("demoted") to the ssd child in
 * the background and found there again on a RAM miss ("promoted" back).
 * The slot table is persistent (hc-ssd.c, docs/SSD-FORMAT.md), so a restart
 * after a clean close or a crash serves what is there; every slot read is
 * checked against its CRC.  A block's SSD entry is dropped, durably (FUA),
 * before the block changes on the origin or becomes dirty in RAM.  What an
 * open does with the tier it finds is decided by hc_ssd_plan_open() and
 * hc_ssd_plan_loaded(); this file does the I/O.
 */

#include "qemu/osdep.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qapi/error.h"
#include "qemu/bitops.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/units.h"
#include "trace.h"
#include "hostcache-int.h"

/* Report an SSD I/O error once and stop using the tier (lock held). */
void hostcache_ssd_fail_locked(BlockDriverState *bs, int ret,
                               const char *what)
{
    BDRVHostcacheState *s = bs->opaque;

    hc_engine_stats(s->eng)->ssd_errors++;
    if (!s->ssd.broken) {
        /* Its entries may go stale from now on: drop them (see forget). */
        s->ssd.drop_pending = true;
        error_report("hostcache '%s': %s on the SSD tier failed (%s); "
                     "continuing with the RAM tier only",
                     bdrv_get_node_name(bs), what, strerror(-ret));
    }
    s->ssd.broken = true;
    s->ssd.on = false;
}

/*
 * Flush the SSD; sector writes before it become durable.  In or out of a
 * coroutine (bdrv_flush() is mixed).
 */
int GRAPH_RDLOCK hostcache_ssd_flush(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    size_t n;
    int ret;

    qemu_mutex_lock(&s->lock);
    n = s->ssd.idx ? hc_ssd_unflushed_count(s->ssd.idx) : 0;
    qemu_mutex_unlock(&s->lock);
    ret = bdrv_flush(s->ssd.child->bs);
    if (ret == 0) {
        qemu_mutex_lock(&s->lock);
        if (n) {
            hc_ssd_flushed(s->ssd.idx, n);  /* written before it: durable */
        }
        s->ssd.flush_ns = get_clock();
        qemu_mutex_unlock(&s->lock);
    }
    return ret;
}

/* Write slot-table sector sec (FUA) unless the device already has it. */
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_write_sector(BlockDriverState *bs, uint64_t sec,
                           BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = NULL;

    for (;;) {
        uint64_t gen;
        int ret;

        qemu_mutex_lock(&s->lock);
        gen = hc_ssd_sector_gen(s->ssd.idx, sec);
        if (!s->ssd.on || hc_ssd_sector_disk_gen(s->ssd.idx, sec) >= gen) {
            qemu_mutex_unlock(&s->lock);
            return 0;
        }
        if (test_bit(sec, s->ssd.sec_busy)) {
            /* written by another request now: then see what it wrote */
            qemu_co_queue_wait(&s->ssd.sec_wait, &s->lock);
            qemu_mutex_unlock(&s->lock);
            continue;
        }
        set_bit(sec, s->ssd.sec_busy);
        if (!buf) {
            buf = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SECTOR);
        }
        hc_ssd_encode_sector(s->ssd.idx, sec, buf);
        qemu_mutex_unlock(&s->lock);

        ret = bdrv_co_pwrite(s->ssd.child,
                             hc_ssd_sector_offset(s->ssd.idx, sec),
                             HC_SSD_SECTOR, buf, flags);

        qemu_mutex_lock(&s->lock);
        clear_bit(sec, s->ssd.sec_busy);
        qemu_co_queue_restart_all(&s->ssd.sec_wait);
        if (ret == 0 && !(flags & BDRV_REQ_FUA)) {
            /* durable after the next flush (hc_ssd_flushed) */
            if (hc_ssd_sector_unflushed(s->ssd.idx, sec, gen) < 0) {
                hostcache_ssd_fail_locked(bs, -ENOMEM, "keeping track");
            }
            qemu_mutex_unlock(&s->lock);
            return 0;
        } else if (ret == 0) {
            hc_ssd_sector_written(s->ssd.idx, sec, gen);
        } else {
            hostcache_ssd_fail_locked(bs, ret, "writing metadata");
        }
        qemu_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
}

/* Write slot-table sector sec durably (FUA) unless the device has it. */
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_persist(BlockDriverState *bs, uint64_t sec)
{
    return hostcache_ssd_write_sector(bs, sec, BDRV_REQ_FUA);
}

void hostcache_note_sector(void *opaque, uint64_t sec)
{
    HostcacheSectors *l = opaque;

    for (int i = 0; i < l->n; i++) {
        if (l->sec[i] == sec) {
            return;
        }
    }
    if (l->n == ARRAY_SIZE(l->sec)) {
        l->overflow = true;
        return;
    }
    l->sec[l->n++] = sec;
}

int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_write_sectors(BlockDriverState *bs, HostcacheSectors *l,
                            BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t n = l->overflow ? hc_ssd_sectors(s->ssd.idx) : l->n;

    for (uint64_t i = 0; i < n; i++) {
        int ret = hostcache_ssd_write_sector(bs, l->overflow ? i : l->sec[i],
                                             flags);

        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_persist_all(BlockDriverState *bs, HostcacheSectors *l)
{
    return hostcache_ssd_write_sectors(bs, l, BDRV_REQ_FUA);
}

/*
 * Remember that blk's entry is dropped in memory, in sector sec, until
 * that sector is durable (lock held); out of memory, the tier is given up.
 */
void hostcache_pending_add(BDRVHostcacheState *s, uint64_t blk,
                           uint64_t sec)
{
    if (hc_ssd_pending_add(s->ssd.idx, blk, sec) < 0) {
        s->ssd.drop_pending = s->ssd.broken = true;
        s->ssd.on = false;
    }
}

/*
 * Durably forget the SSD copies of blocks [first, end) before they change
 * on the origin: drop their entries and persist those sectors, and those of
 * earlier drops of these blocks still in flight (a CLOCK victim, a block
 * made dirty).  After an SSD error the whole tier is dropped first.
 */
void coroutine_fn GRAPH_RDLOCK
hostcache_ssd_forget(BlockDriverState *bs, uint64_t first, uint64_t end)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheSectors l = { .n = 0 };

    if (!s->ssd.idx) {
        return;
    }
    qemu_mutex_lock(&s->lock);
    while (s->ssd.dropping) {
        /* another request drops the whole tier: wait until it is done */
        qemu_co_queue_wait(&s->ssd.drop_wait, &s->lock);
    }
    qemu_mutex_unlock(&s->lock);
    if (!s->ssd.drop_pending) {
        qemu_mutex_lock(&s->lock);
        if (s->ssd.on) {
            hc_ssd_invalidate_range(s->ssd.idx, first, end,
                                    hostcache_note_sector, &l);
        }
        hc_ssd_pending_sectors(s->ssd.idx, first, end, hostcache_note_sector,
                               &l);
        qemu_mutex_unlock(&s->lock);
        if (hostcache_ssd_persist_all(bs, &l) == 0 || !s->ssd.drop_pending) {
            return;
        }
        /* the SSD failed just now: drop everything instead */
    }
    if (hostcache_ssd_dirty(s) && hostcache_journal_sync(bs) < 0) {
        /* journaled blocks the origin lacks: keep them, do not drop */
        return;
    }
    qemu_mutex_lock(&s->lock);
    if (s->ssd.dropping || !s->ssd.drop_pending) {
        /* another request dropped it, or drops it, meanwhile */
        while (s->ssd.dropping) {
            qemu_co_queue_wait(&s->ssd.drop_wait, &s->lock);
        }
        qemu_mutex_unlock(&s->lock);
        return;
    }
    s->ssd.dropping = true;
    qemu_mutex_unlock(&s->lock);
    if (hostcache_ssd_write_super(bs, HC_SSD_STATE_OPEN, true) < 0) {
        error_report("hostcache '%s': the SSD tier may now hold stale "
                     "copies; zero its first 8 KiB before using it again",
                     bdrv_get_node_name(bs));
    }
    qemu_mutex_lock(&s->lock);
    s->ssd.drop_pending = false;
    s->ssd.dropping = false;
    qemu_co_queue_restart_all(&s->ssd.drop_wait);
    qemu_mutex_unlock(&s->lock);
}

/* Drop blk's SSD copy in memory (lock held); note the sector to persist. */
void hostcache_ssd_drop_locked(BDRVHostcacheState *s, uint64_t blk,
                               HostcacheSectors *l)
{
    uint64_t sec;

    if (s->opts.mode == HOSTCACHE_MODE_WRITE_BACK && s->ssd.on) {
        /*
         * Journal mode: the entry stays until a journaled newer copy
         * replaces it; the block never reaches the origin from RAM.
         */
        return;
    }

    sec = s->ssd.on ? hc_ssd_invalidate(s->ssd.idx, blk) : HC_SSD_NONE;
    if (sec != HC_SSD_NONE) {
        hostcache_note_sector(l, sec);
        hostcache_pending_add(s, blk, sec);    /* until persisted */
    }
}

/* Engine eviction hook (lock held): queue a clean block for the SSD. */
void hostcache_evicted(void *opaque, uint64_t blk, const void *data)
{
    BlockDriverState *bs = opaque;
    BDRVHostcacheState *s = bs->opaque;
    HostcacheDemotion *d;

    if (!s->ssd.on || s->ssd.ndemotions >= HOSTCACHE_DEMOTE_MAX ||
        hc_ssd_lookup(s->ssd.idx, blk, NULL) != HC_SSD_NONE) {
        return;     /* already there (unchanged since), or too busy */
    }
    d = g_new0(HostcacheDemotion, 1);
    d->buf = qemu_try_memalign(HC_SSD_SECTOR, s->opts.cfg.block_size);
    if (!d->buf) {
        g_free(d);
        return;
    }
    d->blk = blk;
    d->wgen = qatomic_read(&s->origin_wgen);
    memcpy(d->buf, data, s->opts.cfg.block_size);
    hc_op_fill_begin(s->eng, &d->op, blk, blk + 1);
    QSIMPLEQ_INSERT_TAIL(&s->ssd.demotions, d, next);
    s->ssd.ndemotions++;
}

static void hostcache_demotion_free(HostcacheDemotion *d)
{
    qemu_vfree(d->buf);
    g_free(d);
}

/*
 * Write one demoted block to a free (or CLOCK-evicted) SSD slot; note the
 * slot-table sector to persist.
 */
static void coroutine_fn GRAPH_RDLOCK
hostcache_demote(BlockDriverState *bs, HostcacheDemotion *d,
                 HostcacheSectors *secs)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s), slot, victim = HC_SSD_NONE;
    uint32_t crc = 0;
    bool valid;
    int ret = 0;

    qemu_mutex_lock(&s->lock);
    slot = s->ssd.on ? hc_ssd_alloc(s->ssd.idx, &victim) : HC_SSD_NONE;
    if (slot != HC_SSD_NONE && victim != HC_SSD_NONE) {
        /*
         * the victim's entry stays on the device until its sector is
         * written: a write of that block must wait for it (forget)
         */
        hostcache_pending_add(s, victim, hc_ssd_sector_of(slot));
        hostcache_note_sector(secs, hc_ssd_sector_of(slot));
    }
    qemu_mutex_unlock(&s->lock);
    if (slot != HC_SSD_NONE) {
        crc = hc_crc32c(0, d->buf, bsize);
        ret = bdrv_co_pwrite(s->ssd.child, hc_ssd_data_offset(s->ssd.idx, slot),
                             bsize, d->buf, 0);
    }

    qemu_mutex_lock(&s->lock);
    valid = hc_op_end(s->eng, &d->op);
    if (slot != HC_SSD_NONE) {
        if (ret == 0 && valid && s->ssd.on) {
            uint64_t old_sec;

            hostcache_note_sector(secs, hc_ssd_commit(s->ssd.idx, slot,
                                                      d->blk, crc, &old_sec));
            if (old_sec != HC_SSD_NONE) {
                /*
                 * the block's older slot stays valid on the device until
                 * its sector is written, like a CLOCK victim's
                 */
                hostcache_pending_add(s, d->blk, old_sec);
                hostcache_note_sector(secs, old_sec);
            }
            hc_engine_stats(s->eng)->ssd_demotions++;
        } else {
            hc_ssd_release(s->ssd.idx, slot);
            if (ret < 0) {
                hostcache_ssd_fail_locked(bs, ret, "writing a block");
            }
        }
    }
    hostcache_check_locked(s, "a demotion");
    qemu_mutex_unlock(&s->lock);
}

static void coroutine_fn GRAPH_UNLOCKED hostcache_demoter(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVHostcacheState *s = bs->opaque;

    bdrv_graph_co_rdlock();
    for (;;) {
        HostcacheDemotion *batch[HOSTCACHE_DEMOTE_BATCH], *d;
        HostcacheSectors secs = { .n = 0 };
        uint64_t need = 0;
        bool flushed;
        int n = 0;

        qemu_mutex_lock(&s->lock);
        while (n < HOSTCACHE_DEMOTE_BATCH &&
               (d = QSIMPLEQ_FIRST(&s->ssd.demotions))) {
            QSIMPLEQ_REMOVE_HEAD(&s->ssd.demotions, next);
            s->ssd.ndemotions--;
            batch[n++] = d;
        }
        if (!n) {
            s->ssd.demoter_running = false;
            qemu_mutex_unlock(&s->lock);
            break;
        }
        qemu_mutex_unlock(&s->lock);
        for (int i = 0; i < n; i++) {
            need = MAX(need, batch[i]->wgen);
            hostcache_demote(bs, batch[i], &secs);
            hostcache_demotion_free(batch[i]);
        }
        /*
         * A demoted block may come from an origin write not flushed yet:
         * its entry must not outlive that write after a power cut.
         */
        qemu_mutex_lock(&s->lock);
        flushed = s->origin_fgen >= need;
        qemu_mutex_unlock(&s->lock);
        if (flushed || hostcache_origin_flush(bs) == 0) {
            hostcache_ssd_persist_all(bs, &secs);
        }
    }
    bdrv_graph_co_rdunlock();
    bdrv_dec_in_flight(bs);
}

void hostcache_kick_demoter(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    Coroutine *co;

    qemu_mutex_lock(&s->lock);
    if (s->ssd.demoter_running || s->wb.quiesced ||
        QSIMPLEQ_EMPTY(&s->ssd.demotions)) {
        qemu_mutex_unlock(&s->lock);
        return;
    }
    s->ssd.demoter_running = true;
    qemu_mutex_unlock(&s->lock);
    bdrv_inc_in_flight(bs);
    co = qemu_coroutine_create(hostcache_demoter, bs);
    aio_co_enter(bdrv_get_aio_context(bs), co);
}

/* Drop queued demotions (lock held): the SSD tier is going away. */
static void hostcache_demotions_drop(BDRVHostcacheState *s)
{
    HostcacheDemotion *d;

    while ((d = QSIMPLEQ_FIRST(&s->ssd.demotions))) {
        QSIMPLEQ_REMOVE_HEAD(&s->ssd.demotions, next);
        hc_op_end(s->eng, &d->op);
        hostcache_demotion_free(d);
    }
    s->ssd.ndemotions = 0;
}

/*
 * Read block blk from SSD slot (pinned by the caller, with a fill op
 * registered); on success copy the guest's part out and promote the block
 * to RAM.  Returns true if the guest was served.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_read(BlockDriverState *bs, uint64_t blk, uint64_t slot,
                   uint32_t crc, bool dirty, HcOp *op, int64_t pos, int64_t n,
                   QEMUIOVector *qiov, size_t qiov_offset, bool bypass)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    uint8_t *buf = qemu_try_blockalign(s->ssd.child->bs, bsize);
    uint64_t bad_sec = HC_SSD_NONE;
    bool ok = false, valid;
    int ret = -ENOMEM;

    if (buf) {
        ret = bdrv_co_pread(s->ssd.child, hc_ssd_data_offset(s->ssd.idx, slot),
                            bsize, buf, 0);
        ok = ret == 0 && hc_crc32c(0, buf, bsize) == crc;
    }

    qemu_mutex_lock(&s->lock);
    hc_ssd_unpin(s->ssd.idx, slot);
    valid = hc_op_end(s->eng, op);
    if (dirty && !ok) {
        /* the origin does not have this block yet: never read it there */
        hc_engine_stats(s->eng)->ssd_corrupt += ret == 0;
        qemu_mutex_unlock(&s->lock);
        error_report_once("hostcache '%s': block %" PRIu64 " of the SSD "
                          "tier's write-back journal cannot be read (%s)",
                          bdrv_get_node_name(bs), blk,
                          ret == 0 ? "checksum mismatch" : strerror(-ret));
        qemu_vfree(buf);
        return -EIO;
    }
    if (ret < 0 && buf) {
        hostcache_ssd_fail_locked(bs, ret, "reading a block");
    } else if (ret == 0 && !ok) {
        /* torn or corrupted: a miss, never a wrong read */
        hc_engine_stats(s->eng)->ssd_corrupt++;
        if (hc_ssd_lookup(s->ssd.idx, blk, NULL) == slot) {
            bad_sec = hc_ssd_invalidate(s->ssd.idx, blk);
            hostcache_pending_add(s, blk, bad_sec);
        }
    }
    if (ok) {
        HcStats *st = hc_engine_stats(s->eng);
        void *ram = valid && !bypass ? hc_insert(s->eng, blk) : NULL;

        st->ssd_hits++;
        st->ssd_hit_bytes += n;
        if (ram) {
            memcpy(ram, buf, bsize);
        }
    }
    qemu_mutex_unlock(&s->lock);
    if (ok) {
        qemu_iovec_from_buf(qiov, qiov_offset, buf + pos % bsize, n);
        hostcache_kick_demoter(bs);
    }
    if (bad_sec != HC_SSD_NONE) {
        hostcache_ssd_persist(bs, bad_sec);
    }
    qemu_vfree(buf);
    return ok;
}

/*
 * Write the superblock (the copy its new generation selects) and flush the
 * SSD.  With drop, every entry is dropped by moving to a new cache
 * generation.
 */
int GRAPH_RDLOCK
hostcache_ssd_write_super(BlockDriverState *bs, uint32_t state, bool drop)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SB_SIZE);
    HcSsdSuper *sb;
    int ret = 0;

    qemu_mutex_lock(&s->lock);
    sb = hc_ssd_super_mut(s->ssd.idx);
    if (drop) {
        sb->cache_gen++;
        hc_ssd_invalidate_all(s->ssd.idx);
        hostcache_demotions_drop(s);
    }
    sb->lineage = s->t.lineage;     /* whose run this is (migration) */
    sb->tenure = s->t.tenure;
    sb->state = state;
    qemu_mutex_unlock(&s->lock);

    /*
     * A drop writes both copies: falling back to an older copy after the
     * newer one is damaged must not bring back the old cache generation.
     */
    for (int i = 0; i < (drop ? 2 : 1) && ret == 0; i++) {
        uint64_t gen;

        qemu_mutex_lock(&s->lock);
        gen = ++sb->generation;
        hc_ssd_super_encode(sb, buf);
        qemu_mutex_unlock(&s->lock);
        ret = bdrv_pwrite(s->ssd.child, (gen % 2) * HC_SSD_SB_SIZE,
                          HC_SSD_SB_SIZE, buf, 0);
    }
    if (ret == 0) {
        ret = hostcache_ssd_flush(bs);
    }
    qemu_mutex_lock(&s->lock);
    if (ret < 0) {
        hostcache_ssd_fail_locked(bs, ret, "writing the superblock");
    } else if (drop) {
        hc_ssd_pending_clear(s->ssd.idx);       /* all dropped for good */
    }
    qemu_mutex_unlock(&s->lock);
    return ret;
}

/* Format: zero the slot table, then write both superblock copies. */
static int GRAPH_RDLOCK hostcache_ssd_format(BlockDriverState *bs,
                                             HcSsdSuper *sb, Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SB_SIZE);
    int ret;

    ret = bdrv_pwrite_zeroes(s->ssd.child, sb->meta_offset,
                             sb->data_offset - sb->meta_offset, 0);
    for (int i = 0; i < 2 && ret == 0; i++) {
        sb->generation++;
        hc_ssd_super_encode(sb, buf);
        ret = bdrv_pwrite(s->ssd.child, (sb->generation % 2) * HC_SSD_SB_SIZE,
                          HC_SSD_SB_SIZE, buf, 0);
    }
    if (ret == 0) {
        ret = bdrv_flush(s->ssd.child->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "hostcache: cannot format the ssd node");
    }
    return ret;
}

/*
 * Read the slot table of the tier described by sb into a new index.  Dirty
 * entries (the write-back journal) have their data checked now: a torn one
 * written after the last completed flush is dropped (the block's older
 * entry wins); a bad one the superblock says was flushed is lost data, and
 * the open fails.  Returns NULL with errp set on failure.
 */
static HcSsd * GRAPH_RDLOCK hostcache_ssd_load(BlockDriverState *bs,
                                               const HcSsdSuper *sb,
                                               Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = qemu_memalign(HC_SSD_SECTOR, 1 * MiB);
    g_autofree uint8_t *data = qemu_memalign(HC_SSD_SECTOR, sb->block_size);
    uint64_t end = sb->data_offset - sb->meta_offset, lost = 0, top = 0;
    /* damaged dirty entries a completed flush covered: (blk, seq) pairs */
    g_autoptr(GArray) bad = g_array_new(false, false, 2 * sizeof(uint64_t));
    HcSsd *idx = hc_ssd_new(sb);
    int ret;

    if (!idx) {
        error_setg(errp, "hostcache: cannot allocate the SSD tier's index");
        return NULL;
    }
    for (uint64_t off = 0; off < end; off += 1 * MiB) {
        uint64_t len = MIN(1 * MiB, end - off);

        ret = bdrv_pread(s->ssd.child, sb->meta_offset + off, len, buf, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "hostcache: cannot read the SSD "
                             "tier's slot table");
            hc_ssd_free(idx);
            return NULL;
        }
        for (uint64_t i = 0; i < len / HC_SSD_ENTRY_SIZE; i++) {
            uint8_t *e = buf + i * HC_SSD_ENTRY_SIZE;
            uint64_t slot = off / HC_SSD_ENTRY_SIZE + i, blk, seq;
            uint32_t crc;
            bool dirty;

            if (slot >= sb->nslots ||
                !hc_ssd_entry_decode(e, sb->cache_gen, &blk, &seq, &crc,
                                     &dirty)) {
                continue;
            }
            top = MAX(top, seq);
            if (!dirty) {
                continue;   /* clean: checked when read */
            }
            ret = bdrv_pread(s->ssd.child,
                             sb->data_offset + slot * sb->block_size,
                             sb->block_size, data, 0);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "hostcache: cannot read the "
                                 "SSD tier's write-back journal");
                hc_ssd_free(idx);
                return NULL;
            }
            if (hc_crc32c(0, data, sb->block_size) != crc) {
                if (seq <= sb->durable_seq) {
                    /* lost unless a newer entry of blk replaced it */
                    g_array_append_vals(bad, (uint64_t[2]) { blk, seq }, 1);
                }
                memset(e, 0, HC_SSD_ENTRY_SIZE);    /* torn: not loaded */
            }
        }
        for (uint64_t i = 0; i < len / HC_SSD_SECTOR; i++) {
            hc_ssd_load_sector(idx, off / HC_SSD_SECTOR + i,
                               buf + i * HC_SSD_SECTOR);
        }
    }
    hc_ssd_load_done(idx);
    hc_ssd_seq_at_least(idx, top);
    for (guint i = 0; i < bad->len; i++) {
        const uint64_t *b = &g_array_index(bad, uint64_t, 2 * i);
        uint64_t slot = hc_ssd_lookup(idx, b[0], NULL), seq = 0;

        if (slot != HC_SSD_NONE) {
            hc_ssd_slot_blk(idx, slot, &seq, NULL);
        }
        lost += slot == HC_SSD_NONE || seq < b[1];
    }
    if (lost) {
        error_setg(errp, "hostcache: the SSD tier's write-back journal is "
                   "damaged: %" PRIu64 " blocks of origin '%s' written "
                   "before a completed flush fail their checksum, and the "
                   "origin does not have them; nothing was changed (to give "
                   "them up and keep the origin's older data, zero the ssd "
                   "node's first 8 KiB)", lost, sb->origin_id);
        hc_ssd_free(idx);
        return NULL;
    }
    return idx;
}

/*
 * Read the superblock and decide (hc_ssd_plan_open, hc_ssd_plan_loaded)
 * what becomes of the tier: *sb and s->ssd.idx are set for KEEP (the
 * loaded index) and EMPTY; for FORMAT, *sb is the superblock to format.
 */
static HcSsdPlan GRAPH_RDLOCK
hostcache_ssd_plan(BlockDriverState *bs, const HcSsdOpen *o, HcSsdSuper *sb,
                   Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = qemu_memalign(HC_SSD_SECTOR,
                                            2 * HC_SSD_SB_SIZE);
    const char *why = NULL;
    char err[512];
    HcSsdPlan plan;
    int ret;

    ret = o->dev_size < 2 * HC_SSD_SB_SIZE ? -ENOENT :
        bdrv_pread(s->ssd.child, 0, 2 * HC_SSD_SB_SIZE, buf, 0);
    if (ret == 0) {
        ret = hc_ssd_super_pick(buf, buf + HC_SSD_SB_SIZE, sb, err,
                                sizeof(err));
        if (ret == -EINVAL) {
            error_setg(errp, "hostcache: %s", err);
            return HC_SSD_PLAN_REFUSE;
        }
    } else if (ret != -ENOENT) {
        error_setg_errno(errp, -ret, "hostcache: cannot read the ssd node");
        return HC_SSD_PLAN_REFUSE;
    }
    plan = hc_ssd_plan_open(ret, sb, o, &why, err, sizeof(err));
    if (plan == HC_SSD_PLAN_LOAD) {
        s->ssd.idx = hostcache_ssd_load(bs, sb, errp);
        if (!s->ssd.idx) {
            return HC_SSD_PLAN_REFUSE;
        }
        plan = hc_ssd_plan_loaded(sb, why, hc_ssd_dirty_blocks(s->ssd.idx),
                                  hc_ssd_damaged(s->ssd.idx), o, err,
                                  sizeof(err));
        if (plan != HC_SSD_PLAN_REFUSE && hc_ssd_damaged(s->ssd.idx)) {
            warn_report("hostcache: %" PRIu64 " damaged entries in the SSD "
                        "tier's slot table (clean copies: treated as misses)",
                        hc_ssd_damaged(s->ssd.idx));
        }
        if (plan != HC_SSD_PLAN_KEEP) {
            hc_ssd_free(s->ssd.idx);
            s->ssd.idx = NULL;
        }
    }
    if (plan == HC_SSD_PLAN_REFUSE) {
        error_setg(errp, "hostcache: %s", err);
    } else if (plan == HC_SSD_PLAN_FORMAT && why) {
        info_report("hostcache '%s': reformatting the SSD tier, its clean "
                    "content is of no use here: %s", bdrv_get_node_name(bs),
                    why);
    }
    if (plan == HC_SSD_PLAN_FORMAT) {
        uint64_t generation = ret == 0 ? sb->generation : 0;

        *sb = (HcSsdSuper) {
            .version = HC_SSD_VERSION, .block_size = o->block_size,
            .origin_size = o->origin_size, .generation = generation,
            .cache_gen = g_random_int(), .state = HC_SSD_STATE_OPEN,
        };
        pstrcpy(sb->origin_id, sizeof(sb->origin_id), o->origin_id);
        if (hc_ssd_layout(sb, o->dev_size, err, sizeof(err)) < 0) {
            error_setg(errp, "hostcache: %s", err);
            return HC_SSD_PLAN_REFUSE;
        }
    }
    return plan;
}

/* Make what recovery dropped in memory (losing duplicates) durable. */
static int GRAPH_RDLOCK hostcache_ssd_write_dropped(BlockDriverState *bs,
                                                    Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SECTOR);

    for (uint64_t sec = hc_ssd_next_unwritten(s->ssd.idx, 0);
         sec != HC_SSD_NONE; sec = hc_ssd_next_unwritten(s->ssd.idx, sec + 1)) {
        int ret;

        hc_ssd_encode_sector(s->ssd.idx, sec, buf);
        ret = bdrv_pwrite(s->ssd.child, hc_ssd_sector_offset(s->ssd.idx, sec),
                          HC_SSD_SECTOR, buf, BDRV_REQ_FUA);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "hostcache: cannot write the SSD "
                             "tier's slot table");
            return ret;
        }
        hc_ssd_sector_written(s->ssd.idx, sec,
                              hc_ssd_sector_gen(s->ssd.idx, sec));
    }
    return 0;
}

/*
 * Attach the SSD tier: recover it, or format it when blank or when its clean
 * content belongs elsewhere (another origin, block size...).  Marks it in use
 * (state OPEN).  With drop, its content is dropped (pass-through, or the
 * origin may have changed: migration).
 */
int GRAPH_RDLOCK hostcache_ssd_attach(BlockDriverState *bs, bool drop,
                                      bool activation, Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    HcSsdOpen o = {
        .block_size = s->opts.cfg.block_size,
        .origin_id = s->opts.origin_id[0] ? s->opts.origin_id :
                     bs->file->bs->filename,
        .node_name = bdrv_get_node_name(s->ssd.child->bs),
        .ssd_create = s->opts.ssd_create,
        .activation = activation,
        .drop = drop,
        .read_only = bdrv_is_read_only(bs),
    };
    int64_t dev_size = bdrv_getlength(s->ssd.child->bs);
    int64_t origin_size = bdrv_getlength(bs->file->bs);
    HcSsdSuper sb;
    HcSsdPlan plan;
    int ret;

    if (dev_size < 0 || origin_size < 0) {
        error_setg(errp, "hostcache: cannot get the size of the %s node",
                   dev_size < 0 ? "ssd" : "origin");
        return -EIO;
    }
    o.dev_size = dev_size;
    o.origin_size = origin_size;
    if (activation) {
        hostcache_tenure_chain(s, &o);
    }
    plan = hostcache_ssd_plan(bs, &o, &sb, errp);
    if (plan == HC_SSD_PLAN_REFUSE) {
        return -EINVAL;
    }
    if (plan == HC_SSD_PLAN_KEEP && activation) {
        /* back where it was handed off: what later tenures wrote goes */
        hostcache_tenure_drop_written(s, sb.tenure);
    }
    if (plan == HC_SSD_PLAN_FORMAT) {
        ret = hostcache_ssd_format(bs, &sb, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (!s->ssd.idx) {
        /* just formatted, or its content is dropped: empty */
        s->ssd.idx = hc_ssd_new(&sb);
        if (!s->ssd.idx) {
            error_setg(errp, "hostcache: cannot allocate the SSD tier's "
                       "index");
            return -ENOMEM;
        }
        hc_ssd_load_done(s->ssd.idx);
    }
    hc_ssd_super_mut(s->ssd.idx)->version = HC_SSD_VERSION;
    s->ssd.sec_busy = bitmap_new(hc_ssd_sectors(s->ssd.idx));
    if (hostcache_journal_rebuild(s) < 0) {
        error_setg(errp, "hostcache: cannot allocate the SSD tier's journal");
        return -ENOMEM;
    }
    ret = hostcache_ssd_write_dropped(bs, errp);
    if (ret < 0) {
        return ret;
    }
    s->ssd.on = true;
    ret = hostcache_ssd_write_super(bs, HC_SSD_STATE_OPEN, drop);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "hostcache: cannot write the SSD tier's "
                         "superblock");
        return ret;
    }
    s->ssd.on = s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;
    return 0;
}

/* Forget the SSD tier's in-memory state (the device is left as it is). */
void hostcache_ssd_detach(BDRVHostcacheState *s)
{
    hc_journal_clear(s->j.q);
    g_array_set_size(s->j.kept, 0);
    s->ssd.on = false;
    hostcache_demotions_drop(s);
    hc_ssd_free(s->ssd.idx);
    s->ssd.idx = NULL;
    g_free(s->ssd.sec_busy);
    s->ssd.sec_busy = NULL;
}

/*
 * Read path, lock held on entry and on return: serve block blk (the guest
 * wants [pos, min(end of blk, end_off))) from the SSD tier if it is there.
 * Returns 1 with *n set if served; 0 to fall back to the origin; -EIO if
 * the block is dirty there and cannot be read.
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_try_read(BlockDriverState *bs, uint64_t blk, int64_t pos,
                       int64_t end_off, QEMUIOVector *qiov, size_t qiov_offset,
                       bool bypass, int64_t *n)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s), slot, seq;
    uint32_t crc;
    bool dirty;
    int served;
    HcOp op;

    if (!hostcache_ssd_usable(s)) {
        return 0;
    }
    slot = hc_ssd_lookup(s->ssd.idx, blk, &crc);
    if (slot == HC_SSD_NONE) {
        return 0;
    }
    hc_ssd_slot_blk(s->ssd.idx, slot, &seq, NULL);
    dirty = hc_ssd_is_dirty(s->ssd.idx, slot, seq);
    if (!s->ssd.on && !dirty) {
        return 0;
    }
    *n = MIN((int64_t)((blk + 1) * bsize), end_off) - pos;
    hc_ssd_pin(s->ssd.idx, slot);
    hc_op_fill_begin(s->eng, &op, blk, blk + 1);
    qemu_mutex_unlock(&s->lock);
    served = hostcache_ssd_read(bs, blk, slot, crc, dirty, &op, pos, *n,
                                qiov, qiov_offset, bypass);
    qemu_mutex_lock(&s->lock);
    return served;
}
