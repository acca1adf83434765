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
 * Write-back: written blocks become dirty in the engine and a background
 * "destager" coroutine writes them to the origin in write-completion order.
 * It runs only while dirty data exists and the node is not drained; it
 * holds the graph reader lock and counts as in flight, and drain_begin
 * wakes it so it stops after the writes it has in flight.  Everything
 * that must not wait for it (a guest flush, a writer over max-dirty, a
 * discard over dirty blocks) writes back by itself, in its own request.
 * No other AioContext-bound state exists (no timers, no BHs).
 */

#include "qemu/osdep.h"
#include "block/aio_task.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qapi/error.h"
#include "qapi/qapi-types-block-core.h"
#include "qapi/util.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/bitops.h"
#include "qemu/coroutine.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qobject/qdict.h"
#include "trace.h"

#include "hc-engine.h"
#include "hc-ssd.h"

/* Defaults; see docs/DRIVER.md for the measurements behind them. */
#define HOSTCACHE_DEFAULT_MODE          HOSTCACHE_MODE_WRITE_THROUGH
#define HOSTCACHE_DEFAULT_RAM_SIZE      (256 * MiB)
#define HOSTCACHE_DEFAULT_BLOCK_SIZE    (4 * KiB)
#define HOSTCACHE_DEFAULT_ADMIT_AFTER   1
#define HOSTCACHE_DEFAULT_SEQ_CUTOFF    (4 * MiB)
#define HOSTCACHE_DEFAULT_DIRTY_AGE_MS  5000
#define HOSTCACHE_MAX_DIRTY_AGE_MS      3600000

/* Write-back concurrency towards the origin. */
#define HOSTCACHE_DESTAGE_WIDTH_MAX     16
#define HOSTCACHE_FLUSH_WIDTH           16

#define HOSTCACHE_OPT_MODE          "mode"
#define HOSTCACHE_OPT_RAM_SIZE      "ram-size"
#define HOSTCACHE_OPT_BLOCK_SIZE    "block-size"
#define HOSTCACHE_OPT_ADMIT_AFTER   "admit-after"
#define HOSTCACHE_OPT_SEQ_CUTOFF    "seq-cutoff"
#define HOSTCACHE_OPT_MAX_DIRTY     "max-dirty"
#define HOSTCACHE_OPT_DIRTY_AGE     "max-dirty-age-ms"
#define HOSTCACHE_OPT_ORIGIN_ID     "origin-id"
#define HOSTCACHE_OPT_SSD_CREATE    "ssd-create"

/* Evicted blocks waiting to be written to the SSD tier, at most. */
#define HOSTCACHE_DEMOTE_MAX        1024
/* Demotions written per round, before their slot-table sectors. */
#define HOSTCACHE_DEMOTE_BATCH      32

typedef struct HostcacheOpts {
    HostcacheMode mode;
    HcConfig cfg;
    uint64_t max_dirty;         /* bytes */
    uint64_t dirty_age_ns;
    char origin_id[HC_SSD_ORIGIN_ID_MAX];   /* "" = origin's filename */
    bool ssd_create;            /* a blank or foreign tier may be formatted */
} HostcacheOpts;

/*
 * Slot-table sectors to persist.  On overflow every sector is visited, but
 * hostcache_ssd_persist() only writes those changed since their last write.
 */
typedef struct HostcacheSectors {
    uint64_t sec[32];
    int n;
    bool overflow;
} HostcacheSectors;

typedef struct BDRVHostcacheState {
    /* Options in force; changed only by reopen commit (drained, BQL). */
    HostcacheOpts opts;

    /* The cache.  Every call into it is made with lock held. */
    HcEngine *eng;

    /* Protects eng (and its statistics); never held across a yield. */
    QemuMutex lock;

    /* Write-back state, all protected by lock. */
    bool destager_running;      /* a destager coroutine exists */
    int quiesced;               /* drain depth; no background work when > 0 */
    QemuCoSleep destager_sleep; /* where an idle destager sleeps */
    int destage_width;          /* origin writes in flight, adapted (AIMD) */
    uint64_t destage_lat_floor; /* lowest destage latency seen, ns */

    /*
     * SSD tier (all NULL/false without one).  ssd_on: the tier is used;
     * false while the node is inactive (migration) or after an SSD error.
     * Invariant: a block's SSD entry is durably dropped before the block
     * changes on the origin or becomes dirty in RAM.
     */
    BdrvChild *ssd;
    HcSsd *ssd_idx;
    bool ssd_on;
    bool ssd_broken;                /* an SSD I/O error: never use it again */
    bool ssd_drop_pending;          /* ...and its content is not dropped yet */
    bool ssd_dropping;              /* that drop is being written now */
    /*
     * Blocks whose SSD entry was dropped in memory but maybe not yet on the
     * device (HostcachePendingDrop): before such a block is written to the
     * origin, its sector is persisted.
     */
    GArray *ssd_pending;
    /*
     * Slot-table sectors written without FUA, not yet covered by an SSD
     * flush (HostcachePendingDrop: sec, gen): they count as on the device
     * (hc_ssd_sector_written) only after the next flush.
     */
    GArray *ssd_unflushed;
    int64_t ssd_flush_ns;           /* last SSD flush (hostcache_ssd_flush) */
    unsigned long *ssd_sec_busy;    /* slot-table sectors being written */
    QSIMPLEQ_HEAD(, HostcacheDemotion) demotions;
    int ndemotions;
    bool demoter_running;

    /*
     * Write-back journal on the SSD tier (write-back mode with the tier
     * on): a flush writes dirty RAM blocks to the SSD as dirty entries and
     * flushes the SSD only; the destager writes dirty entries to the origin
     * in journal order and marks them clean once the origin is flushed.
     * jlock serializes journal batches (data, slot table, superblock, SSD
     * flush); dlock serializes batches towards the origin.
     */
    CoMutex jlock;
    CoMutex dlock;
    GArray *journal;                /* HostcacheJEntry in seq order */
    guint jhead;                    /* first entry not yet destaged */
    guint jbusy;                    /* first entry of the batch in flight */
    int64_t jsuper_ns;              /* last superblock write by the journal */
    uint64_t jsuper_off;
    GArray *jkept;                  /* older entries to release after flush */
    HostcacheSectors *jsecs;        /* released entries' sectors to write */
    int64_t jsecs_ns;               /* when they were last written */
    /*
     * Origin writes completed (wgen) and covered by a completed origin
     * flush (fgen), both under lock: a demotion's slot-table entry is
     * written only once every origin write before it is flushed, so a
     * power cut can never leave the SSD newer than the origin.
     */
    uint64_t origin_wgen;
    uint64_t origin_fgen;

    /* HOSTCACHE_CHECK_INDEX set in the environment (tests): the indexes'
     * invariants are checked after every batch, aborting when broken. */
    bool check_index;
} BDRVHostcacheState;

typedef struct HostcacheJEntry {
    uint64_t slot;
    uint64_t seq;
    int64_t ns;         /* when journaled; meaningless when recovered */
    bool recovered;     /* left by an earlier run: write back at once */
} HostcacheJEntry;

/* With check_index, abort on a broken index invariant (lock held). */
static void hostcache_check_locked(BDRVHostcacheState *s, const char *where)
{
    const char *why;

    if (!s->check_index) {
        return;
    }
    why = s->ssd_idx ? hc_ssd_check(s->ssd_idx) : NULL;
    why = why ? why : hc_engine_check(s->eng);
    if (why) {
        error_report("hostcache: index check failed after %s: %s", where,
                     why);
        abort();
    }
}

/* Write-back with the SSD tier on: flushes go to the journal. */
static inline bool hostcache_journaling(BDRVHostcacheState *s)
{
    return s->opts.mode == HOSTCACHE_MODE_WRITE_BACK && s->ssd_on;
}

/* Dirty entries on the SSD tier (lock held); 0 without a tier. */
static inline uint64_t hostcache_ssd_dirty(BDRVHostcacheState *s)
{
    return s->ssd_idx ? hc_ssd_dirty_blocks(s->ssd_idx) +
        hc_ssd_kept_dirty(s->ssd_idx) : 0;
}

typedef struct HostcachePendingDrop {
    uint64_t blk;
    uint64_t sec;
    uint64_t gen;       /* the sector's generation once the drop is in it */
} HostcachePendingDrop;

/* A clean block evicted from RAM, on its way to the SSD tier. */
typedef struct HostcacheDemotion {
    uint64_t blk;
    uint64_t wgen;              /* origin writes before it (origin_wgen) */
    HcOp op;                    /* a write to blk meanwhile makes it stale */
    void *buf;
    QSIMPLEQ_ENTRY(HostcacheDemotion) next;
} HostcacheDemotion;

static void hostcache_wake_destager(BlockDriverState *bs);
static int GRAPH_RDLOCK hostcache_ssd_attach(BlockDriverState *bs, bool drop,
                                             bool activation, Error **errp);
static int GRAPH_RDLOCK
hostcache_ssd_write_super(BlockDriverState *bs, uint32_t state, bool drop);
static void hostcache_ssd_detach(BDRVHostcacheState *s);
static void hostcache_evicted(void *opaque, uint64_t blk, const void *data);
static void hostcache_kick_demoter(BlockDriverState *bs);
static int coroutine_fn GRAPH_RDLOCK
hostcache_journal_sync(BlockDriverState *bs);
static void hostcache_journal_free(BDRVHostcacheState *s);

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
        {
            .name = HOSTCACHE_OPT_MAX_DIRTY,
            .type = QEMU_OPT_SIZE,
            .help = "write-back: dirty bytes at most (default ram-size/2)",
        },
        {
            .name = HOSTCACHE_OPT_DIRTY_AGE,
            .type = QEMU_OPT_NUMBER,
            .help = "write-back: write back dirty data older than this "
                    "(milliseconds, default 5000)",
        },
        {
            .name = HOSTCACHE_OPT_ORIGIN_ID,
            .type = QEMU_OPT_STRING,
            .help = "identity of the origin recorded in the SSD tier "
                    "(default: the origin's filename)",
        },
        {
            .name = HOSTCACHE_OPT_SSD_CREATE,
            .type = QEMU_OPT_BOOL,
            .help = "format a blank SSD tier, or one of another origin "
                    "(default on; off: the tier must exist already)",
        },
        { /* end of list */ }
    },
};

static const char *const hostcache_mutable_opts[] = {
    HOSTCACHE_OPT_MODE,
    HOSTCACHE_OPT_RAM_SIZE,
    HOSTCACHE_OPT_ADMIT_AFTER,
    HOSTCACHE_OPT_SEQ_CUTOFF,
    HOSTCACHE_OPT_MAX_DIRTY,
    HOSTCACHE_OPT_DIRTY_AGE,
    HOSTCACHE_OPT_SSD_CREATE,
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
    uint64_t block_size, admit_after, dirty_age_ms;
    const char *str;
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
    /* default: half the RAM tier, but at least one block */
    dest->max_dirty = qemu_opt_get_size(opts, HOSTCACHE_OPT_MAX_DIRTY,
                                        MAX(dest->cfg.ram_size / 2,
                                            dest->cfg.block_size));
    if (dest->max_dirty < dest->cfg.block_size ||
        dest->max_dirty > dest->cfg.ram_size) {
        error_setg(errp, "hostcache: max-dirty must be between one block "
                   "(%" PRIu32 ") and ram-size (%" PRIu64 "), not %" PRIu64,
                   dest->cfg.block_size, dest->cfg.ram_size,
                   dest->max_dirty);
        goto out;
    }
    dirty_age_ms = qemu_opt_get_number(opts, HOSTCACHE_OPT_DIRTY_AGE,
                                       HOSTCACHE_DEFAULT_DIRTY_AGE_MS);
    if (dirty_age_ms < 1 || dirty_age_ms > HOSTCACHE_MAX_DIRTY_AGE_MS) {
        error_setg(errp, "hostcache: max-dirty-age-ms must be between 1 and "
                   "%d (one hour)", HOSTCACHE_MAX_DIRTY_AGE_MS);
        goto out;
    }
    dest->dirty_age_ns = dirty_age_ms * SCALE_MS;
    str = qemu_opt_get(opts, HOSTCACHE_OPT_ORIGIN_ID);
    if (str && strlen(str) >= sizeof(dest->origin_id)) {
        error_setg(errp, "hostcache: origin-id is longer than %zu bytes",
                   sizeof(dest->origin_id) - 1);
        goto out;
    }
    pstrcpy(dest->origin_id, sizeof(dest->origin_id), str ? str : "");
    dest->ssd_create = qemu_opt_get_bool(opts, HOSTCACHE_OPT_SSD_CREATE, true);
    ok = true;
out:
    qemu_opts_del(opts);
    return ok;
}

static int GRAPH_UNLOCKED
hostcache_open(BlockDriverState *bs, QDict *options, int flags, Error **errp)
{
    ERRP_GUARD();
    BDRVHostcacheState *s = bs->opaque;
    char err[256];
    int ret;

    GLOBAL_STATE_CODE();

    /* First: attaching the child already drains us (drain_begin/end). */
    qemu_mutex_init(&s->lock);
    s->destage_width = 4;
    QSIMPLEQ_INIT(&s->demotions);
    qemu_co_mutex_init(&s->jlock);
    qemu_co_mutex_init(&s->dlock);
    s->journal = g_array_new(false, false, sizeof(HostcacheJEntry));
    s->jbusy = G_MAXUINT;
    s->jkept = g_array_new(false, false, sizeof(uint64_t));
    s->jsecs = g_new0(HostcacheSectors, 1);
    s->check_index = getenv("HOSTCACHE_CHECK_INDEX") != NULL;

    ret = bdrv_open_file_child(NULL, options, "file", bs, errp);
    if (ret < 0) {
        return ret;
    }
    if (!hostcache_absorb_opts(&s->opts, options, errp)) {
        return -EINVAL;
    }
    s->ssd = bdrv_open_child(NULL, options, "ssd", bs, &child_of_bds,
                             BDRV_CHILD_METADATA, true, errp);
    if (*errp) {
        return -EINVAL;
    }
    s->eng = hc_engine_new(&s->opts.cfg, err, sizeof(err));
    if (!s->eng) {
        error_setg(errp, "hostcache: %s", err);
        ret = -ENOMEM;
        goto fail;
    }

    bdrv_graph_rdlock_main_loop();
    bs->supported_write_flags = BDRV_REQ_WRITE_UNCHANGED |
        (BDRV_REQ_FUA & bs->file->bs->supported_write_flags);
    bs->supported_zero_flags = BDRV_REQ_WRITE_UNCHANGED |
        ((BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) &
            bs->file->bs->supported_zero_flags);
    ret = 0;
    if (s->ssd && bdrv_is_read_only(s->ssd->bs)) {
        error_setg(errp, "hostcache: the ssd node '%s' is read-only; the SSD "
                   "tier must be writable", bdrv_get_node_name(s->ssd->bs));
        ret = -EINVAL;
    } else if (s->ssd) {
        ret = bdrv_child_refresh_perms(bs, s->ssd, errp);
    }
    if (ret == 0 && s->ssd && !(flags & BDRV_O_INACTIVE)) {
        /* An inactive node (incoming migration) attaches on activation. */
        ret = hostcache_ssd_attach(bs, s->opts.mode ==
                                   HOSTCACHE_MODE_PASS_THROUGH, false, errp);
    }
    if (ret == 0 && s->ssd_idx && hc_ssd_dirty_blocks(s->ssd_idx)) {
        /* the recovered journal is written back from here: WRITE */
        info_report("hostcache '%s': recovered %" PRIu64 " blocks not yet "
                    "written back from the SSD tier's journal",
                    bdrv_get_node_name(bs), hc_ssd_dirty_blocks(s->ssd_idx));
        ret = bdrv_child_refresh_perms(bs, bs->file, errp);
    }
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        goto fail;
    }
    if (s->ssd) {
        hc_engine_set_evict_cb(s->eng, hostcache_evicted, bs);
    }

    trace_hostcache_open(bs, HostcacheMode_str(s->opts.mode),
                         s->opts.cfg.ram_size, s->opts.cfg.block_size);
    return 0;

fail:
    if (s->ssd_idx) {
        hostcache_ssd_detach(s);
    }
    hostcache_journal_free(s);
    hc_engine_free(s->eng);
    s->eng = NULL;
    if (s->ssd) {
        bdrv_graph_wrlock();
        bdrv_unref_child(bs, s->ssd);
        bdrv_graph_wrunlock();
        s->ssd = NULL;
    }
    return ret;
}

/*
 * Write every dirty block back to the origin and flush it, from outside a
 * coroutine (close, reopen, inactivate).  Returns 0 or -errno with errp set
 * when dirty data remains.
 */
typedef struct HostcacheSyncCo {
    BlockDriverState *bs;
    int ret;
    bool done;
} HostcacheSyncCo;

static int coroutine_fn GRAPH_RDLOCK
hostcache_wb_flush(BlockDriverState *bs);

/* Everything dirty, RAM and SSD, to the origin, which is flushed. */
static void coroutine_fn hostcache_sync_entry(void *opaque)
{
    HostcacheSyncCo *c = opaque;
    BDRVHostcacheState *s = c->bs->opaque;

    bdrv_graph_co_rdlock();
    c->ret = hostcache_journal_sync(c->bs);
    if (c->ret == 0 && hc_dirty_blocks(s->eng)) {
        c->ret = hostcache_wb_flush(c->bs);
    }
    bdrv_graph_co_rdunlock();
    c->done = true;
    aio_wait_kick();
}

static int GRAPH_RDLOCK hostcache_writeback_all(BlockDriverState *bs,
                                                Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheSyncCo c = { .bs = bs };
    uint64_t dirty;
    int ret;

    qemu_mutex_lock(&s->lock);
    dirty = hc_dirty_blocks(s->eng) +
        hostcache_ssd_dirty(s);
    qemu_mutex_unlock(&s->lock);
    if (!dirty) {
        return 0;
    }
    if (qemu_in_coroutine()) {
        hostcache_sync_entry(&c);
    } else {
        Coroutine *co = qemu_coroutine_create(hostcache_sync_entry, &c);

        bdrv_inc_in_flight(bs);
        aio_co_enter(bdrv_get_aio_context(bs), co);
        BDRV_POLL_WHILE(bs, !c.done);
        bdrv_dec_in_flight(bs);
    }
    ret = c.ret;
    qemu_mutex_lock(&s->lock);
    dirty = hc_dirty_blocks(s->eng) +
        hostcache_ssd_dirty(s);
    qemu_mutex_unlock(&s->lock);
    trace_hostcache_writeback_all(bs, dirty, ret);
    if (dirty) {
        ret = ret < 0 ? ret : -EIO;
        error_setg_errno(errp, -ret, "hostcache: %" PRIu64 " dirty blocks "
                         "(%" PRIu64 " bytes) could not be written back to "
                         "the origin", dirty, dirty * s->opts.cfg.block_size);
        return ret;
    }
    return 0;
}

/* Say what a close whose write-back failed leaves, and where. */
static void hostcache_close_report(BlockDriverState *bs, Error *err)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t ram, ssd;

    qemu_mutex_lock(&s->lock);
    ram = hc_dirty_blocks(s->eng);
    ssd = hostcache_ssd_dirty(s);
    qemu_mutex_unlock(&s->lock);
    if (ram) {
        error_reportf_err(err, "hostcache: closing '%s' loses data: ",
                          bdrv_get_node_name(bs));
        return;
    }
    error_reportf_err(err, "hostcache: closing '%s': %" PRIu64 " blocks stay "
                      "in the SSD tier's write-back journal and are written "
                      "back when it is opened again: ",
                      bdrv_get_node_name(bs), ssd);
}

static void hostcache_close(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    Error *local_err = NULL;
    bool failed;

    GLOBAL_STATE_CODE();

    /*
     * bdrv_close() flushed already; this only retries after a failure.
     * Close cannot fail: what remains dirty now is lost, say so loudly.
     */
    bdrv_graph_rdlock_main_loop();
    failed = hostcache_writeback_all(bs, &local_err) < 0;
    if (failed) {
        hostcache_close_report(bs, local_err);
    }
    /*
     * CLEAN says "clean copies only": never after a failed write-back,
     * whose journal the next open must find and replay (as after a crash).
     */
    if (s->ssd_idx && !s->ssd_broken && !failed &&
        !(bs->open_flags & BDRV_O_INACTIVE)) {
        hostcache_ssd_write_super(bs, HC_SSD_STATE_CLEAN, false);
    }
    bdrv_graph_rdunlock_main_loop();
    assert(!s->destager_running && !s->demoter_running);
    if (s->ssd_idx) {
        hostcache_ssd_detach(s);
    }

    hostcache_journal_free(s);
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
    if ((s->opts.mode == HOSTCACHE_MODE_WRITE_BACK &&
         (opts->mode != HOSTCACHE_MODE_WRITE_BACK ||
          opts->cfg.ram_size < s->opts.cfg.ram_size)) ||
        opts->mode == HOSTCACHE_MODE_PASS_THROUGH) {
        /*
         * Nothing dirty may be dropped by the new mode or size.
         * Pass-through drops the SSD tier, so a journal there (recovered
         * by a node opened in another mode, or left by a failed write-back)
         * goes to the origin first, whatever the old mode.
         */
        int ret;

        GRAPH_RDLOCK_GUARD_MAINLOOP();
        ret = hostcache_writeback_all(state->bs, errp);
        if (ret < 0) {
            error_prepend(errp, "cannot reopen: ");
            g_free(opts);
            return ret;
        }
    }
    if (strcmp(opts->origin_id, s->opts.origin_id)) {
        error_setg(errp, "hostcache: origin-id cannot be changed on an open "
                   "node ('%s' -> '%s'); remove the node and add it again",
                   s->opts.origin_id, opts->origin_id);
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

    if (s->ssd_idx && !s->ssd_broken) {
        GRAPH_RDLOCK_GUARD_MAINLOOP();

        if (opts->mode == HOSTCACHE_MODE_PASS_THROUGH && s->ssd_on) {
            s->ssd_on = false;
            if (hostcache_ssd_write_super(state->bs, HC_SSD_STATE_OPEN,
                                          true) < 0) {
                error_report("hostcache '%s': the SSD tier could not be "
                             "dropped and may go stale; zero its first 8 KiB "
                             "before using it again",
                             bdrv_get_node_name(state->bs));
            }
        } else if (opts->mode != HOSTCACHE_MODE_PASS_THROUGH) {
            s->ssd_on = !s->ssd_broken;
        }
    }
    /* blocks a shrink evicted are demoted by drain_end, not here (drained) */

    trace_hostcache_reopen(state->bs, HostcacheMode_str(s->opts.mode),
                           s->opts.cfg.ram_size);
    hostcache_wake_destager(state->bs);     /* re-read the bounds */
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

/*
 * SSD tier
 * --------
 * Clean blocks evicted from RAM are written ("demoted") to the ssd child in
 * the background and found there again on a RAM miss ("promoted" back).
 * The slot table is persistent (hc-ssd.c, docs/SSD-FORMAT.md), so a restart
 * after a clean close or a crash serves what is there; every slot read is
 * checked against its CRC.  A block's SSD entry is dropped, durably (FUA),
 * before the block changes on the origin or becomes dirty in RAM.
 */

/* Flush the origin; on success every origin write before it is durable. */
static int coroutine_fn GRAPH_RDLOCK hostcache_origin_flush(BlockDriverState *bs)
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

/* Report an SSD I/O error once and stop using the tier (lock held). */
static void hostcache_ssd_fail_locked(BlockDriverState *bs, int ret,
                                      const char *what)
{
    BDRVHostcacheState *s = bs->opaque;

    hc_engine_stats(s->eng)->ssd_errors++;
    if (!s->ssd_broken) {
        /* Its entries may go stale from now on: drop them (see forget). */
        s->ssd_drop_pending = true;
        error_report("hostcache '%s': %s on the SSD tier failed (%s); "
                     "continuing with the RAM tier only",
                     bdrv_get_node_name(bs), what, strerror(-ret));
    }
    s->ssd_broken = true;
    s->ssd_on = false;
}

/* Sector sec is durable with generation gen (lock held). */
static void hostcache_ssd_durable_locked(BDRVHostcacheState *s, uint64_t sec,
                                         uint64_t gen)
{
    hc_ssd_sector_written(s->ssd_idx, sec, gen);
    for (guint i = 0; i < s->ssd_pending->len;) {
        HostcachePendingDrop *p =
            &g_array_index(s->ssd_pending, HostcachePendingDrop, i);

        if (p->sec == sec && p->gen <= gen) {
            g_array_remove_index_fast(s->ssd_pending, i);
        } else {
            i++;
        }
    }
}

/*
 * An SSD flush that started when n sector writes were waiting for one has
 * completed: those are durable now (lock held).
 */
static void hostcache_ssd_flushed_locked(BDRVHostcacheState *s, guint n)
{
    n = MIN(n, s->ssd_unflushed->len);
    for (guint i = 0; i < n; i++) {
        HostcachePendingDrop *p =
            &g_array_index(s->ssd_unflushed, HostcachePendingDrop, i);

        hostcache_ssd_durable_locked(s, p->sec, p->gen);
    }
    g_array_remove_range(s->ssd_unflushed, 0, n);
}

/*
 * Flush the SSD; sector writes before it become durable.  In or out of a
 * coroutine (bdrv_flush() is mixed).
 */
static int GRAPH_RDLOCK hostcache_ssd_flush(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    guint n;
    int ret;

    qemu_mutex_lock(&s->lock);
    n = s->ssd_unflushed ? s->ssd_unflushed->len : 0;
    qemu_mutex_unlock(&s->lock);
    ret = bdrv_flush(s->ssd->bs);
    if (ret == 0) {
        qemu_mutex_lock(&s->lock);
        if (n) {
            hostcache_ssd_flushed_locked(s, n);
        }
        s->ssd_flush_ns = get_clock();
        qemu_mutex_unlock(&s->lock);
    }
    return ret;
}

/* Write slot-table sector sec (FUA) unless the device already has it. */
static int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_write_sector(BlockDriverState *bs, uint64_t sec,
                           BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = NULL;

    for (;;) {
        uint64_t gen;
        int ret;

        qemu_mutex_lock(&s->lock);
        gen = hc_ssd_sector_gen(s->ssd_idx, sec);
        if (!s->ssd_on || hc_ssd_sector_disk_gen(s->ssd_idx, sec) >= gen) {
            qemu_mutex_unlock(&s->lock);
            return 0;
        }
        if (test_bit(sec, s->ssd_sec_busy)) {
            qemu_mutex_unlock(&s->lock);
            qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 50 * SCALE_US);
            continue;
        }
        set_bit(sec, s->ssd_sec_busy);
        if (!buf) {
            buf = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SECTOR);
        }
        hc_ssd_encode_sector(s->ssd_idx, sec, buf);
        qemu_mutex_unlock(&s->lock);

        ret = bdrv_co_pwrite(s->ssd, hc_ssd_sector_offset(s->ssd_idx, sec),
                             HC_SSD_SECTOR, buf, flags);

        qemu_mutex_lock(&s->lock);
        clear_bit(sec, s->ssd_sec_busy);
        if (ret == 0 && !(flags & BDRV_REQ_FUA)) {
            /* durable after the next flush (hostcache_ssd_flushed) */
            g_array_append_vals(s->ssd_unflushed,
                                &(HostcachePendingDrop) { 0, sec, gen }, 1);
            qemu_mutex_unlock(&s->lock);
            return 0;
        } else if (ret == 0) {
            hostcache_ssd_durable_locked(s, sec, gen);
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
static int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_persist(BlockDriverState *bs, uint64_t sec)
{
    return hostcache_ssd_write_sector(bs, sec, BDRV_REQ_FUA);
}

static void hostcache_note_sector(void *opaque, uint64_t sec)
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

static int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_write_sectors(BlockDriverState *bs, HostcacheSectors *l,
                            BdrvRequestFlags flags)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t n = l->overflow ? hc_ssd_sectors(s->ssd_idx) : l->n;

    for (uint64_t i = 0; i < n; i++) {
        int ret = hostcache_ssd_write_sector(bs, l->overflow ? i : l->sec[i],
                                             flags);

        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_persist_all(BlockDriverState *bs, HostcacheSectors *l)
{
    return hostcache_ssd_write_sectors(bs, l, BDRV_REQ_FUA);
}

/* Remember that blk's entry is dropped in memory, in sector sec (locked). */
static void hostcache_pending_add(BDRVHostcacheState *s, uint64_t blk,
                                  uint64_t sec)
{
    HostcachePendingDrop p = {
        blk, sec, hc_ssd_sector_gen(s->ssd_idx, sec)
    };

    g_array_append_val(s->ssd_pending, p);
}

/* Note the sectors of pending drops of blocks in [first, end) (locked). */
static void hostcache_pending_sectors(BDRVHostcacheState *s, uint64_t first,
                                      uint64_t end, HostcacheSectors *l)
{
    for (guint i = 0; i < s->ssd_pending->len; i++) {
        HostcachePendingDrop *p =
            &g_array_index(s->ssd_pending, HostcachePendingDrop, i);

        if (p->blk >= first && p->blk < end) {
            hostcache_note_sector(l, p->sec);
        }
    }
}

/*
 * Durably forget the SSD copies of blocks [first, end) before they change
 * on the origin: drop their entries and persist those sectors, and those of
 * earlier drops of these blocks still in flight (a CLOCK victim, a block
 * made dirty).  After an SSD error the whole tier is dropped first.
 */
static void coroutine_fn GRAPH_RDLOCK
hostcache_ssd_forget(BlockDriverState *bs, uint64_t first, uint64_t end)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheSectors l = { .n = 0 };

    if (!s->ssd_idx) {
        return;
    }
    while (s->ssd_dropping) {
        /* another request drops the whole tier: wait until it is done */
        qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 100 * SCALE_US);
    }
    if (!s->ssd_drop_pending) {
        qemu_mutex_lock(&s->lock);
        if (s->ssd_on) {
            hc_ssd_invalidate_range(s->ssd_idx, first, end,
                                    hostcache_note_sector, &l);
        }
        hostcache_pending_sectors(s, first, end, &l);
        qemu_mutex_unlock(&s->lock);
        if (hostcache_ssd_persist_all(bs, &l) == 0 || !s->ssd_drop_pending) {
            return;
        }
        /* the SSD failed just now: drop everything instead */
    }
    if (hostcache_ssd_dirty(s) && hostcache_journal_sync(bs) < 0) {
        /* journaled blocks the origin lacks: keep them, do not drop */
        return;
    }
    s->ssd_dropping = true;
    if (hostcache_ssd_write_super(bs, HC_SSD_STATE_OPEN, true) < 0) {
        error_report("hostcache '%s': the SSD tier may now hold stale "
                     "copies; zero its first 8 KiB before using it again",
                     bdrv_get_node_name(bs));
    }
    s->ssd_drop_pending = false;
    s->ssd_dropping = false;
}

/* Drop blk's SSD copy in memory (lock held); note the sector to persist. */
static void hostcache_ssd_drop_locked(BDRVHostcacheState *s, uint64_t blk,
                                      HostcacheSectors *l)
{
    uint64_t sec;

    if (s->opts.mode == HOSTCACHE_MODE_WRITE_BACK && s->ssd_on) {
        /*
         * Journal mode: the entry stays until a journaled newer copy
         * replaces it; the block never reaches the origin from RAM.
         */
        return;
    }

    if (s->ssd_on && (sec = hc_ssd_invalidate(s->ssd_idx, blk)) !=
        HC_SSD_NONE) {
        hostcache_note_sector(l, sec);
        hostcache_pending_add(s, blk, sec);    /* until persisted */
    }
}

/* Engine eviction hook (lock held): queue a clean block for the SSD. */
static void hostcache_evicted(void *opaque, uint64_t blk, const void *data)
{
    BlockDriverState *bs = opaque;
    BDRVHostcacheState *s = bs->opaque;
    HostcacheDemotion *d;

    if (!s->ssd_on || s->ndemotions >= HOSTCACHE_DEMOTE_MAX ||
        hc_ssd_lookup(s->ssd_idx, blk, NULL) != HC_SSD_NONE) {
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
    QSIMPLEQ_INSERT_TAIL(&s->demotions, d, next);
    s->ndemotions++;
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
    slot = s->ssd_on ? hc_ssd_alloc(s->ssd_idx, &victim) : HC_SSD_NONE;
    if (slot != HC_SSD_NONE && victim != HC_SSD_NONE) {
        /* the victim's entry stays on the device until its sector is
         * written: a write of that block must wait for it (forget) */
        hostcache_pending_add(s, victim, hc_ssd_sector_of(slot));
        hostcache_note_sector(secs, hc_ssd_sector_of(slot));
    }
    qemu_mutex_unlock(&s->lock);
    if (slot != HC_SSD_NONE) {
        crc = hc_crc32c(0, d->buf, bsize);
        ret = bdrv_co_pwrite(s->ssd, hc_ssd_data_offset(s->ssd_idx, slot),
                             bsize, d->buf, 0);
    }

    qemu_mutex_lock(&s->lock);
    valid = hc_op_end(s->eng, &d->op);
    if (slot != HC_SSD_NONE) {
        if (ret == 0 && valid && s->ssd_on) {
            uint64_t old_sec;

            hostcache_note_sector(secs, hc_ssd_commit(s->ssd_idx, slot,
                                                      d->blk, crc, &old_sec));
            if (old_sec != HC_SSD_NONE) {
                /* the block's older slot stays valid on the device until
                 * its sector is written, like a CLOCK victim's */
                hostcache_pending_add(s, d->blk, old_sec);
                hostcache_note_sector(secs, old_sec);
            }
            hc_engine_stats(s->eng)->ssd_demotions++;
        } else {
            hc_ssd_release(s->ssd_idx, slot);
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
               (d = QSIMPLEQ_FIRST(&s->demotions))) {
            QSIMPLEQ_REMOVE_HEAD(&s->demotions, next);
            s->ndemotions--;
            batch[n++] = d;
        }
        if (!n) {
            s->demoter_running = false;
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

static void hostcache_kick_demoter(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    Coroutine *co;

    qemu_mutex_lock(&s->lock);
    if (s->demoter_running || s->quiesced || QSIMPLEQ_EMPTY(&s->demotions)) {
        qemu_mutex_unlock(&s->lock);
        return;
    }
    s->demoter_running = true;
    qemu_mutex_unlock(&s->lock);
    bdrv_inc_in_flight(bs);
    co = qemu_coroutine_create(hostcache_demoter, bs);
    aio_co_enter(bdrv_get_aio_context(bs), co);
}

/* Drop queued demotions (lock held): the SSD tier is going away. */
static void hostcache_demotions_drop(BDRVHostcacheState *s)
{
    HostcacheDemotion *d;

    while ((d = QSIMPLEQ_FIRST(&s->demotions))) {
        QSIMPLEQ_REMOVE_HEAD(&s->demotions, next);
        hc_op_end(s->eng, &d->op);
        hostcache_demotion_free(d);
    }
    s->ndemotions = 0;
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
    uint8_t *buf = qemu_try_blockalign(s->ssd->bs, bsize);
    uint64_t bad_sec = HC_SSD_NONE;
    bool ok = false, valid;
    int ret = -ENOMEM;

    if (buf) {
        ret = bdrv_co_pread(s->ssd, hc_ssd_data_offset(s->ssd_idx, slot),
                            bsize, buf, 0);
        ok = ret == 0 && hc_crc32c(0, buf, bsize) == crc;
    }

    qemu_mutex_lock(&s->lock);
    hc_ssd_unpin(s->ssd_idx, slot);
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
        if (hc_ssd_lookup(s->ssd_idx, blk, NULL) == slot) {
            bad_sec = hc_ssd_invalidate(s->ssd_idx, blk);
            hostcache_pending_add(s, blk, bad_sec);
        }
    }
    if (ok) {
        HcStats *st = hc_engine_stats(s->eng);
        void *ram;

        st->ssd_hits++;
        st->ssd_hit_bytes += n;
        if (valid && !bypass && (ram = hc_insert(s->eng, blk))) {
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

/* May blk be on the SSD tier (lock held)?  Dirty entries count always. */
static inline bool hostcache_ssd_usable(BDRVHostcacheState *s)
{
    return s->ssd_idx && (s->ssd_on || hc_ssd_dirty_blocks(s->ssd_idx));
}

/*
 * Write the superblock (the copy its new generation selects) and flush the
 * SSD.  With drop, every entry is dropped by moving to a new cache
 * generation.
 */
static int GRAPH_RDLOCK
hostcache_ssd_write_super(BlockDriverState *bs, uint32_t state, bool drop)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree uint8_t *buf = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SB_SIZE);
    HcSsdSuper *sb;
    int ret = 0;

    qemu_mutex_lock(&s->lock);
    sb = hc_ssd_super_mut(s->ssd_idx);
    if (drop) {
        sb->cache_gen++;
        hc_ssd_invalidate_all(s->ssd_idx);
        hostcache_demotions_drop(s);
    }
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
        ret = bdrv_pwrite(s->ssd, (gen % 2) * HC_SSD_SB_SIZE, HC_SSD_SB_SIZE,
                          buf, 0);
    }
    if (ret == 0) {
        ret = hostcache_ssd_flush(bs);
    }
    qemu_mutex_lock(&s->lock);
    if (ret < 0) {
        hostcache_ssd_fail_locked(bs, ret, "writing the superblock");
    } else if (drop) {
        g_array_set_size(s->ssd_pending, 0);    /* all dropped for good */
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

    ret = bdrv_pwrite_zeroes(s->ssd, sb->meta_offset,
                             sb->data_offset - sb->meta_offset, 0);
    for (int i = 0; i < 2 && ret == 0; i++) {
        sb->generation++;
        hc_ssd_super_encode(sb, buf);
        ret = bdrv_pwrite(s->ssd, (sb->generation % 2) * HC_SSD_SB_SIZE,
                          HC_SSD_SB_SIZE, buf, 0);
    }
    if (ret == 0) {
        ret = bdrv_flush(s->ssd->bs);
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

        ret = bdrv_pread(s->ssd, sb->meta_offset + off, len, buf, 0);
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
            ret = bdrv_pread(s->ssd, sb->data_offset + slot * sb->block_size,
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

/* Queue the dirty entries of a recovered tier, oldest first (lock held). */
static gint hostcache_jentry_cmp(gconstpointer a, gconstpointer b)
{
    const HostcacheJEntry *x = a, *y = b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void hostcache_journal_rebuild(BDRVHostcacheState *s)
{
    g_array_set_size(s->journal, 0);
    s->jhead = 0;
    for (uint64_t slot = hc_ssd_next_dirty(s->ssd_idx, 0);
         slot != HC_SSD_NONE;
         slot = hc_ssd_next_dirty(s->ssd_idx, slot + 1)) {
        HostcacheJEntry e = { .slot = slot, .recovered = true };

        hc_ssd_slot_blk(s->ssd_idx, slot, &e.seq, NULL);
        g_array_append_val(s->journal, e);
    }
    g_array_sort(s->journal, hostcache_jentry_cmp);
}

/*
 * Read the superblock and decide (hc_ssd_plan_open, hc_ssd_plan_loaded)
 * what becomes of the tier: *sb and s->ssd_idx are set for KEEP (the
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
        bdrv_pread(s->ssd, 0, 2 * HC_SSD_SB_SIZE, buf, 0);
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
        s->ssd_idx = hostcache_ssd_load(bs, sb, errp);
        if (!s->ssd_idx) {
            return HC_SSD_PLAN_REFUSE;
        }
        plan = hc_ssd_plan_loaded(sb, why, hc_ssd_dirty_blocks(s->ssd_idx),
                                  hc_ssd_damaged(s->ssd_idx), o, err,
                                  sizeof(err));
        if (plan != HC_SSD_PLAN_REFUSE && hc_ssd_damaged(s->ssd_idx)) {
            warn_report("hostcache: %" PRIu64 " damaged entries in the SSD "
                        "tier's slot table (clean copies: treated as misses)",
                        hc_ssd_damaged(s->ssd_idx));
        }
        if (plan != HC_SSD_PLAN_KEEP) {
            hc_ssd_free(s->ssd_idx);
            s->ssd_idx = NULL;
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

    for (uint64_t sec = hc_ssd_next_unwritten(s->ssd_idx, 0);
         sec != HC_SSD_NONE; sec = hc_ssd_next_unwritten(s->ssd_idx, sec + 1)) {
        int ret;

        hc_ssd_encode_sector(s->ssd_idx, sec, buf);
        ret = bdrv_pwrite(s->ssd, hc_ssd_sector_offset(s->ssd_idx, sec),
                          HC_SSD_SECTOR, buf, BDRV_REQ_FUA);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "hostcache: cannot write the SSD "
                             "tier's slot table");
            return ret;
        }
        hc_ssd_sector_written(s->ssd_idx, sec,
                              hc_ssd_sector_gen(s->ssd_idx, sec));
    }
    return 0;
}

/*
 * Attach the SSD tier: recover it, or format it when blank or when its clean
 * content belongs elsewhere (another origin, block size...).  Marks it in use
 * (state OPEN).  With drop, its content is dropped (pass-through, or the
 * origin may have changed: migration).
 */
static int GRAPH_RDLOCK hostcache_ssd_attach(BlockDriverState *bs, bool drop,
                                             bool activation, Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    HcSsdOpen o = {
        .block_size = s->opts.cfg.block_size,
        .origin_id = s->opts.origin_id[0] ? s->opts.origin_id :
                     bs->file->bs->filename,
        .node_name = bdrv_get_node_name(s->ssd->bs),
        .ssd_create = s->opts.ssd_create,
        .activation = activation,
        .drop = drop,
        .read_only = bdrv_is_read_only(bs),
    };
    int64_t dev_size = bdrv_getlength(s->ssd->bs);
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
    plan = hostcache_ssd_plan(bs, &o, &sb, errp);
    if (plan == HC_SSD_PLAN_REFUSE) {
        return -EINVAL;
    }
    if (plan == HC_SSD_PLAN_FORMAT) {
        ret = hostcache_ssd_format(bs, &sb, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (!s->ssd_idx) {
        /* just formatted, or its content is dropped: empty */
        s->ssd_idx = hc_ssd_new(&sb);
        if (!s->ssd_idx) {
            error_setg(errp, "hostcache: cannot allocate the SSD tier's "
                       "index");
            return -ENOMEM;
        }
        hc_ssd_load_done(s->ssd_idx);
    }
    hc_ssd_super_mut(s->ssd_idx)->version = HC_SSD_VERSION;
    s->ssd_sec_busy = bitmap_new(hc_ssd_sectors(s->ssd_idx));
    s->ssd_pending = g_array_new(false, false, sizeof(HostcachePendingDrop));
    s->ssd_unflushed = g_array_new(false, false,
                                   sizeof(HostcachePendingDrop));
    hostcache_journal_rebuild(s);
    ret = hostcache_ssd_write_dropped(bs, errp);
    if (ret < 0) {
        return ret;
    }
    s->ssd_on = true;
    ret = hostcache_ssd_write_super(bs, HC_SSD_STATE_OPEN, drop);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "hostcache: cannot write the SSD tier's "
                         "superblock");
        return ret;
    }
    s->ssd_on = s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;
    return 0;
}

static void hostcache_journal_free(BDRVHostcacheState *s)
{
    if (s->journal) {
        g_array_free(s->journal, true);
        g_array_free(s->jkept, true);
        g_free(s->jsecs);
        s->journal = s->jkept = NULL;
        s->jsecs = NULL;
    }
}

/* Forget the SSD tier's in-memory state (the device is left as it is). */
static void hostcache_ssd_detach(BDRVHostcacheState *s)
{
    g_array_set_size(s->journal, 0);
    g_array_set_size(s->jkept, 0);
    s->jhead = 0;
    s->jbusy = G_MAXUINT;
    s->ssd_on = false;
    hostcache_demotions_drop(s);
    hc_ssd_free(s->ssd_idx);
    s->ssd_idx = NULL;
    g_free(s->ssd_sec_busy);
    s->ssd_sec_busy = NULL;
    if (s->ssd_pending) {
        g_array_free(s->ssd_pending, true);
        s->ssd_pending = NULL;
        g_array_free(s->ssd_unflushed, true);
        s->ssd_unflushed = NULL;
    }
}

/*
 * Read path, lock held on entry and on return: serve block blk (the guest
 * wants [pos, min(end of blk, end_off))) from the SSD tier if it is there.
 * Returns 1 with *n set if served; 0 to fall back to the origin; -EIO if
 * the block is dirty there and cannot be read.
 */
static int coroutine_fn GRAPH_RDLOCK
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
    slot = hc_ssd_lookup(s->ssd_idx, blk, &crc);
    if (slot == HC_SSD_NONE) {
        return 0;
    }
    hc_ssd_slot_blk(s->ssd_idx, slot, &seq, NULL);
    dirty = hc_ssd_is_dirty(s->ssd_idx, slot, seq);
    if (!s->ssd_on && !dirty) {
        return 0;
    }
    *n = MIN((int64_t)((blk + 1) * bsize), end_off) - pos;
    hc_ssd_pin(s->ssd_idx, slot);
    hc_op_fill_begin(s->eng, &op, blk, blk + 1);
    qemu_mutex_unlock(&s->lock);
    served = hostcache_ssd_read(bs, blk, slot, crc, dirty, &op, pos, *n,
                                qiov, qiov_offset, bypass);
    qemu_mutex_lock(&s->lock);
    return served;
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
                 hc_ssd_lookup(s->ssd_idx, run_end, NULL) != HC_SSD_NONE)) {
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
 * Write-back
 * ----------
 * hostcache_destage_some() writes queued dirty blocks to the origin,
 * oldest first, a few at a time.  The background destager calls it when
 * dirty data passes half of max-dirty or gets older than max-dirty-age-ms;
 * a flush calls it for everything written before the flush; a writer over
 * max-dirty calls it to make room.
 */
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
static void hostcache_pace_locked(BDRVHostcacheState *s, int ret, uint64_t ns)
{
    if (ret == 0 && (!s->destage_lat_floor || ns < s->destage_lat_floor)) {
        s->destage_lat_floor = ns;
    }
    if (ret == 0 && ns <= s->destage_lat_floor * 3 / 2 + 50 * SCALE_US) {
        s->destage_width = MIN(s->destage_width + 1,
                               HOSTCACHE_DESTAGE_WIDTH_MAX);
    } else {
        s->destage_width = MAX(s->destage_width / 2, 1);
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

    /* The SSD's old copy must be gone for good before the origin changes
     * (the write that made the block dirty dropped it in memory only). */
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
    }
    hostcache_pace_locked(s, ret, ns);
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

    while (started < limit && aio_task_pool_status(pool) == 0 &&
           !(stop && qatomic_read(stop))) {
        HostcacheDestageTask *t = g_new0(HostcacheDestageTask, 1);
        const void *data;

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
static int coroutine_fn GRAPH_RDLOCK
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
            qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 200 * SCALE_US);
        }
    }
    if (ret == 0) {
        ret = hostcache_origin_flush(bs);
    }
    trace_hostcache_flush(bs, upto, ret);
    return ret;
}

/*
 * Write-back journal on the SSD tier
 * ----------------------------------
 * With an SSD tier in write-back mode, dirty blocks are "journaled": each
 * is written to a free SSD slot as a dirty entry with a new sequence
 * number, then the slot-table sectors and the superblock (which records
 * the sequence made durable by the previous flush), then the SSD is
 * flushed.  A guest flush is complete at that point, without waiting for
 * the origin.  The block's older entry (clean or dirty) stays on the device
 * until the new one is durable.  The destager then writes journaled blocks
 * to the origin in journal order, flushes the origin, and turns their
 * entries clean (they stay as cached copies).  Recovery writes back what a
 * crash left dirty (hostcache_ssd_replay).
 */

/* Free an older entry of a block (lock held); its sector goes to l. */
static void hostcache_release_kept_locked(BDRVHostcacheState *s,
                                          uint64_t kept, HostcacheSectors *l)
{
    uint64_t blk = hc_ssd_slot_blk(s->ssd_idx, kept, NULL, NULL);
    uint64_t sec = hc_ssd_release_kept(s->ssd_idx, kept);

    hostcache_note_sector(l, sec);
    hostcache_pending_add(s, blk, sec);
}

/* One write of a journal batch: a block's data, a table sector, or the
 * superblock. */
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
    return bdrv_co_pwrite(s->ssd, t->off, t->len, t->buf, 0);
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

/* The superblock's durable seq may lag this much behind (it only tells a
 * torn unflushed write from lost flushed data at recovery). */
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
    s->jsecs->n = 0;
    s->jsecs->overflow = false;
    s->jsecs_ns = now;
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
    uint64_t bsize = hostcache_bsize(s), top = 0, n = 0, i;
    uint64_t max = MAX(MIN(MIN(limit, 256), 16 * MiB / bsize), 1);
    g_autofree HcDestage *d = g_new0(HcDestage, max);
    g_autofree uint64_t *slot = g_new(uint64_t, max);
    g_autofree void **buf = g_new0(void *, max);
    g_autofree uint8_t *sb = NULL;
    HostcacheSectors secs = { .n = 0 };
    AioTaskPool *pool;
    int64_t now = get_clock();
    bool released;
    int ret = 0;

    qemu_mutex_lock(&s->lock);
    /* the destager must not pass entries whose data is still in flight */
    s->jbusy = s->journal->len;
    while (n < max && s->ssd_on) {
        uint64_t victim = HC_SSD_NONE, kept, seq;
        const void *data = hc_destage_begin(s->eng, &d[n], max_seq);

        if (!data) {
            break;
        }
        slot[n] = hc_ssd_alloc(s->ssd_idx, &victim);
        if (slot[n] == HC_SSD_NONE) {
            hc_destage_end(s->eng, &d[n], false);
            ret = -ENOSPC;
            break;
        }
        if (victim != HC_SSD_NONE) {
            hostcache_pending_add(s, victim, hc_ssd_sector_of(slot[n]));
        }
        buf[n] = qemu_try_blockalign(s->ssd->bs, bsize);
        if (!buf[n]) {
            hc_ssd_release(s->ssd_idx, slot[n]);
            hc_destage_end(s->eng, &d[n], false);
            ret = -ENOMEM;
            break;
        }
        memcpy(buf[n], data, bsize);
        seq = top = hc_ssd_next_seq(s->ssd_idx);
        hostcache_note_sector(&secs,
                              hc_ssd_commit_dirty(s->ssd_idx, slot[n],
                                                  d[n].blk, seq,
                                                  hc_crc32c(0, buf[n], bsize),
                                                  &kept));
        if (kept != HC_SSD_NONE) {
            g_array_append_val(s->jkept, kept);
        }
        g_array_append_vals(s->journal,
                            &(HostcacheJEntry) { slot[n], seq, now }, 1);
        n++;
    }
    if (n && now - s->jsuper_ns >= HOSTCACHE_JSUPER_NS) {
        uint64_t gen = ++hc_ssd_super_mut(s->ssd_idx)->generation;

        sb = qemu_memalign(HC_SSD_SECTOR, HC_SSD_SB_SIZE);
        hc_ssd_super_encode(hc_ssd_super(s->ssd_idx), sb);
        s->jsuper_ns = now;
        s->jsuper_off = (gen % 2) * HC_SSD_SB_SIZE;
    }
    released = s->jsecs->overflow || (s->jsecs->n &&
                                      now - s->jsecs_ns >= HOSTCACHE_JRELEASE_NS);
    qemu_mutex_unlock(&s->lock);
    if (!n) {
        qemu_mutex_lock(&s->lock);
        s->jbusy = G_MAXUINT;
        qemu_mutex_unlock(&s->lock);
        return ret;
    }

    /* Everything at once, then one flush. */
    pool = aio_task_pool_new(HOSTCACHE_FLUSH_WIDTH * 2);
    for (i = 0; i < n; i++) {
        hostcache_jwrite_start(pool, bs,
                               hc_ssd_data_offset(s->ssd_idx, slot[i]),
                               HC_SSD_NONE, bsize, buf[i]);
    }
    for (i = 0; i < (uint64_t)secs.n; i++) {
        hostcache_jwrite_start(pool, bs, 0, secs.sec[i], 0, NULL);
    }
    for (i = 0; released && i < (uint64_t)s->jsecs->n; i++) {
        hostcache_jwrite_start(pool, bs, 0, s->jsecs->sec[i], 0, NULL);
    }
    if (sb) {
        hostcache_jwrite_start(pool, bs, s->jsuper_off, HC_SSD_NONE,
                               HC_SSD_SB_SIZE, sb);
    }
    aio_task_pool_wait_all(pool);
    ret = aio_task_pool_status(pool);
    aio_task_pool_free(pool);
    if (ret == 0 && secs.overflow) {
        ret = hostcache_ssd_write_sectors(bs, &secs, 0);
    }
    if (ret == 0 && released && s->jsecs->overflow) {
        ret = hostcache_ssd_write_sectors(bs, s->jsecs, 0);
    }
    if (ret == 0 && released) {
        hostcache_jsecs_written(s, now);
    }
    if (ret == 0) {
        ret = hostcache_ssd_flush(bs);
    }

    qemu_mutex_lock(&s->lock);
    for (i = 0; i < n; i++) {
        hc_destage_end(s->eng, &d[i], ret == 0);
        if (ret < 0 && hc_ssd_lookup(s->ssd_idx, d[i].blk, NULL) == slot[i]) {
            hc_ssd_invalidate(s->ssd_idx, d[i].blk);   /* RAM has it */
        }
        qemu_vfree(buf[i]);
    }
    if (ret < 0) {
        hostcache_ssd_fail_locked(bs, ret, "writing the journal");
    } else {
        /* Durable now: a later superblock says so; older copies go. */
        hc_ssd_super_mut(s->ssd_idx)->durable_seq = top;
    }
    for (i = 0; i < s->jkept->len; i++) {
        uint64_t kept = g_array_index(s->jkept, uint64_t, i);
        bool dirty;

        /* (the destager may have released a dirty one meanwhile) */
        if (hc_ssd_is_kept(s->ssd_idx, kept, &dirty) && !dirty) {
            hostcache_release_kept_locked(s, kept, s->jsecs);
        }
        /*
         * An older version not yet on the origin stays until the destager
         * has written it, in journal order: the origin goes through every
         * flush epoch, so by itself it is always a point in time.
         */
    }
    g_array_set_size(s->jkept, 0);
    s->jbusy = G_MAXUINT;
    hostcache_check_locked(s, "a journal batch");
    qemu_mutex_unlock(&s->lock);
    return ret < 0 ? ret : (int64_t)n;
}

static int64_t coroutine_fn GRAPH_RDLOCK
hostcache_jdestage_some(BlockDriverState *bs, uint64_t limit);
static void hostcache_kick_destager(BlockDriverState *bs);

/*
 * Journal every dirty block with seq <= upto (at most limit blocks when
 * limit is not UINT64_MAX) and flush the SSD; with flush, also flush the
 * origin if direct writes reached it since its last flush.  This is a
 * guest flush in journal mode.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_journal(BlockDriverState *bs, uint64_t upto, uint64_t limit,
                  bool flush)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t done = 0;
    bool pending, origin;
    int ret = 0;

    qemu_co_mutex_lock(&s->jlock);
    for (;;) {
        int64_t n = hostcache_journal_some(bs, upto, MIN(limit - done, 256));

        if (n == -ENOSPC) {
            /*
             * Every slot dirty or guarded: the released older entries go to
             * the device (clearing the guards), and the origin takes some
             * of the journal, so that its slots can be reused.
             */
            n = hostcache_ssd_write_sectors(bs, s->jsecs, 0);
            hostcache_jsecs_written(s, get_clock());
            if (n == 0) {
                n = hostcache_ssd_flush(bs);
            }
            if (n == 0) {
                n = hostcache_jdestage_some(bs, 64);
            }
            if (n == 0) {
                qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, SCALE_MS);
            }
        } else if (n > 0) {
            done += n;
        }
        if (n < 0) {
            ret = n;
            break;
        }
        qemu_mutex_lock(&s->lock);
        pending = s->ssd_on && hc_dirty_pending_upto(s->eng, upto);
        qemu_mutex_unlock(&s->lock);
        if (!pending || done >= limit) {
            break;
        }
        if (n == 0) {
            /* in flight elsewhere, or behind a direct request */
            qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 200 * SCALE_US);
        }
    }
    origin = flush && qatomic_read(&s->origin_wgen) !=
        qatomic_read(&s->origin_fgen);
    if (ret == 0 && origin) {
        ret = hostcache_origin_flush(bs);
    }
    qemu_co_mutex_unlock(&s->jlock);
    trace_hostcache_flush(bs, upto, ret);
    if (done) {
        hostcache_kick_destager(bs);    /* the journal goes to the origin */
    }
    return ret;
}

typedef struct HostcacheJDestageTask {
    AioTask task;               /* first: aio_task_co() g_free()s the task */
    BlockDriverState *bs;
    HostcacheJEntry e;
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
    blk = hc_ssd_slot_blk(s->ssd_idx, t->e.slot, NULL, &crc);
    /*
     * The newest version whose block is clean in RAM: RAM holds the same
     * data (journaled from there, or promoted from this slot); no read.
     */
    ram = !hc_ssd_is_kept(s->ssd_idx, t->e.slot, NULL) &&
        !hc_is_dirty(s->eng, blk) ? hc_lookup(s->eng, blk, false) : NULL;
    if (ram) {
        memcpy(buf, ram, bsize);
    }
    qemu_mutex_unlock(&s->lock);
    ret = 0;
    ok = ram && hc_crc32c(0, buf, bsize) == crc;
    if (!ok) {
        ret = bdrv_co_pread(s->ssd, hc_ssd_data_offset(s->ssd_idx, t->e.slot),
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
 * written again later).
 */
static int64_t coroutine_fn GRAPH_RDLOCK
hostcache_jdestage_some(BlockDriverState *bs, uint64_t limit)
{
    BDRVHostcacheState *s = bs->opaque;
    g_autofree HostcacheJEntry *batch = NULL;
    HostcacheSectors secs = { .n = 0 };
    AioTaskPool *pool;
    guint i, pos;
    uint64_t n = 0;
    int ret;

    qemu_co_mutex_lock(&s->dlock);
    qemu_mutex_lock(&s->lock);
    batch = g_new(HostcacheJEntry, MIN(limit, s->journal->len + 1));
    for (pos = s->jhead; pos < MIN(s->journal->len, s->jbusy) && n < limit;
         pos++) {
        HostcacheJEntry e = g_array_index(s->journal, HostcacheJEntry, pos);
        uint64_t blk = hc_ssd_slot_blk(s->ssd_idx, e.slot, NULL, NULL);
        bool again = false;

        if (!hc_ssd_is_dirty(s->ssd_idx, e.slot, e.seq)) {
            continue;
        }
        /*
         * The batch's writes run in parallel: a second version of a block
         * waits for the next batch, or the older might land last.
         */
        for (uint64_t j = 0; j < n && !again; j++) {
            again = hc_ssd_slot_blk(s->ssd_idx, batch[j].slot, NULL,
                                    NULL) == blk;
        }
        if (again) {
            break;
        }
        hc_ssd_pin(s->ssd_idx, e.slot);
        batch[n++] = e;
    }
    pool = aio_task_pool_new(MAX(s->destage_width, 1));
    qemu_mutex_unlock(&s->lock);

    for (i = 0; i < n && aio_task_pool_status(pool) == 0; i++) {
        HostcacheJDestageTask *t = g_new0(HostcacheJDestageTask, 1);

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
        hc_ssd_unpin(s->ssd_idx, batch[i].slot);
        if (ret == 0) {
            uint64_t sec = hc_ssd_mark_clean(s->ssd_idx, batch[i].slot,
                                             batch[i].seq);

            if (sec != HC_SSD_NONE) {
                hostcache_note_sector(&secs, sec);
            } else if (hc_ssd_is_kept(s->ssd_idx, batch[i].slot, NULL) &&
                       hc_ssd_is_dirty(s->ssd_idx, batch[i].slot,
                                       batch[i].seq)) {
                /* an older version, now on the origin: free it */
                hostcache_release_kept_locked(s, batch[i].slot, &secs);
            }
            hc_engine_stats(s->eng)->destaged++;
        }
    }
    if (ret == 0) {
        s->jhead = pos;
        if (s->jhead > 1024 && s->jhead * 2 > s->journal->len &&
            s->jbusy == G_MAXUINT) {
            g_array_remove_range(s->journal, 0, s->jhead);
            s->jhead = 0;
        }
    }
    hostcache_check_locked(s, "a destage batch");
    qemu_mutex_unlock(&s->lock);
    /*
     * Losing a clean mark costs a second write of the same data: no FUA.
     * The slots may be reused (CLOCK) once a flush covers the marks: the
     * journal's next one, or, when journaling is idle, one here (not more
     * often than every 100 ms: guest flushes wait behind SSD flushes).
     */
    if (ret == 0 && secs.n && hostcache_ssd_write_sectors(bs, &secs, 0) == 0 &&
        get_clock() - qatomic_read(&s->ssd_flush_ns) > 100 * SCALE_MS) {
        hostcache_ssd_flush(bs);
    }
    qemu_co_mutex_unlock(&s->dlock);
    return ret < 0 ? ret : (int64_t)n;
}

/*
 * Everything dirty (RAM and SSD) to the origin, and the origin flushed:
 * before a direct request over dirty data, leaving write-back, closing,
 * inactivating.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_journal_sync(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    bool journaling;
    uint64_t left;
    int64_t n;
    int ret = 0;

    qemu_mutex_lock(&s->lock);
    journaling = s->ssd_on && hc_dirty_blocks(s->eng);
    qemu_mutex_unlock(&s->lock);
    if (journaling) {
        ret = hostcache_journal(bs, UINT64_MAX, UINT64_MAX, false);
        if (ret < 0) {
            return ret;
        }
    }
    for (;;) {
        qemu_mutex_lock(&s->lock);
        left = hostcache_ssd_dirty(s);
        qemu_mutex_unlock(&s->lock);
        if (!left) {
            return 0;
        }
        n = hostcache_jdestage_some(bs, 256);
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, SCALE_MS);
        }
    }
}

static void coroutine_fn GRAPH_UNLOCKED hostcache_destager(void *opaque);

/*
 * Is the journal (ssd_dirty blocks) due for the origin at time now (lock
 * held)?  When its oldest entry is journaled at *jold, it is due at
 * *jold + max-dirty-age.  A journal recovered from an earlier run is due at
 * once: the time it was written is unknown (and a clock that starts at the
 * boot would make a host that just came back from a power cut wait out
 * max-dirty-age before its data reaches the origin).
 */
static bool hostcache_journal_due(BDRVHostcacheState *s, uint64_t now,
                                  uint64_t ssd_dirty, int64_t *jold)
{
    const HostcacheJEntry *e = s->jhead < s->journal->len ?
        &g_array_index(s->journal, HostcacheJEntry, s->jhead) : NULL;

    *jold = e ? e->ns : (int64_t)now;
    if (!e || e->recovered || ssd_dirty > hc_ssd_capacity(s->ssd_idx) / 4) {
        /* (no entry queued: kept older versions only, write them back) */
        return true;
    }
    return now - e->ns >= s->opts.dirty_age_ns;
}

/* Start the background destager unless it runs or the node is drained. */
static void hostcache_kick_destager(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    Coroutine *co;

    qemu_mutex_lock(&s->lock);
    if (!s->eng || s->destager_running || s->quiesced ||
        ((s->opts.mode != HOSTCACHE_MODE_WRITE_BACK ||
          !hc_dirty_blocks(s->eng)) && !hostcache_ssd_dirty(s))) {
        qemu_mutex_unlock(&s->lock);
        return;
    }
    s->destager_running = true;
    qemu_mutex_unlock(&s->lock);

    bdrv_inc_in_flight(bs);
    co = qemu_coroutine_create(hostcache_destager, bs);
    aio_co_enter(bdrv_get_aio_context(bs), co);
}

/*
 * The background destager.  Exits when nothing is dirty, the mode is no
 * longer write-back, or a drain begins (drain_begin wakes it).
 */
static void coroutine_fn GRAPH_UNLOCKED hostcache_destager(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVHostcacheState *s = bs->opaque;

    for (;;) {
        uint64_t oldest = 0, now = get_clock(), dirty_bytes, ssd_dirty;
        int64_t jold = now;
        bool have, due, journaling, jdue;
        int width;
        int64_t n;

        qemu_mutex_lock(&s->lock);
        ssd_dirty = hostcache_ssd_dirty(s);
        if (s->quiesced ||
            ((s->opts.mode != HOSTCACHE_MODE_WRITE_BACK ||
              !hc_dirty_blocks(s->eng)) && !ssd_dirty)) {
            s->destager_running = false;
            qemu_mutex_unlock(&s->lock);
            break;
        }
        dirty_bytes = hc_dirty_blocks(s->eng) * hostcache_bsize(s);
        have = hc_dirty_oldest(s->eng, &oldest);
        due = dirty_bytes > s->opts.max_dirty / 2 ||
            (have && now - oldest >= s->opts.dirty_age_ns);
        width = s->destage_width;
        journaling = hostcache_journaling(s);
        jdue = ssd_dirty && hostcache_journal_due(s, now, ssd_dirty, &jold);
        qemu_mutex_unlock(&s->lock);

        if (journaling && (due || ssd_dirty)) {
            /*
             * Old or too much dirty data in RAM goes to the journal; the
             * journal goes to the origin when it is old or large (not
             * continuously: its SSD work would slow the guest's flushes),
             * paced by the origin's latency.
             */
            if (!due && !jdue) {
                qemu_co_sleep_ns_wakeable(&s->destager_sleep,
                                          QEMU_CLOCK_REALTIME,
                                          MIN(jold + s->opts.dirty_age_ns -
                                              now, 100 * SCALE_MS));
                continue;
            }
            bdrv_graph_co_rdlock();
            n = due ? hostcache_journal(bs, UINT64_MAX, 64, false) :
                hostcache_jdestage_some(bs, 4 * width);
            bdrv_graph_co_rdunlock();
            if (n <= 0) {
                qemu_co_sleep_ns_wakeable(&s->destager_sleep,
                                          QEMU_CLOCK_REALTIME,
                                          n < 0 ? 100 * SCALE_MS : SCALE_MS);
            }
            continue;
        }
        if (!due && !hc_dirty_blocks(s->eng)) {
            /* journaled blocks left, but the tier is off: origin first */
            due = true;
        }
        if (!due) {
            uint64_t wait = have ? oldest + s->opts.dirty_age_ns - now
                                 : s->opts.dirty_age_ns;

            qemu_co_sleep_ns_wakeable(&s->destager_sleep, QEMU_CLOCK_REALTIME,
                                      MIN(wait, 100 * SCALE_MS));
            continue;
        }
        bdrv_graph_co_rdlock();
        n = hostcache_destage_some(bs, UINT64_MAX, width, 4 * width,
                                   &s->quiesced, 0, 0);
        bdrv_graph_co_rdunlock();
        if (n <= 0) {
            /* error (retry later) or nothing could start (in flight) */
            qemu_co_sleep_ns_wakeable(&s->destager_sleep, QEMU_CLOCK_REALTIME,
                                      n < 0 ? 100 * SCALE_MS : SCALE_MS);
        }
    }
    bdrv_dec_in_flight(bs);
}

/*
 * Wake an idle destager early.  qemu_co_sleep_wake() is not safe against a
 * coroutine going to sleep in another thread, so from other threads rely on
 * the destager's bounded sleep (at most 100 ms) instead.
 */
static void hostcache_wake_destager(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    if (qemu_get_current_aio_context() == bdrv_get_aio_context(bs)) {
        qemu_co_sleep_wake(&s->destager_sleep);
    }
}

static void hostcache_drain_begin(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    qatomic_set(&s->quiesced, s->quiesced + 1);
    qemu_mutex_unlock(&s->lock);
    hostcache_wake_destager(bs);
}

static void hostcache_drain_end(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    qatomic_set(&s->quiesced, s->quiesced - 1);
    qemu_mutex_unlock(&s->lock);
    hostcache_kick_destager(bs);
    hostcache_kick_demoter(bs);
}

/*
 * Before a request that goes to the origin directly (discard, write-zeroes,
 * a write that bypasses the cache) in write-back mode: write back the dirty
 * blocks it overlaps (only those, out of queue order), then bracket it with
 * hc_op_write_begin() in the same critical section, so no older dirty copy
 * can later overwrite it.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_wb_begin_direct(BlockDriverState *bs, HcOp *op, uint64_t first,
                          uint64_t end)
{
    BDRVHostcacheState *s = bs->opaque;

    for (;;) {
        bool ssd_dirty;
        int64_t n;

        qemu_mutex_lock(&s->lock);
        ssd_dirty = hostcache_ssd_dirty(s) &&
            hc_ssd_dirty_in_range(s->ssd_idx, first, end);
        if (!ssd_dirty && hc_dirty_find(s->eng, first, end) == UINT64_MAX) {
            hc_op_write_begin(s->eng, op, first, end);
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
            qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 200 * SCALE_US);
        }
    }
}

/* A writer over max-dirty (or without a clean slot) makes room itself. */
static int coroutine_fn GRAPH_RDLOCK
hostcache_wb_make_room(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    int64_t n;

    if (hostcache_journaling(s)) {
        /* the journal takes the oldest (an SSD write, not the origin's) */
        return hostcache_journal(bs, UINT64_MAX, HOSTCACHE_FLUSH_WIDTH * 4,
                                 false);
    }
    n = hostcache_destage_some(bs, UINT64_MAX, HOSTCACHE_FLUSH_WIDTH,
                               HOSTCACHE_FLUSH_WIDTH, NULL, 0, 0);

    if (n == 0) {
        qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 200 * SCALE_US);
    }
    return n < 0 ? n : 0;
}

/*
 * Write-back write of [offset, offset + bytes), all blocks inside the
 * origin.  A block only partly written and not cached is read first
 * (read-modify-write) so that every dirty block is complete.
 */
static int coroutine_fn GRAPH_RDLOCK
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
        bool whole = n == (int64_t)bsize, cached;
        uint8_t *slot = NULL;
        uint64_t jslot;
        uint32_t jcrc = 0;
        HcOp op;

        qemu_mutex_lock(&s->lock);
        if (hc_dirty_blocks(s->eng) * bsize < s->opts.max_dirty &&
            (whole || hc_contains(s->eng, blk))) {
            slot = hc_write_dirty(s->eng, blk, get_clock());
            if (slot) {
                qemu_iovec_to_buf(qiov, qiov_offset + (pos - offset),
                                  slot + (pos - bstart), n);
                hostcache_ssd_drop_locked(s, blk, &ssd_secs);
            }
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
        jslot = hostcache_ssd_usable(s) ?
            hc_ssd_lookup(s->ssd_idx, blk, &jcrc) : HC_SSD_NONE;
        if (jslot != HC_SSD_NONE) {
            uint64_t jseq;

            hc_ssd_slot_blk(s->ssd_idx, jslot, &jseq, NULL);
            if (hc_ssd_is_dirty(s->ssd_idx, jslot, jseq)) {
                hc_ssd_pin(s->ssd_idx, jslot);
            } else {
                jslot = HC_SSD_NONE;
            }
        }
        hc_op_fill_begin(s->eng, &op, blk, blk + 1);
        qemu_mutex_unlock(&s->lock);
        if (!rmw) {
            rmw = qemu_blockalign(bs->file->bs, bsize);
        }
        if (jslot != HC_SSD_NONE) {
            ret = bdrv_co_pread(s->ssd, hc_ssd_data_offset(s->ssd_idx, jslot),
                                bsize, rmw, 0);
            if (ret == 0 && hc_crc32c(0, rmw, bsize) != jcrc) {
                ret = -EIO;     /* the origin is older: never use it */
            }
            qemu_mutex_lock(&s->lock);
            hc_ssd_unpin(s->ssd_idx, jslot);
            qemu_mutex_unlock(&s->lock);
        } else {
            ret = bdrv_co_pread(bs->file, bstart, bsize, rmw, 0);
        }
        qemu_mutex_lock(&s->lock);
        if (hc_op_end(s->eng, &op) && ret == 0 &&
            hc_dirty_blocks(s->eng) * bsize < s->opts.max_dirty &&
            !hc_contains(s->eng, blk)) {
            slot = hc_write_dirty(s->eng, blk, get_clock());
            if (slot) {
                memcpy(slot, rmw, bsize);
                qemu_iovec_to_buf(qiov, qiov_offset + (pos - offset),
                                  slot + (pos - bstart), n);
                hostcache_ssd_drop_locked(s, blk, &ssd_secs);
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
        if (!slot && !cached) {
            ret = hostcache_wb_make_room(bs);
            if (ret < 0) {
                return ret;
            }
        }
    }
    /* The SSD's older copies must not outlive this write after a crash. */
    if (s->ssd_idx) {
        hostcache_ssd_persist_all(bs, &ssd_secs);
        hostcache_kick_demoter(bs);
    }
    return 0;
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
    /*
     * Write-back whose SSD tier failed falls back to write-through: the
     * host has lost the durable half of its write cache.
     */
    bool broken_wb = s->opts.mode == HOSTCACHE_MODE_WRITE_BACK &&
        s->ssd_broken;
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
        ret = hostcache_wb_write(bs, offset, bytes, qiov, qiov_offset);
        if (ret == 0 && (flags & BDRV_REQ_FUA)) {
            ret = hostcache_journaling(s) ?
                hostcache_journal(bs, hc_write_seq(s->eng), UINT64_MAX,
                                  false) : -EAGAIN;
            if (ret == -EAGAIN || (ret < 0 && s->ssd_broken)) {
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

    if (ret == 0 && (wb || (caching && (hostcache_ssd_dirty(s) ||
                                        hc_dirty_blocks(s->eng))))) {
        ret = hostcache_wb_begin_direct(bs, &op, first, end);
    } else if (ret == 0 && caching) {
        qemu_mutex_lock(&s->lock);
        hc_op_write_begin(s->eng, &op, first, end);
        qemu_mutex_unlock(&s->lock);
    }
    if (ret < 0) {
        return ret;
    }
    if (caching) {
        hostcache_ssd_forget(bs, first, end);
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

    if (ret == 0) {
        qatomic_inc(&s->origin_wgen);
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
    hostcache_kick_demoter(bs);
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
    int64_t start = get_clock();
    uint64_t upto;
    HcStats *st;
    int ret;

    /*
     * Defining .bdrv_co_flush means the children are ours to flush.  In
     * write-back mode (and after leaving it, while anything is dirty) the
     * dirty data goes first.
     */
    qemu_mutex_lock(&s->lock);
    ret = hc_dirty_blocks(s->eng) || s->opts.mode == HOSTCACHE_MODE_WRITE_BACK;
    upto = hc_write_seq(s->eng);
    qemu_mutex_unlock(&s->lock);
    if (ret && hostcache_journaling(s)) {
        ret = hostcache_journal(bs, upto, UINT64_MAX, true);
        if (ret < 0 && s->ssd_broken) {
            /* the SSD failed under it: the RAM copies go to the origin */
            ret = hostcache_wb_flush(bs);
        }
    } else {
        ret = ret ? hostcache_wb_flush(bs) : hostcache_origin_flush(bs);
    }

    qemu_mutex_lock(&s->lock);
    st = hc_engine_stats(s->eng);
    st->flushes++;
    hc_latency_record(&st->flush_lat, get_clock() - start);
    if (ret < 0) {
        st->origin_errors++;
    }
    qemu_mutex_unlock(&s->lock);
    return ret;
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
    /*
     * Blocks at or past the shorter end are (or were) partial: drop them,
     * after writing back dirty ones (they must reach the origin before it
     * is cut, as they would on a disk).
     */
    ret = hostcache_wb_begin_direct(bs, &op,
                                    MIN(old_len, offset) / hostcache_bsize(s),
                                    UINT64_MAX);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to write back dirty data");
        return ret;
    }
    hostcache_ssd_forget(bs, MIN(old_len, offset) / hostcache_bsize(s),
                         UINT64_MAX);

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

    /*
     * Inactivation wrote everything back; anything still dirty is newer
     * than the origin and must reach it before the cache is dropped.
     */
    qemu_mutex_lock(&s->lock);
    n = hc_dirty_blocks(s->eng) + hostcache_ssd_dirty(s);
    qemu_mutex_unlock(&s->lock);
    if (n && (hostcache_journal_sync(bs) < 0 ||
              (hc_dirty_blocks(s->eng) && hostcache_wb_flush(bs) < 0))) {
        error_setg(errp, "hostcache: %" PRIu64 " dirty blocks could not be "
                   "written back before dropping the cache", n);
        return;
    }
    qemu_mutex_lock(&s->lock);
    n = hc_engine_blocks(s->eng);
    hc_invalidate_all(s->eng);
    qemu_mutex_unlock(&s->lock);
    trace_hostcache_invalidate_cache(bs, n);

    /*
     * The SSD tier too: attach it now if the node was opened inactive,
     * and drop its content either way.  An SSD problem costs the tier, not
     * the activation.
     */
    if (s->ssd && !s->ssd_broken) {
        Error *local_err = NULL;

        if (!s->ssd_idx) {
            if (hostcache_ssd_attach(bs, true, true, &local_err) < 0) {
                error_reportf_err(local_err, "hostcache '%s': SSD tier not "
                                  "used: ", bdrv_get_node_name(bs));
                s->ssd_broken = true;
                if (s->ssd_idx) {
                    hostcache_ssd_detach(s);
                }
            }
        } else if (hostcache_ssd_write_super(bs, HC_SSD_STATE_OPEN,
                                             true) == 0) {
            s->ssd_on = s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;
        }
    }
}

/*
 * Dirty blocks are data the origin does not have yet: report them as DATA
 * (or sparse-aware copiers would skip them).  A caller that wants to know
 * where data and zeroes are (want_zero: the NBD server does so for every
 * read) gets DATA for cached blocks too, without a round trip to the
 * origin.  Everything else, allocation queries included, is the origin's
 * answer.
 */
static int coroutine_fn GRAPH_RDLOCK
hostcache_co_block_status(BlockDriverState *bs, bool want_zero,
                          int64_t offset, int64_t bytes, int64_t *pnum,
                          int64_t *map, BlockDriverState **file)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t bsize = hostcache_bsize(s);
    uint64_t first = offset / bsize;
    uint64_t end = DIV_ROUND_UP(offset + bytes, bsize), d, n;
    bool cached = want_zero && s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;

    qemu_mutex_lock(&s->lock);
    d = cached ? hc_cached_find(s->eng, first, end) :
        hc_dirty_find(s->eng, first, end);
    if (hostcache_ssd_dirty(s) &&
        hc_ssd_dirty_in_range(s->ssd_idx, first, MIN(d, end))) {
        /* the journal's blocks are data the origin does not have yet */
        uint64_t b = first, slot, seq;

        for (; b < MIN(d, end); b++) {
            slot = hc_ssd_lookup(s->ssd_idx, b, NULL);
            if (slot != HC_SSD_NONE) {
                hc_ssd_slot_blk(s->ssd_idx, slot, &seq, NULL);
                if (hc_ssd_is_dirty(s->ssd_idx, slot, seq)) {
                    break;
                }
            }
        }
        if (b == first) {
            qemu_mutex_unlock(&s->lock);
            *pnum = MIN((int64_t)((first + 1) * bsize), offset + bytes) -
                offset;
            return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
        }
        d = b;
    }
    if (cached && d != first && s->ssd_on &&
        hc_ssd_lookup(s->ssd_idx, first, NULL) != HC_SSD_NONE) {
        /* on the SSD tier: data, without asking the origin either */
        for (n = first + 1; n < MIN(d, end) &&
             hc_ssd_lookup(s->ssd_idx, n, NULL) != HC_SSD_NONE; n++) {
            /* extend the run */
        }
        qemu_mutex_unlock(&s->lock);
        *pnum = MIN((int64_t)(n * bsize), offset + bytes) - offset;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    if (d == first) {
        for (n = first + 1; n < end && (cached ? hc_contains(s->eng, n) :
                                        hc_is_dirty(s->eng, n)); n++) {
            /* extend the run */
        }
        qemu_mutex_unlock(&s->lock);
        *pnum = MIN((int64_t)(n * bsize), offset + bytes) - offset;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    qemu_mutex_unlock(&s->lock);
    *pnum = d == UINT64_MAX ? bytes : (int64_t)(d * bsize) - offset;
    *map = offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

/*
 * Source side of a live migration (after vm_stop's flush): nothing dirty
 * may stay behind, or the destination would read old data.
 */
static int GRAPH_RDLOCK hostcache_inactivate(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    Error *local_err = NULL;
    int ret = hostcache_writeback_all(bs, &local_err);

    if (ret < 0) {
        error_report_err(local_err);
        return ret;
    }
    /*
     * The VM now runs elsewhere and will write the origin there: what the
     * SSD tier holds must never be served here again.
     */
    if (s->ssd_idx && !s->ssd_broken) {
        s->ssd_on = false;
        hostcache_ssd_write_super(bs, HC_SSD_STATE_CLEAN, true);
    }
    return 0;
}

/*
 * A block job is about to read the origin directly, below the filter (an
 * external snapshot's old top, a backup's source, a mirror's source when it
 * completes without a pivot): everything dirty, RAM and SSD journal, is
 * written back first.  Patch 0003 (BlockDriver.bdrv_write_back); the node
 * is drained.
 */
static int GRAPH_RDLOCK hostcache_write_back(BlockDriverState *bs,
                                             Error **errp)
{
    return hostcache_writeback_all(bs, errp);
}

static void hostcache_child_perm(BlockDriverState *bs, BdrvChild *c,
                                 BdrvChildRole role,
                                 BlockReopenQueue *reopen_queue,
                                 uint64_t perm, uint64_t shared,
                                 uint64_t *nperm, uint64_t *nshared)
{
    BDRVHostcacheState *s = bs->opaque;

    /* by role: c is NULL (and s->ssd unset) while a child is attached */
    if (!(role & BDRV_CHILD_METADATA) || (role & BDRV_CHILD_FILTERED)) {
        bdrv_default_perms(bs, c, role, reopen_queue, perm, shared,
                           nperm, nshared);
        /*
         * Write-back writes to the origin on its own account, also when no
         * parent asks for WRITE any more (close after the parent is gone).
         */
        if (c == bs->file && !(bs->open_flags & BDRV_O_INACTIVE) &&
            !bdrv_is_read_only(bs) &&
            (s->opts.mode == HOSTCACHE_MODE_WRITE_BACK ||
             (s->eng && hc_dirty_blocks(s->eng)) ||
             (s->ssd_idx && hc_ssd_dirty_blocks(s->ssd_idx)))) {
            *nperm |= BLK_PERM_WRITE;
        }
        return;
    }
    /*
     * The SSD tier is ours alone: no other writer, and writable even under
     * a read-only node (a golden image is cached too), except while
     * inactive (incoming migration), when nothing may be written.
     */
    *nperm = BLK_PERM_CONSISTENT_READ;
    /*
     * WRITE only once attached (open refreshes the permissions after
     * refusing a read-only ssd node with a clear message).
     */
    if (c && !(bs->open_flags & BDRV_O_INACTIVE) &&
        !bdrv_is_read_only(c->bs)) {
        *nperm |= BLK_PERM_WRITE;
    }
    *nshared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;
    if (bs->open_flags & BDRV_O_INACTIVE) {
        /* an incoming migration's node: the source still writes it */
        *nshared = BLK_PERM_ALL;
    }
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
        .dirty_bytes = (hc_dirty_blocks(s->eng) + hostcache_ssd_dirty(s)) *
            s->opts.cfg.block_size,
        .destage_backlog = hc_dirty_queued(s->eng) + hostcache_ssd_dirty(s),
        .destaged_blocks = st->destaged,
        .destage_errors = st->destage_errors,
        .flush_latency_avg_ns = hc_latency_avg(&st->flush_lat),
        .flush_latency_p99_ns = hc_latency_quantile(&st->flush_lat, 0.99),
        .admit_after = s->opts.cfg.admit_after,
        .seq_cutoff = s->opts.cfg.seq_cutoff,
        .max_dirty = s->opts.max_dirty,
        .max_dirty_age_ms = s->opts.dirty_age_ns / SCALE_MS,
        .has_ssd_size = !!s->ssd_idx,
        .ssd_size = s->ssd_idx ? hc_ssd_capacity(s->ssd_idx) *
            s->opts.cfg.block_size : 0,
        .has_ssd_used = !!s->ssd_idx,
        .ssd_used = s->ssd_idx ? hc_ssd_used(s->ssd_idx) *
            s->opts.cfg.block_size : 0,
        .has_ssd_recovered = !!s->ssd_idx,
        .ssd_recovered = s->ssd_idx ? hc_ssd_recovered(s->ssd_idx) : 0,
        .has_ssd_hits = !!s->ssd,
        .ssd_hits = st->ssd_hits,
        .has_ssd_hit_bytes = !!s->ssd,
        .ssd_hit_bytes = st->ssd_hit_bytes,
        .has_ssd_demotions = !!s->ssd,
        .ssd_demotions = st->ssd_demotions,
        .has_ssd_corrupt = !!s->ssd,
        .ssd_corrupt = st->ssd_corrupt,
        .has_ssd_errors = !!s->ssd,
        .ssd_errors = st->ssd_errors,
        .has_ssd_active = !!s->ssd,
        .ssd_active = s->ssd_on,
        .has_ssd_dirty_bytes = !!s->ssd,
        .ssd_dirty_bytes = hostcache_ssd_dirty(s) * s->opts.cfg.block_size,
        .has_ssd_failed = !!s->ssd,
        .ssd_failed = s->ssd_broken,
        .origin_id = s->ssd_idx ?
            g_strdup(hc_ssd_super(s->ssd_idx)->origin_id) : NULL,
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
    .bdrv_co_block_status       = hostcache_co_block_status,
    .bdrv_inactivate            = hostcache_inactivate,
    .bdrv_write_back            = hostcache_write_back,
    .bdrv_drain_begin           = hostcache_drain_begin,
    .bdrv_drain_end             = hostcache_drain_end,

    .bdrv_child_perm            = hostcache_child_perm,
    .bdrv_get_specific_stats    = hostcache_get_specific_stats,

    .is_filter                  = true,
};

static void bdrv_hostcache_init(void)
{
    bdrv_register(&bdrv_hostcache);
}

block_init(bdrv_hostcache_init);
