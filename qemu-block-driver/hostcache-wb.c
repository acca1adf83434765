/*
 * hostcache: write-back to the origin
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * Written blocks become dirty in the engine and a background "destager"
 * coroutine writes them to the origin in write-completion order (or, with
 * the SSD tier on, to the journal first: hostcache-journal.c).  It runs
 * only while dirty data exists and the node is not drained; it holds the
 * graph reader lock and counts as in flight, and drain_begin wakes it so
 * it stops after the writes it has in flight.  Everything that must not
 * wait for it (a guest flush, a writer over max-dirty, a discard over
 * dirty blocks) writes back by itself, in its own request.
 *
 * hostcache_destage_some() writes queued dirty blocks to the origin,
 * oldest first, a few at a time: the destager calls it when dirty data
 * passes half of max-dirty or gets older than max-dirty-age-ms, a flush
 * for everything written before the flush, a writer over max-dirty to
 * make room.
 */

#include "qemu/osdep.h"
#include "block/aio_task.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qemu/memalign.h"
#include "trace.h"
#include "hostcache-int.h"

/* Flush the origin; on success every origin write before it is durable. */
int coroutine_fn GRAPH_RDLOCK hostcache_origin_flush(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t gen = qatomic_read(&s->origin_wgen);
    int ret = bdrv_co_flush(bs->file->bs);

    if (ret == 0) {
        qemu_mutex_lock(&s->lock);
        s->origin_fgen = MAX(s->origin_fgen, gen);
        qemu_mutex_unlock(&s->lock);
    }
    return ret;
}

typedef struct HostcacheDestageTask {
    AioTask task;               /* first: aio_task_co() g_free()s the task */
    BlockDriverState *bs;
    HcDestage d;
    void *buf;
} HostcacheDestageTask;

/*
 * Pace destaging by the origin's latency (AIMD, lock held): widen while
 * destage writes stay near the fastest seen, halve when they slow down, so
 * the guest's own requests to the origin keep their latency.
 */
void hostcache_pace_locked(BDRVHostcacheState *s, int ret, uint64_t ns)
{
    if (ret == 0 && (!s->wb.lat_floor || ns < s->wb.lat_floor)) {
        s->wb.lat_floor = ns;
    }
    if (ret == 0 && ns <= s->wb.lat_floor * 3 / 2 + 50 * SCALE_US) {
        s->wb.width = MIN(s->wb.width + 1,
                               HOSTCACHE_DESTAGE_WIDTH_MAX);
    } else {
        s->wb.width = MAX(s->wb.width / 2, 1);
    }
}

static int coroutine_fn GRAPH_RDLOCK
hostcache_destage_task(AioTask *task)
{
    HostcacheDestageTask *t = container_of(task, HostcacheDestageTask, task);
    BDRVHostcacheState *s = t->bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    int64_t start;
    uint64_t ns;
    int ret;

    /*
     * The SSD's old copy must be gone for good before the origin changes
     * (the write that made the block dirty dropped it in memory only).
     */
    hostcache_ssd_forget(t->bs, t->d.blk, t->d.blk + 1);
    start = get_clock();
    ret = bdrv_co_pwrite(t->bs->file, t->d.blk * bsize, bsize, t->buf, 0);
    ns = get_clock() - start;
    if (ret == 0) {
        qatomic_inc(&s->origin_wgen);
    }

    qemu_mutex_lock(&s->lock);
    hc_destage_end(s->eng, &t->d, ret == 0);
    if (ret < 0) {
        hc_engine_stats(s->eng)->origin_errors++;
        hc_engine_stats(s->eng)->destage_errors++;
    } else {
        hc_engine_stats(s->eng)->destaged++;
        hostcache_mig_drained_locked(s, bsize);
    }
    hostcache_pace_locked(s, ret, ns);
    hostcache_progress_locked(s);
    qemu_mutex_unlock(&s->lock);

    trace_hostcache_destage(t->bs, t->d.blk, ret);
    qemu_vfree(t->buf);
    return ret;
}

/*
 * Write back queued blocks with seq <= max_seq (or, with end > 0, the dirty
 * blocks in [first, end)), width at a time, until none can start or limit
 * were started.  Returns the number started or the first error.  Stops
 * early when stop (if given) becomes true.
 */
/*
 * Next destage for hostcache_destage_some (lock held): the queue's head, or
 * with a range (end > 0) the next dirty block in [*cursor, end).
 */
static const void *hostcache_destage_pick(BDRVHostcacheState *s,
                                          HcDestage *d, uint64_t max_seq,
                                          uint64_t *cursor, uint64_t end)
{
    if (!end) {
        return hc_destage_begin(s->eng, d, max_seq);
    }
    for (;;) {
        uint64_t b = hc_dirty_find(s->eng, *cursor, end);
        const void *data;

        if (b == UINT64_MAX) {
            return NULL;
        }
        *cursor = b + 1;
        data = hc_destage_begin_blk(s->eng, d, b);
        if (data) {
            return data;
        }
    }
}

static int64_t coroutine_fn GRAPH_RDLOCK
hostcache_destage_some(BlockDriverState *bs, uint64_t max_seq, int width,
                       uint64_t limit, const int *stop, uint64_t first,
                       uint64_t end)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    AioTaskPool *pool;
    uint64_t cursor = first;
    int64_t started = 0;
    int ret;

    qemu_mutex_lock(&s->lock);
    ret = !hostcache_journaling(s) && hostcache_ssd_dirty(s);
    qemu_mutex_unlock(&s->lock);
    if (ret) {
        /*
         * The SSD tier stopped journaling (error, mode change) with
         * journaled blocks left: they are older than RAM's and go first.
         */
        ret = hostcache_journal_sync(bs);
        if (ret < 0) {
            return ret;
        }
    }
    pool = aio_task_pool_new(width);

    while (started < limit && aio_task_pool_status(pool) == 0) {
        HostcacheDestageTask *t;
        const void *data;

        /* (a stop seen while waiting for a slot starts nothing more) */
        aio_task_pool_wait_slot(pool);
        if (stop && (qatomic_read(stop) || qatomic_read(&s->wb.interrupt))) {
            break;
        }
        t = g_new0(HostcacheDestageTask, 1);
        t->bs = bs;
        t->task.func = hostcache_destage_task;
        t->buf = qemu_blockalign(bs->file->bs, bsize);
        qemu_mutex_lock(&s->lock);
        data = hostcache_destage_pick(s, &t->d, max_seq, &cursor, end);
        if (data) {
            memcpy(t->buf, data, bsize);
        }
        qemu_mutex_unlock(&s->lock);
        if (!data) {
            qemu_vfree(t->buf);
            g_free(t);
            break;
        }
        aio_task_pool_start_task(pool, &t->task);
        started++;
    }
    aio_task_pool_wait_all(pool);
    ret = aio_task_pool_status(pool);
    aio_task_pool_free(pool);
    return ret < 0 ? ret : started;
}

/*
 * Everything written before now reaches the origin, then the origin is
 * flushed.  Blocks another destage has in flight are waited for.
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_wb_flush(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t upto;
    bool pending;
    int64_t n;
    int ret = 0;

    qemu_mutex_lock(&s->lock);
    upto = hc_write_seq(s->eng);
    qemu_mutex_unlock(&s->lock);

    for (;;) {
        uint64_t mark = hostcache_progress_mark(s);

        n = hostcache_destage_some(bs, upto, HOSTCACHE_FLUSH_WIDTH,
                                   UINT64_MAX, NULL, 0, 0);
        if (n < 0) {
            ret = n;
            break;
        }
        qemu_mutex_lock(&s->lock);
        pending = hc_dirty_pending_upto(s->eng, upto);
        qemu_mutex_unlock(&s->lock);
        if (!pending) {
            break;
        }
        if (n == 0) {
            /* In flight elsewhere, or behind a discard: let it finish. */
            hostcache_progress_wait(s, mark);
        }
    }
    if (ret == 0) {
        ret = hostcache_origin_flush(bs);
    }
    trace_hostcache_flush(bs, upto, ret);
    return ret;
}

static void coroutine_fn GRAPH_UNLOCKED hostcache_destager(void *opaque);

/* Start the background destager unless it runs or the node is drained. */
void hostcache_kick_destager(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    Coroutine *co;

    qemu_mutex_lock(&s->lock);
    if (!s->eng || s->wb.destager_running || s->wb.quiesced ||
        ((s->opts.mode != HOSTCACHE_MODE_WRITE_BACK ||
          !hc_dirty_blocks(s->eng)) && !hostcache_ssd_dirty(s))) {
        qemu_mutex_unlock(&s->lock);
        return;
    }
    s->wb.destager_running = true;
    qemu_mutex_unlock(&s->lock);

    bdrv_inc_in_flight(bs);
    co = qemu_coroutine_create(hostcache_destager, bs);
    aio_co_enter(bdrv_get_aio_context(bs), co);
}

/*
 * The background destager.  Exits when nothing is dirty, the mode is no
 * longer write-back, or a drain begins (drain_begin wakes it).
 *
 * Its waits are timed sleeps on purpose: most wait for time itself (the
 * oldest dirty data to reach max-dirty-age-ms), after an error it backs
 * off, and when nothing could start it must still notice a drain
 * beginning and conditions no completion signals (a journal left by a
 * tier switched off), so it does not wait in the progress queue as
 * requests do.  The sleeps are wakeable and bounded (see wake_destager).
 */
/* What one round of the destager finds (taken under the lock). */
typedef struct HostcacheDestagerRound {
    uint64_t now;
    uint64_t oldest;            /* RAM's oldest dirty block, when have */
    uint64_t dirty;             /* RAM's dirty blocks */
    uint64_t ssd_dirty;         /* journaled blocks not yet on the origin */
    int64_t jold;               /* the journal's oldest entry */
    bool have;                  /* RAM has dirty blocks */
    bool due;                   /* RAM's dirty data must go now */
    bool jdue;                  /* the journal must go to the origin now */
    bool journaling;            /* RAM's dirty data goes to the journal */
    int width;                  /* origin writes in flight */
} HostcacheDestagerRound;

/*
 * Look at the node for one round; false (and the destager marked stopped)
 * when it has nothing left to do.
 */
static bool hostcache_destager_look(BDRVHostcacheState *s,
                                    HostcacheDestagerRound *r)
{
    uint64_t dirty_bytes;
    bool drain;

    r->now = get_clock();
    r->oldest = 0;
    r->jold = r->now;
    qemu_mutex_lock(&s->lock);
    qatomic_set(&s->wb.interrupt, 0);
    r->ssd_dirty = hostcache_ssd_dirty(s);
    if (s->wb.quiesced ||
        ((s->opts.mode != HOSTCACHE_MODE_WRITE_BACK ||
          !hc_dirty_blocks(s->eng)) && !r->ssd_dirty)) {
        s->wb.destager_running = false;
        qemu_mutex_unlock(&s->lock);
        return false;
    }
    r->dirty = hc_dirty_blocks(s->eng);
    dirty_bytes = r->dirty * hostcache_bsize(s);
    r->have = hc_dirty_oldest(s->eng, &r->oldest);
    /* an outgoing migration's pre-copy: everything is due, now */
    drain = s->mig_out.drain;
    r->due = dirty_bytes > hostcache_max_dirty(s) / 2 || (drain && r->have) ||
        (r->have && r->now - r->oldest >= s->opts.dirty_age_ns);
    r->width = drain ? HOSTCACHE_DESTAGE_WIDTH_MAX : s->wb.width;
    r->journaling = hostcache_journaling(s);
    r->jdue = r->ssd_dirty &&
        (drain || hc_journal_due(s->j.q, r->now, s->opts.dirty_age_ns,
                                 r->ssd_dirty, hc_ssd_capacity(s->ssd.idx),
                                 &r->jold));
    qemu_mutex_unlock(&s->lock);
    if (r->journaling && drain && r->ssd_dirty) {
        /* the journal first: it holds older versions than RAM's */
        r->due = false;
    }
    return true;
}

/* A wait of the destager: at least 1 ns (it yields), at most 100 ms. */
static uint64_t hostcache_destager_wait(uint64_t ns)
{
    return MAX(MIN(ns, 100 * SCALE_MS), 1);
}

/*
 * One round of work as r says; returns how long to sleep before the next
 * (0: none).
 */
static uint64_t coroutine_fn GRAPH_UNLOCKED
hostcache_destager_round(BlockDriverState *bs, HostcacheDestagerRound *r)
{
    BDRVHostcacheState *s = bs->opaque;
    int64_t n;

    if (r->journaling && (r->due || r->ssd_dirty)) {
        /*
         * Old or too much dirty data in RAM goes to the journal; the
         * journal goes to the origin when it is old or large (not
         * continuously: its SSD work would slow the guest's flushes),
         * paced by the origin's latency.
         */
        if (!r->due && !r->jdue) {
            return hostcache_destager_wait(r->jold + s->opts.dirty_age_ns -
                                           r->now);
        }
        bdrv_graph_co_rdlock();
        n = r->due ? hostcache_journal(bs, UINT64_MAX, 64, false) :
            hostcache_jdestage_some(bs, 4 * r->width, &s->wb.interrupt);
        bdrv_graph_co_rdunlock();
        return n > 0 ? 0 : n < 0 ? 100 * SCALE_MS : SCALE_MS;
    }
    if (!r->due && !r->dirty) {
        /* journaled blocks left, but the tier is off: origin first */
        r->due = true;
    }
    if (!r->due) {
        return hostcache_destager_wait(r->have ? r->oldest +
                                       s->opts.dirty_age_ns - r->now :
                                       s->opts.dirty_age_ns);
    }
    bdrv_graph_co_rdlock();
    n = hostcache_destage_some(bs, UINT64_MAX, r->width, 4 * r->width,
                               &s->wb.quiesced, 0, 0);
    bdrv_graph_co_rdunlock();
    /* error (retry later) or nothing could start (in flight) */
    return n > 0 ? 0 : n < 0 ? 100 * SCALE_MS : SCALE_MS;
}

static void coroutine_fn GRAPH_UNLOCKED hostcache_destager(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVHostcacheState *s = bs->opaque;
    HostcacheDestagerRound r;

    while (hostcache_destager_look(s, &r)) {
        uint64_t sleep_ns = hostcache_destager_round(bs, &r);

        if (sleep_ns) {
            qemu_co_sleep_ns_wakeable(&s->wb.destager_sleep,
                                      QEMU_CLOCK_REALTIME, sleep_ns);
        }
    }
    bdrv_dec_in_flight(bs);
}

/*
 * Wake an idle destager early.  qemu_co_sleep_wake() is not safe against a
 * coroutine going to sleep in another thread, so from other threads rely on
 * the destager's bounded sleep (at most 100 ms) instead.
 */
void hostcache_wake_destager(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    if (qemu_get_current_aio_context() == bdrv_get_aio_context(bs)) {
        qemu_co_sleep_wake(&s->wb.destager_sleep);
    }
}

void hostcache_drain_begin(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    qatomic_set(&s->wb.quiesced, s->wb.quiesced + 1);
    qemu_mutex_unlock(&s->lock);
    hostcache_wake_destager(bs);
}

void hostcache_drain_end(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    qatomic_set(&s->wb.quiesced, s->wb.quiesced - 1);
    qemu_mutex_unlock(&s->lock);
    hostcache_kick_destager(bs);
    hostcache_kick_demoter(bs);
    hostcache_kick_warm_up(bs);
}

/*
 * Before a request that goes to the origin directly (discard, write-zeroes,
 * a write that bypasses the cache) in write-back mode: write back the dirty
 * blocks it overlaps (only those, out of queue order), then bracket it with
 * hc_op_write_begin() in the same critical section, so no older dirty copy
 * can later overwrite it.
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_wb_begin_direct(BlockDriverState *bs, HcOp *op, uint64_t first,
                          uint64_t end)
{
    BDRVHostcacheState *s = bs->opaque;

    for (;;) {
        uint64_t mark = hostcache_progress_mark(s);
        bool ssd_dirty;
        int64_t n;

        qemu_mutex_lock(&s->lock);
        ssd_dirty = hostcache_ssd_dirty(s) &&
            hc_ssd_dirty_in_range(s->ssd.idx, first, end);
        if (!ssd_dirty && hc_dirty_find(s->eng, first, end) == UINT64_MAX) {
            hc_op_write_begin(s->eng, op, first, end);
            hostcache_modified_locked(s, first, end);
            qemu_mutex_unlock(&s->lock);
            return 0;
        }
        if (ssd_dirty) {
            /*
             * Journaled blocks in the range: the journal reaches the
             * origin first (in its order), then this request.
             */
            qemu_mutex_unlock(&s->lock);
            n = hostcache_journal_sync(bs);
            if (n < 0) {
                return n;
            }
            continue;
        }
        qemu_mutex_unlock(&s->lock);
        n = hostcache_destage_some(bs, UINT64_MAX, HOSTCACHE_FLUSH_WIDTH,
                                   UINT64_MAX, NULL, first, end);
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            /* in flight elsewhere, or behind another direct request */
            hostcache_progress_wait(s, mark);
        }
    }
}

/* A writer over max-dirty (or without a clean slot) makes room itself. */
static int coroutine_fn GRAPH_RDLOCK
hostcache_wb_make_room(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t mark, dirty;
    int64_t n;

    if (hostcache_journaling(s)) {
        /* the journal takes the oldest (an SSD write, not the origin's) */
        return hostcache_journal(bs, UINT64_MAX, HOSTCACHE_FLUSH_WIDTH * 4,
                                 false);
    }
    mark = hostcache_progress_mark(s);
    n = hostcache_destage_some(bs, UINT64_MAX, HOSTCACHE_FLUSH_WIDTH,
                               HOSTCACHE_FLUSH_WIDTH, NULL, 0, 0);
    qemu_mutex_lock(&s->lock);
    dirty = hc_dirty_blocks(s->eng);
    qemu_mutex_unlock(&s->lock);
    if (n == 0 && dirty) {
        /*
         * everything dirty is in flight already, or behind a direct
         * request: let some of it land
         */
        hostcache_progress_wait(s, mark);
    }
    return n < 0 ? n : 0;
}

/*
 * Make blk dirty in RAM with n bytes of qiov (from qoff) at boff inside
 * it, over base (a whole block) when given (lock held).  Returns the slot,
 * or NULL when every RAM slot is dirty.
 */
static uint8_t *hostcache_wb_put_locked(BDRVHostcacheState *s, uint64_t blk,
                                        const uint8_t *base,
                                        QEMUIOVector *qiov, size_t qoff,
                                        size_t boff, int64_t n,
                                        HostcacheSectors *ssd_secs)
{
    uint8_t *slot = hc_write_dirty(s->eng, blk, get_clock());

    hostcache_modified_locked(s, blk, blk + 1);
    if (slot) {
        if (base) {
            memcpy(slot, base, hostcache_bsize(s));
        }
        qemu_iovec_to_buf(qiov, qoff, slot + boff, n);
        hostcache_ssd_drop_locked(s, blk, ssd_secs);
    }
    return slot;
}

/*
 * The SSD slot of blk's journaled (dirty) copy, pinned, with its data CRC
 * in *crc; HC_SSD_NONE when the journal has no dirty copy (lock held).
 */
static uint64_t hostcache_wb_journaled_locked(BDRVHostcacheState *s,
                                              uint64_t blk, uint32_t *crc)
{
    uint64_t jslot = hostcache_ssd_usable(s) ?
        hc_ssd_lookup(s->ssd.idx, blk, crc) : HC_SSD_NONE;
    uint64_t jseq;

    if (jslot == HC_SSD_NONE) {
        return HC_SSD_NONE;
    }
    hc_ssd_slot_blk(s->ssd.idx, jslot, &jseq, NULL);
    if (!hc_ssd_is_dirty(s->ssd.idx, jslot, jseq)) {
        return HC_SSD_NONE;
    }
    hc_ssd_pin(s->ssd.idx, jslot);
    return jslot;
}

/*
 * Read the current content of blk into buf (no lock): from its journaled
 * copy at jslot (pinned; unpinned here) when there is one, since the
 * origin is older, else from the origin.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_wb_read_old(BlockDriverState *bs, uint64_t blk, uint64_t jslot,
                      uint32_t jcrc, uint8_t *buf)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    int ret;

    if (jslot == HC_SSD_NONE) {
        return bdrv_co_pread(bs->file, blk * bsize, bsize, buf, 0);
    }
    ret = bdrv_co_pread(s->ssd.child, hc_ssd_data_offset(s->ssd.idx, jslot),
                        bsize, buf, 0);
    if (ret == 0 && hc_crc32c(0, buf, bsize) != jcrc) {
        ret = -EIO;     /* the origin is older: never use it */
    }
    qemu_mutex_lock(&s->lock);
    hc_ssd_unpin(s->ssd.idx, jslot);
    qemu_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Write-back write of [offset, offset + bytes), all blocks inside the
 * origin.  A block only partly written and not cached is read first
 * (read-modify-write) so that every dirty block is complete.
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_wb_write(BlockDriverState *bs, int64_t offset, int64_t bytes,
                   QEMUIOVector *qiov, size_t qiov_offset)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    g_autofree uint8_t *rmw = NULL;
    int64_t pos = offset, end_off = offset + bytes;
    HostcacheSectors ssd_secs = { .n = 0 };
    int ret;

    while (pos < end_off) {
        uint64_t blk = pos / bsize;
        int64_t bstart = blk * bsize;
        int64_t n = MIN(bstart + (int64_t)bsize, end_off) - pos;
        size_t qoff = qiov_offset + (pos - offset);
        bool whole = n == (int64_t)bsize, cached, valid, room;
        uint8_t *slot = NULL;
        uint64_t jslot, mark;
        uint32_t jcrc = 0;
        HcOp op;

        qemu_mutex_lock(&s->lock);
        if (hc_dirty_blocks(s->eng) * bsize < hostcache_max_dirty(s) &&
            (whole || hc_contains(s->eng, blk))) {
            slot = hostcache_wb_put_locked(s, blk, NULL, qiov, qoff,
                                           pos - bstart, n, &ssd_secs);
        }
        if (slot || whole || hc_contains(s->eng, blk)) {
            qemu_mutex_unlock(&s->lock);
            if (slot) {
                pos += n;
                continue;
            }
            /* Over max-dirty, or every slot dirty: write back first. */
            ret = hostcache_wb_make_room(bs);
            if (ret < 0) {
                return ret;
            }
            continue;
        }
        /*
         * Partial block, not cached: read it (from the journal if it is
         * dirty there, else from the origin), then retry if not raced.
         */
        jslot = hostcache_wb_journaled_locked(s, blk, &jcrc);
        hc_op_fill_begin(s->eng, &op, blk, blk + 1);
        mark = s->progress_gen;
        qemu_mutex_unlock(&s->lock);
        if (!rmw) {
            rmw = qemu_blockalign(bs->file->bs, bsize);
        }
        ret = hostcache_wb_read_old(bs, blk, jslot, jcrc, rmw);
        qemu_mutex_lock(&s->lock);
        valid = hc_op_end(s->eng, &op);
        room = hc_dirty_blocks(s->eng) * bsize < hostcache_max_dirty(s);
        if (valid && ret == 0 && room && !hc_contains(s->eng, blk)) {
            slot = hostcache_wb_put_locked(s, blk, rmw, qiov, qoff,
                                           pos - bstart, n, &ssd_secs);
            if (slot) {
                pos += n;
            }
        }
        if (ret < 0) {
            hc_engine_stats(s->eng)->origin_errors++;
        }
        cached = hc_contains(s->eng, blk);
        qemu_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
        /* Not installed: raced, full, or now cached; the loop retries. */
        if (!slot && !cached && !valid) {
            /* a write raced the read: let it finish, then read again */
            hostcache_progress_wait(s, mark);
        } else if (!slot && !cached) {
            ret = hostcache_wb_make_room(bs);
            if (ret < 0) {
                return ret;
            }
        }
    }
    /* The SSD's older copies must not outlive this write after a crash. */
    if (s->ssd.idx) {
        hostcache_ssd_persist_all(bs, &ssd_secs);
        hostcache_kick_demoter(bs);
    }
    return 0;
}
