/*
 * hostcache: the request paths
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * A guest read is served block by block from the RAM tier, then the SSD
 * tier; the blocks in neither are read from the origin in runs, and the
 * engine's admission filter says which of them are cached (a fill).  A
 * write, write-zeroes or discard in pass-through or write-through mode
 * goes to the origin inside an engine operation that drops the blocks it
 * touches, so no racing fill installs old data; a write-back write goes to
 * hostcache-wb.c.  Entry points: hostcache_read(), hostcache_do_write().
 */

#include "qemu/osdep.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qemu/memalign.h"
#include "trace.h"
#include "hostcache-int.h"

/* Record a finished read in the statistics (lock held). */
static void hostcache_account_read(BDRVHostcacheState *s, int64_t bytes,
                                   uint64_t hit_bytes, int64_t start_ns)
{
    HcStats *st = hc_engine_stats(s->eng);
    uint64_t ns = get_clock() - start_ns;

    if (hit_bytes == bytes) {
        st->read_hits++;
        hc_latency_record(&st->hit_lat, ns);
    } else {
        st->read_misses++;
        hc_latency_record(&st->miss_lat, ns);
    }
    st->read_hit_bytes += hit_bytes;
    st->read_miss_bytes += bytes - hit_bytes;
}

/*
 * Cache the admitted blocks of a fill from bounce (lock held), as far as
 * there is room; a block reaching past the origin's end (len) is never
 * cached.
 */
static void hostcache_install_filled_locked(BDRVHostcacheState *s,
                                            uint64_t first, uint64_t nblk,
                                            const uint64_t *admit,
                                            int64_t len, const uint8_t *bounce)
{
    uint64_t bsize = hostcache_bsize(s);

    for (uint64_t i = 0; i < nblk; i++) {
        uint64_t blk = first + i;
        void *slot;

        if (!(admit[i / 64] & (1ull << (i % 64))) ||
            (int64_t)((blk + 1) * bsize) > len) {
            continue;
        }
        slot = hc_insert(s->eng, blk);
        if (!slot) {
            break;
        }
        memcpy(slot, bounce + i * bsize, bsize);
    }
}

/*
 * Read the missing blocks [first, end) from the origin; the guest wants
 * [pos, pos + n) of them at @qiov_offset.  Blocks the admission policy
 * accepts are inserted unless a write raced the read.  Called and returns
 * without the lock.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_fill(BlockDriverState *bs, uint64_t first, uint64_t end,
               int64_t pos, int64_t n, QEMUIOVector *qiov, size_t qiov_offset,
               bool bypass)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    uint64_t nblk = end - first, admitted = 0;
    uint64_t word, *admit = nblk <= 64 ? &word :
        g_new0(uint64_t, DIV_ROUND_UP(nblk, 64));
    int64_t len, a, z;
    void *bounce = NULL;
    HcOp op;
    bool valid;
    int ret;

    word = 0;
    qemu_mutex_lock(&s->lock);
    for (uint64_t i = 0; i < nblk && !bypass; i++) {
        if (hc_admit_miss(s->eng, first + i)) {
            admit[i / 64] |= 1ull << (i % 64);
            admitted++;
        }
    }
    if (admitted) {
        hc_op_fill_begin(s->eng, &op, first, end);
    }
    qemu_mutex_unlock(&s->lock);

    if (!admitted) {
        /* Nothing to cache: read exactly what the guest asked for. */
        ret = bdrv_co_preadv_part(bs->file, pos, n, qiov, qiov_offset, 0);
        goto out;
    }

    len = bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        ret = len;
        goto end_op;
    }
    a = first * bsize;
    z = MAX(MIN((int64_t)(end * bsize), len), pos + n);
    bounce = qemu_try_blockalign(bs->file->bs, z - a);
    if (!bounce) {
        ret = -ENOMEM;
        goto end_op;
    }
    ret = bdrv_co_pread(bs->file, a, z - a, bounce, 0);
    if (ret == 0) {
        qemu_iovec_from_buf(qiov, qiov_offset, bounce + (pos - a), n);
    } else if (a != pos || z != pos + n) {
        /*
         * The whole blocks could not be read, but the guest asked for less:
         * a bad sector outside its range must not fail it.  Nothing of this
         * is cached.
         */
        ret = bdrv_co_preadv_part(bs->file, pos, n, qiov, qiov_offset, 0);
        if (ret == 0) {
            qemu_mutex_lock(&s->lock);
            hc_op_end(s->eng, &op);
            qemu_mutex_unlock(&s->lock);
            trace_hostcache_fill(bs, first, end, true, -EIO);
            goto out;
        }
    }

end_op:
    qemu_mutex_lock(&s->lock);
    valid = hc_op_end(s->eng, &op);
    if (ret == 0 && valid) {
        hostcache_install_filled_locked(s, first, nblk, admit, len, bounce);
    }
    qemu_mutex_unlock(&s->lock);
    trace_hostcache_fill(bs, first, end, !valid, ret);

out:
    if (ret < 0) {
        qemu_mutex_lock(&s->lock);
        hc_engine_stats(s->eng)->origin_errors++;
        qemu_mutex_unlock(&s->lock);
    }
    qemu_vfree(bounce);
    if (admit != &word) {
        g_free(admit);
    }
    return ret;
}

/*
 * A guest read: RAM hits, then SSD hits, then runs of blocks in neither
 * tier read from the origin in one request each (and cached when the
 * admission filter says so).
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_read(BlockDriverState *bs, int64_t offset, int64_t bytes,
               QEMUIOVector *qiov, size_t qiov_offset,
               BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    int64_t start_ns = get_clock();
    int64_t pos = offset, end_off = offset + bytes;
    uint64_t hit_bytes = 0;
    bool bypass;
    int ret = 0;

    if (s->opts.mode == HOSTCACHE_MODE_PASS_THROUGH) {
        ret = bdrv_co_preadv_part(bs->file, offset, bytes, qiov, qiov_offset,
                                  flags);
        qemu_mutex_lock(&s->lock);
        if (ret < 0) {
            hc_engine_stats(s->eng)->origin_errors++;
        }
        hostcache_account_read(s, bytes, 0, start_ns);
        qemu_mutex_unlock(&s->lock);
        return ret;
    }

    qemu_mutex_lock(&s->lock);
    bypass = hc_seq_check(s->eng, offset, bytes);
    while (pos < end_off) {
        uint64_t blk = pos / bsize, run_end;
        const uint8_t *data = hc_lookup(s->eng, blk, !bypass);
        int64_t n;

        if (data) {
            n = MIN((int64_t)((blk + 1) * bsize), end_off) - pos;
            qemu_iovec_from_buf(qiov, qiov_offset + (pos - offset),
                                data + pos % bsize, n);
            pos += n;
            hit_bytes += n;
            continue;
        }
        run_end = blk + 1;
        ret = hostcache_ssd_try_read(bs, blk, pos, end_off, qiov,
                                     qiov_offset + (pos - offset), bypass,
                                     &n);
        if (ret < 0) {
            break;
        }
        if (ret) {
            ret = 0;
            pos += n;
            hit_bytes += n;
            continue;
        }
        /* A run of blocks in neither tier goes to the origin in one read. */
        while ((int64_t)(run_end * bsize) < end_off &&
               !hc_contains(s->eng, run_end) &&
               !(hostcache_ssd_usable(s) &&
                 hc_ssd_lookup(s->ssd.idx, run_end, NULL) != HC_SSD_NONE)) {
            run_end++;
        }
        n = MIN((int64_t)(run_end * bsize), end_off) - pos;
        qemu_mutex_unlock(&s->lock);
        ret = hostcache_fill(bs, blk, run_end, pos, n, qiov,
                             qiov_offset + (pos - offset), bypass);
        qemu_mutex_lock(&s->lock);
        if (ret < 0) {
            break;
        }
        pos += n;
    }
    hostcache_account_read(s, bytes, hit_bytes, start_ns);
    qemu_mutex_unlock(&s->lock);
    hostcache_kick_demoter(bs);
    trace_hostcache_read(bs, offset, bytes, hit_bytes);
    return ret;
}


/*
 * A write kept in RAM (write-back): made durable on the SSD journal (or,
 * without one, on the origin) before it completes when the guest asks
 * for FUA.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_wb_request(BlockDriverState *bs, int64_t offset, int64_t bytes,
                     QEMUIOVector *qiov, size_t qiov_offset,
                     BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    HcStats *st;
    int ret = hostcache_wb_write(bs, offset, bytes, qiov, qiov_offset);

    if (ret == 0 && (flags & BDRV_REQ_FUA)) {
        ret = hostcache_journaling(s) ?
            hostcache_journal(bs, hc_write_seq(s->eng), UINT64_MAX,
                              false) : -EAGAIN;
        if (ret == -EAGAIN || (ret < 0 && s->ssd.broken)) {
            ret = hostcache_wb_flush(bs);
        }
    }
    qemu_mutex_lock(&s->lock);
    st = hc_engine_stats(s->eng);
    st->writes++;
    st->write_bytes += bytes;
    qemu_mutex_unlock(&s->lock);
    hostcache_kick_destager(bs);
    trace_hostcache_write(bs, offset, bytes, ret);
    return ret;
}

/* The origin's half of a write, write-zeroes or discard. */
static int coroutine_fn GRAPH_RDLOCK
hostcache_origin_write(BlockDriverState *bs, HostcacheWriteKind kind,
                       int64_t offset, int64_t bytes, QEMUIOVector *qiov,
                       size_t qiov_offset, BdrvRequestFlags flags)
{
    switch (kind) {
    case HOSTCACHE_WRITE:
        return bdrv_co_pwritev_part(bs->file, offset, bytes, qiov,
                                    qiov_offset, flags);
    case HOSTCACHE_ZEROES:
        return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
    default:
        return bdrv_co_pdiscard(bs->file, offset, bytes);
    }
}

/*
 * Cache the blocks of [offset, offset + bytes) that qiov wholly wrote
 * (lock held), as far as there is room.
 */
static void hostcache_install_written_locked(BDRVHostcacheState *s,
                                             int64_t offset, int64_t bytes,
                                             QEMUIOVector *qiov,
                                             size_t qiov_offset)
{
    uint64_t bsize = hostcache_bsize(s);

    for (uint64_t blk = DIV_ROUND_UP(offset, bsize);
         (int64_t)((blk + 1) * bsize) <= offset + bytes; blk++) {
        void *slot = hc_insert(s->eng, blk);

        if (!slot) {
            break;
        }
        qemu_iovec_to_buf(qiov, qiov_offset + (blk * bsize - offset), slot,
                          bsize);
    }
}

/*
 * Common path of writes, write-zeroes, discards: bracket the origin
 * operation so the blocks it touches are dropped and no racing fill
 * installs old data.  In write-through mode the fully written blocks of a
 * successful, unraced, non-sequential write are then cached.
 */
int coroutine_fn GRAPH_RDLOCK
hostcache_do_write(BlockDriverState *bs, HostcacheWriteKind kind,
                   int64_t offset, int64_t bytes, QEMUIOVector *qiov,
                   size_t qiov_offset, BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    bool caching = s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;
    /*
     * Write-back whose SSD tier failed falls back to write-through: the
     * host has lost the durable half of its write cache.
     */
    bool broken_wb = s->opts.mode == HOSTCACHE_MODE_WRITE_BACK &&
        s->ssd.broken;
    bool wb = s->opts.mode == HOSTCACHE_MODE_WRITE_BACK && !broken_wb;
    bool install = false, valid, seq = false;
    uint64_t first = offset / bsize, end = DIV_ROUND_UP(offset + bytes, bsize);
    int64_t len = 0;
    HcStats *st;
    HcOp op;
    int ret = 0;

    if (caching) {
        qemu_mutex_lock(&s->lock);
        seq = kind == HOSTCACHE_WRITE && hc_seq_check(s->eng, offset, bytes);
        install = kind == HOSTCACHE_WRITE && !seq &&
            (s->opts.mode == HOSTCACHE_MODE_WRITE_THROUGH || broken_wb);
        qemu_mutex_unlock(&s->lock);
    }
    if (wb && kind == HOSTCACHE_WRITE && !seq) {
        /* Blocks reaching past the origin's end are never cached. */
        len = bdrv_co_getlength(bs->file->bs);
        ret = len < 0 ? len : 0;
    }
    if (ret == 0 && wb && kind == HOSTCACHE_WRITE && !seq &&
        (int64_t)(end * bsize) <= len) {
        return hostcache_wb_request(bs, offset, bytes, qiov, qiov_offset,
                                    flags);
    }

    if (ret == 0 && (wb || (caching && (hostcache_ssd_dirty(s) ||
                                        hc_dirty_blocks(s->eng))))) {
        ret = hostcache_wb_begin_direct(bs, &op, first, end);
    } else if (ret == 0 && caching) {
        qemu_mutex_lock(&s->lock);
        hc_op_write_begin(s->eng, &op, first, end);
        hostcache_modified_locked(s, first, end);
        qemu_mutex_unlock(&s->lock);
    }
    if (ret < 0) {
        return ret;
    }
    if (caching) {
        hostcache_ssd_forget(bs, first, end);
    }

    ret = hostcache_origin_write(bs, kind, offset, bytes, qiov, qiov_offset,
                                 flags);
    if (ret == 0) {
        qatomic_inc(&s->origin_wgen);
    }
    qemu_mutex_lock(&s->lock);
    valid = caching ? hc_op_end(s->eng, &op) : false;
    if (ret == 0 && install && valid) {
        hostcache_install_written_locked(s, offset, bytes, qiov, qiov_offset);
    }
    st = hc_engine_stats(s->eng);
    if (kind == HOSTCACHE_DISCARD) {
        st->discards++;
    } else {
        st->writes++;
        st->write_bytes += bytes;
    }
    if (ret < 0) {
        st->origin_errors++;
    }
    if (caching) {
        hostcache_progress_locked(s);   /* destages behind it may start */
    }
    qemu_mutex_unlock(&s->lock);
    hostcache_kick_demoter(bs);
    trace_hostcache_write(bs, offset, bytes, ret);
    return ret;
}
