/*
 * hostcache: host-side cache filter for virtual disks
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * A filter node above the disk's origin (its "file" child) that keeps the
 * origin's blocks in a RAM tier.  This file is the QEMU glue only; the cache
 * itself (index, eviction, admission, race tracking, statistics) is the
 * QEMU-free engine in hc-engine.c.
 *
 * Concurrency: every engine call is made with s->lock held and never
 * yields, so requests of one node may run in several threads (multiqueue
 * devices).  Origin I/O happens with the lock released; the engine's
 * in-flight op tracking (hc_op_*) keeps a fill that raced a write from
 * installing stale data.
 *
 * There is no background work and no AioContext-bound state (no timers,
 * no BHs), so drain and AioContext changes need no hooks: every request
 * finishes with its own origin I/O.
 */

#include "qemu/osdep.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qapi/error.h"
#include "qapi/qapi-types-block-core.h"
#include "qapi/util.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qobject/qdict.h"
#include "trace.h"

#include "hc-engine.h"

/* Defaults; see docs/DRIVER.md for the measurements behind them. */
#define HOSTCACHE_DEFAULT_MODE          HOSTCACHE_MODE_WRITE_THROUGH
#define HOSTCACHE_DEFAULT_RAM_SIZE      (256 * MiB)
#define HOSTCACHE_DEFAULT_BLOCK_SIZE    (4 * KiB)
#define HOSTCACHE_DEFAULT_ADMIT_AFTER   1
#define HOSTCACHE_DEFAULT_SEQ_CUTOFF    (4 * MiB)

#define HOSTCACHE_OPT_MODE          "mode"
#define HOSTCACHE_OPT_RAM_SIZE      "ram-size"
#define HOSTCACHE_OPT_BLOCK_SIZE    "block-size"
#define HOSTCACHE_OPT_ADMIT_AFTER   "admit-after"
#define HOSTCACHE_OPT_SEQ_CUTOFF    "seq-cutoff"

typedef struct HostcacheOpts {
    HostcacheMode mode;
    HcConfig cfg;
} HostcacheOpts;

typedef struct BDRVHostcacheState {
    /* Options in force; changed only by reopen commit (drained, BQL). */
    HostcacheOpts opts;

    /* The cache.  Every call into it is made with lock held. */
    HcEngine *eng;

    /* Protects eng (and its statistics); never held across a yield. */
    QemuMutex lock;
} BDRVHostcacheState;

static QemuOptsList hostcache_runtime_opts = {
    .name = "hostcache",
    .head = QTAILQ_HEAD_INITIALIZER(hostcache_runtime_opts.head),
    .desc = {
        {
            .name = HOSTCACHE_OPT_MODE,
            .type = QEMU_OPT_STRING,
            .help = "pass-through, write-around, write-through (default) "
                    "or write-back",
        },
        {
            .name = HOSTCACHE_OPT_RAM_SIZE,
            .type = QEMU_OPT_SIZE,
            .help = "bytes of block data held in RAM (default 256M)",
        },
        {
            .name = HOSTCACHE_OPT_BLOCK_SIZE,
            .type = QEMU_OPT_SIZE,
            .help = "cache block size, a power of two (default 4K)",
        },
        {
            .name = HOSTCACHE_OPT_ADMIT_AFTER,
            .type = QEMU_OPT_NUMBER,
            .help = "cache a block on its N-th miss (default 1)",
        },
        {
            .name = HOSTCACHE_OPT_SEQ_CUTOFF,
            .type = QEMU_OPT_SIZE,
            .help = "sequential streams longer than this are not cached "
                    "(default 4M, 0 = off)",
        },
        { /* end of list */ }
    },
};

static const char *const hostcache_mutable_opts[] = {
    HOSTCACHE_OPT_MODE,
    HOSTCACHE_OPT_RAM_SIZE,
    HOSTCACHE_OPT_ADMIT_AFTER,
    HOSTCACHE_OPT_SEQ_CUTOFF,
    NULL
};

static bool hostcache_parse_mode(const char *str, HostcacheMode *mode,
                                 Error **errp)
{
    int m;

    if (!str) {
        *mode = HOSTCACHE_DEFAULT_MODE;
        return true;
    }
    m = qapi_enum_parse(&HostcacheMode_lookup, str, -1, NULL);
    if (m < 0) {
        error_setg(errp, "Unknown hostcache mode '%s'; expected "
                   "pass-through, write-around, write-through or "
                   "write-back", str);
        return false;
    }
    if (m == HOSTCACHE_MODE_WRITE_BACK) {
        error_setg(errp, "hostcache mode 'write-back' is not supported by "
                   "this build yet; use 'write-through' or 'write-around'");
        return false;
    }
    *mode = m;
    return true;
}

/* Parse and check the options in @options (consuming them). */
static bool hostcache_absorb_opts(HostcacheOpts *dest, QDict *options,
                                  Error **errp)
{
    ERRP_GUARD();
    QemuOpts *opts = qemu_opts_create(&hostcache_runtime_opts, NULL, 0,
                                      &error_abort);
    uint64_t block_size, admit_after;
    char err[256];
    bool ok = false;

    if (!qemu_opts_absorb_qdict(opts, options, errp)) {
        goto out;
    }
    if (!hostcache_parse_mode(qemu_opt_get(opts, HOSTCACHE_OPT_MODE),
                              &dest->mode, errp)) {
        goto out;
    }
    block_size = qemu_opt_get_size(opts, HOSTCACHE_OPT_BLOCK_SIZE,
                                   HOSTCACHE_DEFAULT_BLOCK_SIZE);
    admit_after = qemu_opt_get_number(opts, HOSTCACHE_OPT_ADMIT_AFTER,
                                      HOSTCACHE_DEFAULT_ADMIT_AFTER);
    if (block_size > UINT32_MAX || admit_after > UINT32_MAX) {
        error_setg(errp, "hostcache: %s is out of range",
                   block_size > UINT32_MAX ? "block-size" : "admit-after");
        goto out;
    }
    dest->cfg = (HcConfig) {
        .ram_size = qemu_opt_get_size(opts, HOSTCACHE_OPT_RAM_SIZE,
                                      HOSTCACHE_DEFAULT_RAM_SIZE),
        .block_size = block_size,
        .admit_after = admit_after,
        .seq_cutoff = qemu_opt_get_size(opts, HOSTCACHE_OPT_SEQ_CUTOFF,
                                        HOSTCACHE_DEFAULT_SEQ_CUTOFF),
        .policy = HC_POLICY_SLRU,
    };
    if (hc_config_check(&dest->cfg, err, sizeof(err)) < 0) {
        error_setg(errp, "hostcache: %s", err);
        goto out;
    }
    ok = true;
out:
    qemu_opts_del(opts);
    return ok;
}

static int GRAPH_UNLOCKED
hostcache_open(BlockDriverState *bs, QDict *options, int flags, Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    char err[256];
    int ret;

    GLOBAL_STATE_CODE();

    ret = bdrv_open_file_child(NULL, options, "file", bs, errp);
    if (ret < 0) {
        return ret;
    }
    if (!hostcache_absorb_opts(&s->opts, options, errp)) {
        return -EINVAL;
    }
    s->eng = hc_engine_new(&s->opts.cfg, err, sizeof(err));
    if (!s->eng) {
        error_setg(errp, "hostcache: %s", err);
        return -ENOMEM;
    }
    qemu_mutex_init(&s->lock);

    GRAPH_RDLOCK_GUARD_MAINLOOP();

    bs->supported_write_flags = BDRV_REQ_WRITE_UNCHANGED |
        (BDRV_REQ_FUA & bs->file->bs->supported_write_flags);
    bs->supported_zero_flags = BDRV_REQ_WRITE_UNCHANGED |
        ((BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) &
            bs->file->bs->supported_zero_flags);

    trace_hostcache_open(bs, HostcacheMode_str(s->opts.mode),
                         s->opts.cfg.ram_size, s->opts.cfg.block_size);
    return 0;
}

static void hostcache_close(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    GLOBAL_STATE_CODE();

    hc_engine_free(s->eng);
    s->eng = NULL;
    qemu_mutex_destroy(&s->lock);
}

/*
 * Reopen: mode, ram-size, admit-after and seq-cutoff may change on a live
 * node (block-size may not: it is not in mutable_opts).  The new options
 * are checked in prepare; commit applies them and cannot fail.
 */
static int hostcache_reopen_prepare(BDRVReopenState *state,
                                    BlockReopenQueue *queue, Error **errp)
{
    BDRVHostcacheState *s = state->bs->opaque;
    HostcacheOpts *opts = g_new0(HostcacheOpts, 1);

    GLOBAL_STATE_CODE();

    if (!hostcache_absorb_opts(opts, state->options, errp)) {
        g_free(opts);
        return -EINVAL;
    }
    if (opts->cfg.block_size != s->opts.cfg.block_size) {
        error_setg(errp, "hostcache: block-size cannot be changed on an open "
                   "node (%" PRIu32 " -> %" PRIu32 "); remove the node and "
                   "add it again", s->opts.cfg.block_size,
                   opts->cfg.block_size);
        g_free(opts);
        return -EINVAL;
    }
    state->opaque = opts;
    return 0;
}

static void hostcache_reopen_commit(BDRVReopenState *state)
{
    BDRVHostcacheState *s = state->bs->opaque;
    HostcacheOpts *opts = state->opaque;
    char err[256];

    GLOBAL_STATE_CODE();

    qemu_mutex_lock(&s->lock);
    if (hc_engine_reconfigure(s->eng, &opts->cfg, err, sizeof(err)) < 0) {
        /* Only an allocation failure when growing can get here. */
        warn_report("hostcache: keeping ram-size %" PRIu64 ": %s",
                    hc_engine_config(s->eng)->ram_size, err);
        opts->cfg.ram_size = hc_engine_config(s->eng)->ram_size;
    }
    if (opts->mode == HOSTCACHE_MODE_PASS_THROUGH) {
        /* Pass-through does not maintain the cache: drop it now. */
        hc_invalidate_all(s->eng);
    }
    s->opts = *opts;
    qemu_mutex_unlock(&s->lock);

    trace_hostcache_reopen(state->bs, HostcacheMode_str(s->opts.mode),
                           s->opts.cfg.ram_size);
    g_free(state->opaque);
    state->opaque = NULL;
}

static void hostcache_reopen_abort(BDRVReopenState *state)
{
    g_free(state->opaque);
    state->opaque = NULL;
}

static inline uint64_t hostcache_bsize(BDRVHostcacheState *s)
{
    return s->opts.cfg.block_size;
}

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
    uint64_t word, *admit = nblk <= 64 ? &word : g_new0(uint64_t,
                                                         DIV_ROUND_UP(nblk, 64));
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
    }

end_op:
    qemu_mutex_lock(&s->lock);
    valid = hc_op_end(s->eng, &op);
    for (uint64_t i = 0; ret == 0 && valid && i < nblk; i++) {
        uint64_t blk = first + i;
        void *slot;

        /* A block reaching past the end of the origin is never cached. */
        if (!(admit[i / 64] & (1ull << (i % 64))) ||
            (int64_t)((blk + 1) * bsize) > len) {
            continue;
        }
        slot = hc_insert(s->eng, blk);
        if (!slot) {
            break;
        }
        memcpy(slot, bounce + (blk - first) * bsize, bsize);
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

static int coroutine_fn GRAPH_RDLOCK
hostcache_co_preadv_part(BlockDriverState *bs, int64_t offset, int64_t bytes,
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
        while ((int64_t)(run_end * bsize) < end_off &&
               !hc_contains(s->eng, run_end)) {
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
    trace_hostcache_read(bs, offset, bytes, hit_bytes);
    return ret;
}

/*
 * Common path of writes, write-zeroes, discards: bracket the origin
 * operation so the blocks it touches are dropped and no racing fill
 * installs old data.  In write-through mode the fully written blocks of a
 * successful, unraced, non-sequential write are then cached.
 */
typedef enum HostcacheWriteKind {
    HOSTCACHE_WRITE,
    HOSTCACHE_ZEROES,
    HOSTCACHE_DISCARD,
} HostcacheWriteKind;

static int coroutine_fn GRAPH_RDLOCK
hostcache_do_write(BlockDriverState *bs, HostcacheWriteKind kind,
                   int64_t offset, int64_t bytes, QEMUIOVector *qiov,
                   size_t qiov_offset, BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    bool caching = s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;
    bool install = false, valid;
    HcStats *st;
    HcOp op;
    int ret;

    if (caching) {
        qemu_mutex_lock(&s->lock);
        install = kind == HOSTCACHE_WRITE &&
            s->opts.mode == HOSTCACHE_MODE_WRITE_THROUGH &&
            !hc_seq_check(s->eng, offset, bytes);
        hc_op_write_begin(s->eng, &op, offset / bsize,
                          DIV_ROUND_UP(offset + bytes, bsize));
        qemu_mutex_unlock(&s->lock);
    }

    switch (kind) {
    case HOSTCACHE_WRITE:
        ret = bdrv_co_pwritev_part(bs->file, offset, bytes, qiov, qiov_offset,
                                   flags);
        break;
    case HOSTCACHE_ZEROES:
        ret = bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
        break;
    default:
        ret = bdrv_co_pdiscard(bs->file, offset, bytes);
        break;
    }

    qemu_mutex_lock(&s->lock);
    valid = caching ? hc_op_end(s->eng, &op) : false;
    for (uint64_t blk = DIV_ROUND_UP(offset, bsize);
         ret == 0 && install && valid &&
         (int64_t)((blk + 1) * bsize) <= offset + bytes; blk++) {
        void *slot = hc_insert(s->eng, blk);

        if (!slot) {
            break;
        }
        qemu_iovec_to_buf(qiov, qiov_offset + (blk * bsize - offset), slot,
                          bsize);
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
    qemu_mutex_unlock(&s->lock);
    trace_hostcache_write(bs, offset, bytes, ret);
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
hostcache_co_pwritev_part(BlockDriverState *bs, int64_t offset, int64_t bytes,
                          QEMUIOVector *qiov, size_t qiov_offset,
                          BdrvRequestFlags flags)
{
    return hostcache_do_write(bs, HOSTCACHE_WRITE, offset, bytes, qiov,
                              qiov_offset, flags);
}

static int coroutine_fn GRAPH_RDLOCK
hostcache_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, BdrvRequestFlags flags)
{
    return hostcache_do_write(bs, HOSTCACHE_ZEROES, offset, bytes, NULL, 0,
                              flags);
}

static int coroutine_fn GRAPH_RDLOCK
hostcache_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return hostcache_do_write(bs, HOSTCACHE_DISCARD, offset, bytes, NULL, 0,
                              0);
}

static int coroutine_fn GRAPH_RDLOCK hostcache_co_flush(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    hc_engine_stats(s->eng)->flushes++;
    qemu_mutex_unlock(&s->lock);
    /* Defining .bdrv_co_flush means the children are ours to flush. */
    return bdrv_co_flush(bs->file->bs);
}

static int coroutine_fn GRAPH_RDLOCK
hostcache_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                      PreallocMode prealloc, BdrvRequestFlags flags,
                      Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    int64_t old_len = bdrv_co_getlength(bs->file->bs);
    HcOp op;
    int ret;

    if (old_len < 0) {
        error_setg_errno(errp, -old_len, "Failed to get the origin's length");
        return old_len;
    }
    /* Blocks at or past the shorter end are (or were) partial: drop them. */
    qemu_mutex_lock(&s->lock);
    hc_op_write_begin(s->eng, &op, MIN(old_len, offset) / hostcache_bsize(s),
                      UINT64_MAX);
    qemu_mutex_unlock(&s->lock);

    ret = bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);

    qemu_mutex_lock(&s->lock);
    hc_op_end(s->eng, &op);
    qemu_mutex_unlock(&s->lock);
    return ret;
}

static int64_t coroutine_fn GRAPH_RDLOCK
hostcache_co_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

/*
 * Activation after an incoming migration (and of a source whose migration
 * failed): the origin may have been written by another host meanwhile, so
 * nothing cached may be trusted.
 */
static void coroutine_fn GRAPH_RDLOCK
hostcache_co_invalidate_cache(BlockDriverState *bs, Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t n;

    qemu_mutex_lock(&s->lock);
    n = hc_engine_blocks(s->eng);
    hc_invalidate_all(s->eng);
    qemu_mutex_unlock(&s->lock);
    trace_hostcache_invalidate_cache(bs, n);
}

static void hostcache_child_perm(BlockDriverState *bs, BdrvChild *c,
                                 BdrvChildRole role,
                                 BlockReopenQueue *reopen_queue,
                                 uint64_t perm, uint64_t shared,
                                 uint64_t *nperm, uint64_t *nshared)
{
    bdrv_default_perms(bs, c, role, reopen_queue, perm, shared,
                       nperm, nshared);
}

static BlockStatsSpecific *hostcache_get_specific_stats(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    BlockStatsSpecific *stats = g_new0(BlockStatsSpecific, 1);
    BlockStatsSpecificHostcache *h = &stats->u.hostcache;
    const HcStats *st;

    stats->driver = BLOCKDEV_DRIVER_HOSTCACHE;

    qemu_mutex_lock(&s->lock);
    st = hc_engine_stats(s->eng);
    *h = (BlockStatsSpecificHostcache) {
        .mode = s->opts.mode,
        .block_size = s->opts.cfg.block_size,
        .ram_limit = hc_engine_config(s->eng)->ram_size,
        .ram_used = hc_engine_blocks(s->eng) * s->opts.cfg.block_size,
        .ram_blocks = hc_engine_blocks(s->eng),
        .metadata_bytes = hc_engine_metadata_bytes(s->eng),
        .read_hits = st->read_hits,
        .read_misses = st->read_misses,
        .read_hit_bytes = st->read_hit_bytes,
        .read_miss_bytes = st->read_miss_bytes,
        .writes = st->writes,
        .write_bytes = st->write_bytes,
        .discards = st->discards,
        .flushes = st->flushes,
        .admissions = st->admissions,
        .admissions_refused = st->admissions_refused,
        .evictions = st->evictions,
        .invalidations = st->invalidations,
        .sequential_bypasses = st->seq_bypasses,
        .stale_fills = st->stale_fills,
        .origin_errors = st->origin_errors,
        .hit_latency_avg_ns = hc_latency_avg(&st->hit_lat),
        .hit_latency_p99_ns = hc_latency_quantile(&st->hit_lat, 0.99),
        .miss_latency_avg_ns = hc_latency_avg(&st->miss_lat),
        .miss_latency_p99_ns = hc_latency_quantile(&st->miss_lat, 0.99),
    };
    qemu_mutex_unlock(&s->lock);
    return stats;
}

static BlockDriver bdrv_hostcache = {
    .format_name                = "hostcache",
    .instance_size              = sizeof(BDRVHostcacheState),
    .mutable_opts               = hostcache_mutable_opts,

    .bdrv_open                  = hostcache_open,
    .bdrv_close                 = hostcache_close,

    .bdrv_reopen_prepare        = hostcache_reopen_prepare,
    .bdrv_reopen_commit         = hostcache_reopen_commit,
    .bdrv_reopen_abort          = hostcache_reopen_abort,

    .bdrv_co_preadv_part        = hostcache_co_preadv_part,
    .bdrv_co_pwritev_part       = hostcache_co_pwritev_part,
    .bdrv_co_pwrite_zeroes      = hostcache_co_pwrite_zeroes,
    .bdrv_co_pdiscard           = hostcache_co_pdiscard,
    .bdrv_co_flush              = hostcache_co_flush,
    .bdrv_co_truncate           = hostcache_co_truncate,
    .bdrv_co_getlength          = hostcache_co_getlength,
    .bdrv_co_invalidate_cache   = hostcache_co_invalidate_cache,

    .bdrv_child_perm            = hostcache_child_perm,
    .bdrv_get_specific_stats    = hostcache_get_specific_stats,

    .is_filter                  = true,
};

static void bdrv_hostcache_init(void)
{
    bdrv_register(&bdrv_hostcache);
}

block_init(bdrv_hostcache_init);
