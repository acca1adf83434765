/*
 * hostcache: the write-back journal on the SSD tier
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * With an SSD tier in write-back mode, dirty blocks are "journaled": each
 * is written to a free SSD slot as a dirty entry with a new sequence
 * number, then the slot-table sectors and the superblock (which records
 * the sequence made durable by the previous flush), then the SSD is
 * flushed.  A guest flush is complete at that point, without waiting for
 * the origin.  The block's older entry (clean or dirty) stays on the device
 * until the new one is durable.  The destager then writes journaled blocks
 * to the origin in journal order, flushes the origin, and turns their
 * entries clean (they stay as cached copies).  A journal recovered at open
 * (hostcache_journal_rebuild) is written back the same way, at once.
 */

#include "qemu/osdep.h"
#include "block/aio_task.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/units.h"
#include "trace.h"
#include "hostcache-int.h"

/* Queue the dirty entries of a recovered tier, oldest first (lock held). */
int hostcache_journal_rebuild(BDRVHostcacheState *s)
{
    return hc_journal_rebuild(s->j.q, s->ssd.idx);
}

void hostcache_journal_free(BDRVHostcacheState *s)
{
    if (s->j.q) {
        hc_journal_free(s->j.q);
        g_array_free(s->j.kept, true);
        g_free(s->j.secs);
        s->j.q = NULL;
        s->j.kept = NULL;
        s->j.secs = NULL;
    }
}

/* Free an older entry of a block (lock held); its sector goes to l. */
static void hostcache_release_kept_locked(BDRVHostcacheState *s,
                                          uint64_t kept, HostcacheSectors *l)
{
    uint64_t blk = hc_ssd_slot_blk(s->ssd.idx, kept, NULL, NULL);
    uint64_t sec = hc_ssd_release_kept(s->ssd.idx, kept);

    hostcache_note_sector(l, sec);
    hostcache_pending_add(s, blk, sec);
}

/*
 * One write of a journal batch: a block's data, a table sector, or the
 * superblock.
 */
typedef struct HostcacheJWrite {
    AioTask task;               /* first: aio_task_co() g_free()s the task */
    BlockDriverState *bs;
    uint64_t off;               /* data or superblock: where */
    uint64_t sec;               /* table sector, or HC_SSD_NONE */
    uint64_t len;
    void *buf;                  /* data or superblock (not freed here) */
} HostcacheJWrite;

static int coroutine_fn GRAPH_RDLOCK hostcache_jwrite_task(AioTask *task)
{
    HostcacheJWrite *t = container_of(task, HostcacheJWrite, task);
    BDRVHostcacheState *s = t->bs->opaque;

    if (t->sec != HC_SSD_NONE) {
        return hostcache_ssd_write_sector(t->bs, t->sec, 0);
    }
    return bdrv_co_pwrite(s->ssd.child, t->off, t->len, t->buf, 0);
}

static void hostcache_jwrite_start(AioTaskPool *pool, BlockDriverState *bs,
                                   uint64_t off, uint64_t sec, uint64_t len,
                                   void *buf)
{
    HostcacheJWrite *t = g_new0(HostcacheJWrite, 1);

    t->task.func = hostcache_jwrite_task;
    t->bs = bs;
    t->off = off;
    t->sec = sec;
    t->len = len;
    t->buf = buf;
    aio_task_pool_start_task(pool, &t->task);
}

/*
 * The superblock's durable seq may lag this much behind (it only tells a
 * torn unflushed write from lost flushed data at recovery).
 */
#define HOSTCACHE_JSUPER_NS     (200 * SCALE_MS)

/*
 * Older entries released after a batch stay on the device until their
 * sectors are written, at most this much later (or when the list is
 * full): recovery prefers the newer entry anyway, and their slots cannot
 * be CLOCK victims, nor the blocks forgotten, before (guard and pending
 * drop).  Guest flushes then do not each carry a random sector write.
 */
#define HOSTCACHE_JRELEASE_NS   (50 * SCALE_MS)

/* The released entries' sectors were written at time now (jlock held). */
static void hostcache_jsecs_written(BDRVHostcacheState *s, int64_t now)
{
    s->j.secs->n = 0;
    s->j.secs->overflow = false;
    s->j.secs_ns = now;
}

/*
 * One journal batch: the entries staged under the lock, written at once
 * outside it, then completed under it again.
 */
typedef struct HostcacheJBatch {
    uint64_t max;               /* capacity of d, slot and buf */
    uint64_t n;                 /* entries staged */
    HcDestage *d;               /* the RAM blocks, as the engine handed them */
    uint64_t *slot;             /* their SSD slots */
    void **buf;                 /* copies of their data (owned) */
    uint64_t top;               /* the newest seq of the batch */
    uint8_t *sb;                /* superblock to write, or NULL (owned) */
    HostcacheSectors secs;      /* table sectors of the new entries */
    bool released;              /* s->j.secs goes out with this batch */
    int64_t now;
} HostcacheJBatch;

/*
 * Stage up to b->max dirty RAM blocks with seq <= max_seq (lock held): an
 * SSD slot each, a copy of the data, a dirty entry committed in memory and
 * queued.  Returns 0, or -ENOSPC / -ENOMEM when it stopped early for lack
 * of a slot or a buffer (what was staged before stays staged).
 */
static int hostcache_journal_stage_locked(BDRVHostcacheState *s,
                                          HostcacheJBatch *b,
                                          uint64_t max_seq)
{
    uint64_t bsize = hostcache_bsize(s);

    while (b->n < b->max && s->ssd.on) {
        uint64_t victim = HC_SSD_NONE, kept, seq, n = b->n;
        const void *data = hc_destage_begin(s->eng, &b->d[n], max_seq);

        if (!data) {
            return 0;
        }
        b->slot[n] = hc_ssd_alloc(s->ssd.idx, &victim);
        if (b->slot[n] == HC_SSD_NONE) {
            hc_destage_end(s->eng, &b->d[n], false);
            return -ENOSPC;
        }
        if (victim != HC_SSD_NONE) {
            hostcache_pending_add(s, victim, hc_ssd_sector_of(b->slot[n]));
        }
        b->buf[n] = qemu_try_blockalign(s->ssd.child->bs, bsize);
        if (!b->buf[n]) {
            hc_ssd_release(s->ssd.idx, b->slot[n]);
            hc_destage_end(s->eng, &b->d[n], false);
            return -ENOMEM;
        }
        memcpy(b->buf[n], data, bsize);
        seq = b->top = hc_ssd_next_seq(s->ssd.idx);
        hostcache_note_sector(&b->secs,
                              hc_ssd_commit_dirty(s->ssd.idx, b->slot[n],
                                                  b->d[n].blk, seq,
                                                  hc_crc32c(0, b->buf[n], bsize),
                                                  &kept));
        if (kept != HC_SSD_NONE) {
            g_array_append_val(s->j.kept, kept);
        }
        hc_journal_append(s->j.q, b->slot[n], seq, b->now);   /* (reserved) */
        b->n++;
    }
    return 0;
}

/*
 * Write a staged batch (no lock): data, table sectors, the released
 * entries' sectors and the superblock all at once, then one SSD flush.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_journal_write(BlockDriverState *bs, HostcacheJBatch *b)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s), i;
    AioTaskPool *pool = aio_task_pool_new(HOSTCACHE_FLUSH_WIDTH * 2);
    int ret;

    for (i = 0; i < b->n; i++) {
        hostcache_jwrite_start(pool, bs,
                               hc_ssd_data_offset(s->ssd.idx, b->slot[i]),
                               HC_SSD_NONE, bsize, b->buf[i]);
    }
    for (i = 0; i < (uint64_t)b->secs.n; i++) {
        hostcache_jwrite_start(pool, bs, 0, b->secs.sec[i], 0, NULL);
    }
    for (i = 0; b->released && i < (uint64_t)s->j.secs->n; i++) {
        hostcache_jwrite_start(pool, bs, 0, s->j.secs->sec[i], 0, NULL);
    }
    if (b->sb) {
        hostcache_jwrite_start(pool, bs, s->j.super_off, HC_SSD_NONE,
                               HC_SSD_SB_SIZE, b->sb);
    }
    aio_task_pool_wait_all(pool);
    ret = aio_task_pool_status(pool);
    aio_task_pool_free(pool);
    if (ret == 0 && b->secs.overflow) {
        ret = hostcache_ssd_write_sectors(bs, &b->secs, 0);
    }
    if (ret == 0 && b->released && s->j.secs->overflow) {
        ret = hostcache_ssd_write_sectors(bs, s->j.secs, 0);
    }
    if (ret == 0 && b->released) {
        hostcache_jsecs_written(s, b->now);
    }
    if (ret == 0) {
        ret = hostcache_ssd_flush(bs);
    }
    return ret;
}

/*
 * Complete a written batch (lock held): the RAM blocks turn clean (or,
 * after an error, their new entries go and the tier fails), and older
 * entries kept for the batch are released.
 */
static void hostcache_journal_finish_locked(BlockDriverState *bs,
                                            HostcacheJBatch *b, int ret)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t i;

    for (i = 0; i < b->n; i++) {
        hc_destage_end(s->eng, &b->d[i], ret == 0);
        if (ret < 0 &&
            hc_ssd_lookup(s->ssd.idx, b->d[i].blk, NULL) == b->slot[i]) {
            hc_ssd_invalidate(s->ssd.idx, b->d[i].blk);   /* RAM has it */
        }
        qemu_vfree(b->buf[i]);
    }
    if (ret < 0) {
        hostcache_ssd_fail_locked(bs, ret, "writing the journal");
    } else {
        /* Durable now: a later superblock says so; older copies go. */
        hc_ssd_super_mut(s->ssd.idx)->durable_seq = b->top;
    }
    for (i = 0; i < s->j.kept->len; i++) {
        uint64_t kept = g_array_index(s->j.kept, uint64_t, i);
        bool dirty;

        /* (the destager may have released a dirty one meanwhile) */
        if (hc_ssd_is_kept(s->ssd.idx, kept, &dirty) && !dirty) {
            hostcache_release_kept_locked(s, kept, s->j.secs);
        }
        /*
         * An older version not yet on the origin stays until the destager
         * has written it, in journal order: the origin goes through every
         * flush epoch, so by itself it is always a point in time.
         */
    }
    g_array_set_size(s->j.kept, 0);
}

/*
 * Journal up to limit dirty RAM blocks with seq <= max_seq, oldest first,
 * and make them durable (jlock held).  The entries are committed in memory
 * first, so data, slot-table sectors and (now and then) the superblock are
 * all written at once, then the SSD is flushed once: an entry that reaches
 * the device without its data fails its data CRC at recovery and, written
 * after the last completed flush, is ignored.  The blocks stay dirty in RAM
 * (so reads never reach the slots early) until the flush is done.
 * Returns the number journaled, -ENOSPC when no SSD slot is free of dirty
 * data, or another error.
 */
static int64_t coroutine_fn GRAPH_RDLOCK
hostcache_journal_some(BlockDriverState *bs, uint64_t max_seq, uint64_t limit)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t max = MAX(MIN(MIN(limit, 256), 16 * MiB / hostcache_bsize(s)), 1);
    g_autofree HcDestage *d = g_new0(HcDestage, max);
    g_autofree uint64_t *slot = g_new(uint64_t, max);
    g_autofree void **buf = g_new0(void *, max);
    g_autofree uint8_t *sb = NULL;
    HostcacheJBatch b = {
        .max = max, .d = d, .slot = slot, .buf = buf, .now = get_clock(),
    };
    int ret;

    qemu_mutex_lock(&s->lock);
    if (hc_journal_reserve(s->j.q, max) < 0) {
        qemu_mutex_unlock(&s->lock);
        return -ENOMEM;
    }
    /* the destager must not pass entries whose data is still in flight */
    hc_journal_batch_begin(s->j.q);
    ret = hostcache_journal_stage_locked(s, &b, max_seq);
    if (!b.n) {
        /*
         * Nothing started (and nothing yielded since busy was set): no
         * progress to announce.  Announcing it would wake the caller's
         * own wait at once, and a loop that finds nothing to do would
         * spin without ever yielding.
         */
        hc_journal_batch_end(s->j.q);
        qemu_mutex_unlock(&s->lock);
        return ret;
    }
    if (b.now - s->j.super_ns >= HOSTCACHE_JSUPER_NS) {
        uint64_t gen = ++hc_ssd_super_mut(s->ssd.idx)->generation;

        b.sb = sb = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SB_SIZE);
        hc_ssd_super_encode(hc_ssd_super(s->ssd.idx), sb);
        s->j.super_ns = b.now;
        s->j.super_off = (gen % 2) * HC_SSD_SB_SIZE;
    }
    b.released = s->j.secs->overflow ||
        (s->j.secs->n && b.now - s->j.secs_ns >= HOSTCACHE_JRELEASE_NS);
    qemu_mutex_unlock(&s->lock);

    ret = hostcache_journal_write(bs, &b);

    qemu_mutex_lock(&s->lock);
    hostcache_journal_finish_locked(bs, &b, ret);
    hc_journal_batch_end(s->j.q);
    hostcache_check_locked(s, "a journal batch");
    hostcache_progress_locked(s);
    qemu_mutex_unlock(&s->lock);
    return ret < 0 ? ret : (int64_t)b.n;
}

/*
 * Journal every dirty block with seq <= upto (at most limit blocks when
 * limit is not UINT64_MAX) and flush the SSD; with flush, also flush the
 * origin if direct writes reached it since its last flush.  This is a
 * guest flush in journal mode.
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_journal(BlockDriverState *bs, uint64_t upto, uint64_t limit,
                  bool flush)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t done = 0;
    bool pending, origin;
    int ret = 0;

    qemu_co_mutex_lock(&s->j.lock);
    for (;;) {
        uint64_t mark = hostcache_progress_mark(s);
        int64_t n = hostcache_journal_some(bs, upto, MIN(limit - done, 256));

        if (n == -ENOSPC) {
            /*
             * Every slot dirty or guarded: the released older entries go to
             * the device (clearing the guards), and the origin takes some
             * of the journal, so that its slots can be reused.
             */
            n = hostcache_ssd_write_sectors(bs, s->j.secs, 0);
            hostcache_jsecs_written(s, get_clock());
            if (n == 0) {
                n = hostcache_ssd_flush(bs);
            }
            if (n == 0) {
                n = hostcache_jdestage_some(bs, 64, NULL);
            }
            if (n == 0) {
                /*
                 * Every slot dirty, pinned or guarded, and nothing of the
                 * journal could go to the origin: a timed retry, as a
                 * guard clears when a sector becomes durable, which no
                 * completion announces.  Rare: the tier is full of
                 * journal.
                 */
                qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, SCALE_MS);
                continue;
            }
        } else if (n > 0) {
            done += n;
        }
        if (n < 0) {
            ret = n;
            break;
        }
        qemu_mutex_lock(&s->lock);
        pending = s->ssd.on && hc_dirty_pending_upto(s->eng, upto);
        qemu_mutex_unlock(&s->lock);
        if (!pending || done >= limit) {
            break;
        }
        if (n == 0) {
            /* in flight elsewhere, or behind a direct request */
            hostcache_progress_wait(s, mark);
        }
    }
    origin = flush && qatomic_read(&s->origin_wgen) !=
        qatomic_read(&s->origin_fgen);
    if (ret == 0 && origin) {
        ret = hostcache_origin_flush(bs);
    }
    qemu_co_mutex_unlock(&s->j.lock);
    trace_hostcache_flush(bs, upto, ret);
    if (done) {
        hostcache_kick_destager(bs);    /* the journal goes to the origin */
    }
    return ret;
}

typedef struct HostcacheJDestageTask {
    AioTask task;               /* first: aio_task_co() g_free()s the task */
    BlockDriverState *bs;
    HcJEntry e;
    bool ok;
} HostcacheJDestageTask;

/* Destage one journaled block: SSD -> origin (the slot is pinned). */
static int coroutine_fn GRAPH_RDLOCK
hostcache_jdestage_task(AioTask *task)
{
    HostcacheJDestageTask *t = container_of(task, HostcacheJDestageTask,
                                            task);
    BDRVHostcacheState *s = t->bs->opaque;
    uint64_t bsize = hostcache_bsize(s), blk;
    uint8_t *buf = qemu_blockalign(t->bs->file->bs, bsize);
    const void *ram;
    uint32_t crc;
    bool ok;
    int64_t start;
    uint64_t ns;
    int ret;

    qemu_mutex_lock(&s->lock);
    blk = hc_ssd_slot_blk(s->ssd.idx, t->e.slot, NULL, &crc);
    /*
     * The newest version whose block is clean in RAM: RAM holds the same
     * data (journaled from there, or promoted from this slot); no read.
     */
    ram = !hc_ssd_is_kept(s->ssd.idx, t->e.slot, NULL) &&
        !hc_is_dirty(s->eng, blk) ? hc_lookup(s->eng, blk, false) : NULL;
    if (ram) {
        memcpy(buf, ram, bsize);
    }
    qemu_mutex_unlock(&s->lock);
    ret = 0;
    ok = ram && hc_crc32c(0, buf, bsize) == crc;
    if (!ok) {
        ret = bdrv_co_pread(s->ssd.child,
                            hc_ssd_data_offset(s->ssd.idx, t->e.slot),
                            bsize, buf, 0);
        ok = ret == 0 && hc_crc32c(0, buf, bsize) == crc;
    }
    if (ret == 0 && !ok) {
        qemu_mutex_lock(&s->lock);
        hc_engine_stats(s->eng)->ssd_corrupt++;
        qemu_mutex_unlock(&s->lock);
        error_report_once("hostcache '%s': block %" PRIu64 " of the SSD "
                          "tier's write-back journal fails its checksum; it "
                          "is not written to the origin (reads of it fail)",
                          bdrv_get_node_name(t->bs), blk);
        ret = -EIO;
    } else if (ret < 0) {
        qemu_mutex_lock(&s->lock);
        hostcache_ssd_fail_locked(t->bs, ret, "reading the journal");
        qemu_mutex_unlock(&s->lock);
    }
    if (ret == 0) {
        start = get_clock();
        /*
         * Not counted in origin_wgen: this batch flushes the origin itself
         * before anything depends on the write (a guest flush need not).
         */
        ret = bdrv_co_pwrite(t->bs->file, blk * bsize, bsize, buf, 0);
        ns = get_clock() - start;
        qemu_mutex_lock(&s->lock);
        if (ret < 0) {
            hc_engine_stats(s->eng)->origin_errors++;
            hc_engine_stats(s->eng)->destage_errors++;
        } else {
            hostcache_mig_drained_locked(s, bsize);
        }
        hostcache_pace_locked(s, ret, ns);
        qemu_mutex_unlock(&s->lock);
    }
    t->ok = ret == 0;
    trace_hostcache_destage(t->bs, blk, ret);
    qemu_vfree(buf);
    return ret;
}

/*
 * Write up to limit journaled blocks to the origin, oldest first, flush
 * the origin, then mark their entries clean.  Returns the number done or
 * the first error (then nothing of this batch is marked clean: it is
 * written again later).  When stop (if given) becomes true, no more
 * writes start: the batch fails (-EIO), as if the origin had.
 */
int64_t coroutine_fn GRAPH_RDLOCK
hostcache_jdestage_some(BlockDriverState *bs, uint64_t limit,
                        const int *stop)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree HcJEntry *batch = NULL;
    HostcacheSectors secs = { .n = 0 };
    AioTaskPool *pool;
    size_t i, next;
    uint64_t n;
    int ret;

    qemu_co_mutex_lock(&s->j.dlock);
    qemu_mutex_lock(&s->lock);
    /* oldest first, never two versions of a block (hc_journal_pick) */
    batch = g_new(HcJEntry, MIN(limit, hc_journal_len(s->j.q) + 1));
    n = hc_journal_pick(s->j.q, s->ssd.idx, batch, limit, &next);
    pool = aio_task_pool_new(MAX(s->wb.width, 1));
    qemu_mutex_unlock(&s->lock);

    for (i = 0; i < n && aio_task_pool_status(pool) == 0; i++) {
        HostcacheJDestageTask *t;

        aio_task_pool_wait_slot(pool);
        if (stop && qatomic_read(stop)) {
            break;
        }
        t = g_new0(HostcacheJDestageTask, 1);
        t->bs = bs;
        t->task.func = hostcache_jdestage_task;
        t->e = batch[i];
        aio_task_pool_start_task(pool, &t->task);
    }
    aio_task_pool_wait_all(pool);
    ret = aio_task_pool_status(pool);
    aio_task_pool_free(pool);
    if (ret == 0 && i < n) {
        ret = -EIO;
    }
    if (ret == 0 && n) {
        ret = hostcache_origin_flush(bs);
        if (ret < 0) {
            qemu_mutex_lock(&s->lock);
            hc_engine_stats(s->eng)->origin_errors++;
            qemu_mutex_unlock(&s->lock);
        }
    }

    qemu_mutex_lock(&s->lock);
    for (i = 0; i < n; i++) {
        hc_ssd_unpin(s->ssd.idx, batch[i].slot);
        if (ret == 0) {
            uint64_t sec = hc_ssd_mark_clean(s->ssd.idx, batch[i].slot,
                                             batch[i].seq);

            if (sec != HC_SSD_NONE) {
                hostcache_note_sector(&secs, sec);
            } else if (hc_ssd_is_kept(s->ssd.idx, batch[i].slot, NULL) &&
                       hc_ssd_is_dirty(s->ssd.idx, batch[i].slot,
                                       batch[i].seq)) {
                /* an older version, now on the origin: free it */
                hostcache_release_kept_locked(s, batch[i].slot, &secs);
            }
            hc_engine_stats(s->eng)->destaged++;
        }
    }
    if (ret == 0) {
        hc_journal_advance(s->j.q, next);
    }
    hostcache_check_locked(s, "a destage batch");
    if (n) {
        hostcache_progress_locked(s);   /* (not for an empty batch) */
    }
    qemu_mutex_unlock(&s->lock);
    /*
     * Losing a clean mark costs a second write of the same data: no FUA.
     * The slots may be reused (CLOCK) once a flush covers the marks: the
     * journal's next one, or, when journaling is idle, one here (not more
     * often than every 100 ms: guest flushes wait behind SSD flushes).
     */
    if (ret == 0 && secs.n && hostcache_ssd_write_sectors(bs, &secs, 0) == 0 &&
        get_clock() - qatomic_read(&s->ssd.flush_ns) > 100 * SCALE_MS) {
        hostcache_ssd_flush(bs);
    }
    qemu_co_mutex_unlock(&s->j.dlock);
    return ret < 0 ? ret : (int64_t)n;
}

/*
 * Everything dirty (RAM and SSD) to the origin, and the origin flushed:
 * before a direct request over dirty data, leaving write-back, closing,
 * inactivating.
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_journal_sync(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    bool journaling;
    uint64_t left;
    int64_t n;
    int ret = 0;

    qemu_mutex_lock(&s->lock);
    journaling = s->ssd.on && hc_dirty_blocks(s->eng);
    qemu_mutex_unlock(&s->lock);
    if (journaling) {
        ret = hostcache_journal(bs, UINT64_MAX, UINT64_MAX, false);
        if (ret < 0) {
            return ret;
        }
    }
    for (;;) {
        uint64_t mark;

        qemu_mutex_lock(&s->lock);
        left = hostcache_ssd_dirty(s);
        mark = s->progress_gen;
        qemu_mutex_unlock(&s->lock);
        if (!left) {
            return 0;
        }
        n = hostcache_jdestage_some(bs, 256, NULL);
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            /* the rest is behind a journal batch in flight */
            hostcache_progress_wait(s, mark);
        }
    }
}
