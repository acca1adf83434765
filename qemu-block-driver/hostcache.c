/*
 * hostcache: host-side cache filter for virtual disks
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * A filter node above the disk's origin (its "file" child) that keeps the
 * origin's blocks in a RAM tier and, optionally, a persistent SSD tier.
 * This file holds the driver table and its entry points: options, open,
 * close and reopen, the guest's reads and writes, flush, truncate, block
 * status, activation and inactivation, permissions and statistics.  The
 * subjects they rely on have a file each (split like qcow2):
 *
 *   hostcache-int.h      the state, one sub-structure per subject
 *   hostcache-io.c       the request paths: reads (RAM, SSD, fills from the
 *                        origin), writes, write-zeroes and discards
 *   hostcache-wb.c       write-back: the destager, flushes, write-back writes
 *   hostcache-ssd.c      the SSD tier: attach, load, format, superblock,
 *                        demotion, reads, durable drops
 *   hostcache-journal.c  the write-back journal on the SSD tier
 *
 * and every decision about the cache itself is made by the QEMU-free
 * engine (hc-engine.c, hc-ssd.c), which the glue here calls under
 * s->lock and which never does I/O.
 */

#include "qemu/osdep.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qapi/error.h"
#include "qapi/qapi-types-block-core.h"
#include "qapi/util.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/units.h"
#include "qobject/qdict.h"
#include "trace.h"
#include "hostcache-int.h"

#define HOSTCACHE_OPT_MODE          "mode"
#define HOSTCACHE_OPT_RAM_SIZE      "ram-size"
#define HOSTCACHE_OPT_BLOCK_SIZE    "block-size"
#define HOSTCACHE_OPT_ADMIT_AFTER   "admit-after"
#define HOSTCACHE_OPT_SEQ_CUTOFF    "seq-cutoff"
#define HOSTCACHE_OPT_MAX_DIRTY     "max-dirty"
#define HOSTCACHE_OPT_DIRTY_AGE     "max-dirty-age-ms"
#define HOSTCACHE_OPT_ORIGIN_ID     "origin-id"
#define HOSTCACHE_OPT_SSD_CREATE    "ssd-create"
#define HOSTCACHE_OPT_WARM_UP       "warm-up"

/* With check_index, abort on a broken index invariant (lock held). */
void hostcache_check_locked(BDRVHostcacheState *s, const char *where)
{
    const char *why;

    if (!s->check_index) {
        return;
    }
    why = s->ssd.idx ? hc_ssd_check(s->ssd.idx) : NULL;
    why = why ? why : s->ssd.idx ? hc_journal_check(s->j.q, s->ssd.idx) : NULL;
    why = why ? why : hc_engine_check(s->eng);
    if (why) {
        error_report("hostcache: index check failed after %s: %s", where,
                     why);
        abort();
    }
}

/*
 * Something in flight completed: a destage, a journal batch or a journal
 * destage batch that did something, a direct request bracketed by an
 * engine op (lock held).  Waiters for it re-check what they wait for.
 * Never call it for work that did nothing: a waiter whose own try found
 * nothing to do would be woken at once and spin.
 */
void hostcache_progress_locked(BDRVHostcacheState *s)
{
    s->progress_gen++;
    if (qemu_in_coroutine()) {
        qemu_co_queue_restart_all(&s->progress);
    } else {
        /* (a waiter may run at once: the lock is dropped around it) */
        qemu_co_enter_all(&s->progress, &s->lock);
    }
}

/* Take a mark before trying something that may have to wait. */
uint64_t hostcache_progress_mark(BDRVHostcacheState *s)
{
    uint64_t mark;

    qemu_mutex_lock(&s->lock);
    mark = s->progress_gen;
    qemu_mutex_unlock(&s->lock);
    return mark;
}

/*
 * Wait until something completes, unless something did since mark (then
 * return at once: no wake-up is lost between the try and the wait).
 */
void coroutine_fn hostcache_progress_wait(BDRVHostcacheState *s,
                                          uint64_t mark)
{
    qemu_mutex_lock(&s->lock);
    if (s->progress_gen == mark) {
        qemu_co_queue_wait(&s->progress, &s->lock);
    }
    qemu_mutex_unlock(&s->lock);
}

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
        {
            .name = HOSTCACHE_OPT_WARM_UP,
            .type = QEMU_OPT_STRING,
            .help = "what a live migration sends to warm the destination: "
                    "off, hot-set (default) or content",
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
    HOSTCACHE_OPT_WARM_UP,
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
    str = qemu_opt_get(opts, HOSTCACHE_OPT_WARM_UP);
    dest->warm_up = str ? qapi_enum_parse(&HostcacheWarmUp_lookup, str, -1,
                                          NULL) : HOSTCACHE_WARM_UP_HOT_SET;
    if ((int)dest->warm_up < 0) {
        error_setg(errp, "hostcache: unknown warm-up '%s'; expected off, "
                   "hot-set or content", str);
        goto out;
    }
    ok = true;
out:
    qemu_opts_del(opts);
    return ok;
}

/*
 * The locks, queues and journal of a node being opened.  First: attaching
 * the child already drains us (drain_begin/end).
 */
static int hostcache_init_state(BDRVHostcacheState *s, Error **errp)
{
    qemu_mutex_init(&s->lock);
    qemu_co_queue_init(&s->progress);
    qemu_co_queue_init(&s->ssd.sec_wait);
    qemu_co_queue_init(&s->ssd.drop_wait);
    s->wb.width = 4;
    QSIMPLEQ_INIT(&s->ssd.demotions);
    qemu_co_mutex_init(&s->j.lock);
    qemu_co_mutex_init(&s->j.dlock);
    s->j.q = hc_journal_new();
    if (!s->j.q) {
        error_setg(errp, "hostcache: out of memory");
        return -ENOMEM;
    }
    s->j.kept = g_array_new(false, false, sizeof(uint64_t));
    s->j.secs = g_new0(HostcacheSectors, 1);
    s->check_index = getenv("HOSTCACHE_CHECK_INDEX") != NULL;
    return 0;
}

/*
 * With the children open: the request flags, the SSD tier (attached now
 * unless the node is inactive, for an incoming migration) and the
 * permissions a recovered journal needs.
 */
static int GRAPH_RDLOCK
hostcache_open_tiers(BlockDriverState *bs, int flags, Error **errp)
{
    BDRVHostcacheState *s = bs->opaque;
    int ret = 0;

    bs->supported_write_flags = BDRV_REQ_WRITE_UNCHANGED |
        (BDRV_REQ_FUA & bs->file->bs->supported_write_flags);
    bs->supported_zero_flags = BDRV_REQ_WRITE_UNCHANGED |
        ((BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) &
            bs->file->bs->supported_zero_flags);
    if (s->ssd.child && bdrv_is_read_only(s->ssd.child->bs)) {
        error_setg(errp, "hostcache: the ssd node '%s' is read-only; the SSD "
                   "tier must be writable",
                   bdrv_get_node_name(s->ssd.child->bs));
        return -EINVAL;
    } else if (s->ssd.child) {
        ret = bdrv_child_refresh_perms(bs, s->ssd.child, errp);
    }
    if (ret == 0 && !(flags & BDRV_O_INACTIVE)) {
        int64_t len = bdrv_getlength(bs->file->bs);

        /* a cold start of the VM's lineage (a destination's comes later) */
        hostcache_tenure_start(s, MAX(len, 0));
    }
    if (ret == 0 && s->ssd.child && !(flags & BDRV_O_INACTIVE)) {
        /* An inactive node (incoming migration) attaches on activation. */
        ret = hostcache_ssd_attach(bs, s->opts.mode ==
                                   HOSTCACHE_MODE_PASS_THROUGH, false, errp);
    }
    if (ret == 0 && s->ssd.idx && hc_ssd_dirty_blocks(s->ssd.idx)) {
        /* the recovered journal is written back from here: WRITE */
        info_report("hostcache '%s': recovered %" PRIu64 " blocks not yet "
                    "written back from the SSD tier's journal",
                    bdrv_get_node_name(bs), hc_ssd_dirty_blocks(s->ssd.idx));
        ret = bdrv_child_refresh_perms(bs, bs->file, errp);
    }
    return ret;
}

static int GRAPH_UNLOCKED
hostcache_open(BlockDriverState *bs, QDict *options, int flags, Error **errp)
{
    ERRP_GUARD();
    BDRVHostcacheState *s = bs->opaque;
    char err[256];
    int ret;

    GLOBAL_STATE_CODE();

    ret = hostcache_init_state(s, errp);
    if (ret < 0) {
        return ret;
    }
    ret = bdrv_open_file_child(NULL, options, "file", bs, errp);
    if (ret < 0) {
        return ret;
    }
    if (!hostcache_absorb_opts(&s->opts, options, errp)) {
        return -EINVAL;
    }
    s->ssd.child = bdrv_open_child(NULL, options, "ssd", bs, &child_of_bds,
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
    ret = hostcache_open_tiers(bs, flags, errp);
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        goto fail;
    }
    if (s->ssd.child) {
        hc_engine_set_evict_cb(s->eng, hostcache_evicted, bs);
    }

    trace_hostcache_open(bs, HostcacheMode_str(s->opts.mode),
                         s->opts.cfg.ram_size, s->opts.cfg.block_size);
    return 0;

fail:
    if (s->ssd.idx) {
        hostcache_ssd_detach(s);
    }
    hostcache_journal_free(s);
    hc_engine_free(s->eng);
    s->eng = NULL;
    if (s->ssd.child) {
        bdrv_graph_wrlock();
        bdrv_unref_child(bs, s->ssd.child);
        bdrv_graph_wrunlock();
        s->ssd.child = NULL;
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
    if (s->ssd.idx && !s->ssd.broken && !failed &&
        !(bs->open_flags & BDRV_O_INACTIVE)) {
        hostcache_ssd_write_super(bs, HC_SSD_STATE_CLEAN, false);
    }
    bdrv_graph_rdunlock_main_loop();
    assert(!s->wb.destager_running && !s->ssd.demoter_running &&
           !s->mig_in.running);
    if (s->ssd.idx) {
        hostcache_ssd_detach(s);
    }

    hostcache_journal_free(s);
    hostcache_mig_free(s);
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

    if (s->ssd.idx && !s->ssd.broken) {
        GRAPH_RDLOCK_GUARD_MAINLOOP();

        if (opts->mode == HOSTCACHE_MODE_PASS_THROUGH && s->ssd.on) {
            s->ssd.on = false;
            if (hostcache_ssd_write_super(state->bs, HC_SSD_STATE_OPEN,
                                          true) < 0) {
                error_report("hostcache '%s': the SSD tier could not be "
                             "dropped and may go stale; zero its first 8 KiB "
                             "before using it again",
                             bdrv_get_node_name(state->bs));
            }
        } else if (opts->mode != HOSTCACHE_MODE_PASS_THROUGH) {
            s->ssd.on = !s->ssd.broken;
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

static int coroutine_fn GRAPH_RDLOCK
hostcache_co_preadv_part(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         QEMUIOVector *qiov, size_t qiov_offset,
                         BdrvRequestFlags flags)
{
    return hostcache_read(bs, offset, bytes, qiov, qiov_offset, flags);
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
        if (ret < 0 && s->ssd.broken) {
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
    hostcache_progress_locked(s);
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
    hostcache_tenure_arrived(s, MAX(bdrv_co_getlength(bs->file->bs), 0));
    if (s->ssd.child && !s->ssd.broken) {
        Error *local_err = NULL;

        if (!s->ssd.idx) {
            /*
             * A destination: its tier is kept only when a chain of write
             * sets came with the VM since the tier was handed off here.
             */
            if (hostcache_ssd_attach(bs, s->opts.mode ==
                                     HOSTCACHE_MODE_PASS_THROUGH, true,
                                     &local_err) < 0) {
                error_reportf_err(local_err, "hostcache '%s': SSD tier not "
                                  "used: ", bdrv_get_node_name(bs));
                s->ssd.broken = true;
                if (s->ssd.idx) {
                    hostcache_ssd_detach(s);
                }
            }
        } else if (hostcache_ssd_write_super(bs, HC_SSD_STATE_OPEN,
                                             true) == 0) {
            s->ssd.on = s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;
        }
    }
    /* a destination warms up with what the source sent, in the background */
    hostcache_warm_up_start(bs);
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
        hc_ssd_dirty_in_range(s->ssd.idx, first, MIN(d, end))) {
        /* the journal's blocks are data the origin does not have yet */
        uint64_t b = first, slot, seq;

        for (; b < MIN(d, end); b++) {
            slot = hc_ssd_lookup(s->ssd.idx, b, NULL);
            if (slot != HC_SSD_NONE) {
                hc_ssd_slot_blk(s->ssd.idx, slot, &seq, NULL);
                if (hc_ssd_is_dirty(s->ssd.idx, slot, seq)) {
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
    if (cached && d != first && s->ssd.on &&
        hc_ssd_lookup(s->ssd.idx, first, NULL) != HC_SSD_NONE) {
        /* on the SSD tier: data, without asking the origin either */
        for (n = first + 1; n < MIN(d, end) &&
             hc_ssd_lookup(s->ssd.idx, n, NULL) != HC_SSD_NONE; n++) {
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
     * SSD tier holds is marked handed off (with the lineage and tenure),
     * never served again unless the VM comes back with the write sets of
     * every tenure since (hc_ssd_chain_covers()).
     */
    if (s->ssd.idx && !s->ssd.broken) {
        s->ssd.on = false;
        hostcache_ssd_write_super(bs, HC_SSD_STATE_HANDED_OFF, false);
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

    /* by role: c is NULL (and s->ssd.child unset) while a child is attached */
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
             (s->ssd.idx && hc_ssd_dirty_blocks(s->ssd.idx)))) {
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
        .has_ssd_size = !!s->ssd.idx,
        .ssd_size = s->ssd.idx ? hc_ssd_capacity(s->ssd.idx) *
            s->opts.cfg.block_size : 0,
        .has_ssd_used = !!s->ssd.idx,
        .ssd_used = s->ssd.idx ? hc_ssd_used(s->ssd.idx) *
            s->opts.cfg.block_size : 0,
        .has_ssd_recovered = !!s->ssd.idx,
        .ssd_recovered = s->ssd.idx ? hc_ssd_recovered(s->ssd.idx) : 0,
        .has_ssd_hits = !!s->ssd.child,
        .ssd_hits = st->ssd_hits,
        .has_ssd_hit_bytes = !!s->ssd.child,
        .ssd_hit_bytes = st->ssd_hit_bytes,
        .has_ssd_demotions = !!s->ssd.child,
        .ssd_demotions = st->ssd_demotions,
        .has_ssd_corrupt = !!s->ssd.child,
        .ssd_corrupt = st->ssd_corrupt,
        .has_ssd_errors = !!s->ssd.child,
        .ssd_errors = st->ssd_errors,
        .has_ssd_active = !!s->ssd.child,
        .ssd_active = s->ssd.on,
        .has_ssd_dirty_bytes = !!s->ssd.child,
        .ssd_dirty_bytes = hostcache_ssd_dirty(s) * s->opts.cfg.block_size,
        .has_ssd_failed = !!s->ssd.child,
        .ssd_failed = s->ssd.broken,
        .origin_id = s->ssd.idx ?
            g_strdup(hc_ssd_super(s->ssd.idx)->origin_id) : NULL,
        .warm_up_state = s->mig_in.state,
        .warm_up_blocks = s->mig_in.total ? s->mig_in.total :
            s->mig_in.hot ? s->mig_in.hot->len : 0,
        .warm_up_done = s->mig_in.done,
        .warm_up_bytes_received = s->mig_in.bytes_received,
        .migration_drained_bytes = s->mig_out.drained,
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
