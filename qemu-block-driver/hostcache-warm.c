/*
 * hostcache: live migration, the driver's side
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * The migration stream (a savevm section) is written and read by
 * hostcache-migration.c, which exists in qemu-system only; it calls the
 * functions here, which use no migration API, so the tools build without
 * a stub.
 *
 * Source: between hostcache_mig_out_begin() and _end() (pre-copy), the
 * destager writes back as fast as the origin allows (drain), and the
 * stream takes the node's hot list, hottest first, and in warm-up mode
 * content the data of hot RAM blocks.  A block written after its data was
 * taken is announced again (an INVAL record): hostcache_modified_locked()
 * is called, under s->lock, wherever a block's content changes, and the
 * data is copied and marked sent in one critical section, so no change
 * can slip between the two.
 *
 * Destination: what arrives is kept in the node until activation, then a
 * background coroutine warms the cache up, hottest first: staged data
 * (content), or reads of the origin (hot-set) paced by their latency.  It
 * never overwrites a block the guest wrote or discarded meanwhile: staged
 * data of a block is dropped when the block changes; origin reads are
 * engine fill ops (a racing write makes them stale); and a block already
 * cached (clean or dirty) is left as it is.
 */

#include "qemu/osdep.h"
#include "block/aio_task.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "qemu/bitmap.h"
#include "qemu/host-utils.h"
#include "qemu/memalign.h"
#include "qemu/units.h"
#include "trace.h"
#include "hostcache-int.h"

/* Hot-list entries sent at most (8 MiB of list). */
#define HOSTCACHE_MIG_HOT_MAX       (1u << 20)
/* Warm-up reads of the origin in flight, at most. */
#define HOSTCACHE_WARM_WIDTH_MAX    16
/*
 * Adjacent hot blocks are read together, up to this many blocks and 256 KiB
 * per read: a guest's hot data is mostly runs (its files, its reads of 64 KiB
 * and more), and one read of a run costs about what one block costs.
 */
#define HOSTCACHE_WARM_RUN_MAX      16
#define HOSTCACHE_WARM_RUN_BYTES    (256 * KiB)
/* Drain time after which the guest's writes are slowed to the origin's. */
#define HOSTCACHE_MIG_CAP_NS        (5 * NANOSECONDS_PER_SECOND)

bool hostcache_is_node(BlockDriverState *bs)
{
    return bs->drv && !strcmp(bs->drv->format_name, "hostcache");
}

uint32_t hostcache_block_size(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    return hostcache_bsize(s);
}

/* The origin's identity: the option, or the origin node's filename. */
const char *hostcache_origin_id(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    return s->opts.origin_id[0] ? s->opts.origin_id : bs->file->bs->filename;
}

/* max-dirty in force (lock held): lower while a migration must converge. */
uint64_t hostcache_max_dirty(BDRVHostcacheState *s)
{
    uint64_t cap = s->mig_out.max_dirty_cap;

    return cap && cap < s->opts.max_dirty ? cap : s->opts.max_dirty;
}

static void hostcache_block_set_drop(GHashTable *t, uint64_t first,
                                     uint64_t end, GArray *moved)
{
    if (end - first <= g_hash_table_size(t)) {
        for (uint64_t b = first; b < end; b++) {
            if (g_hash_table_remove(t, &b) && moved) {
                g_array_append_val(moved, b);
            }
        }
    } else {
        GHashTableIter it;
        gpointer key;

        g_hash_table_iter_init(&it, t);
        while (g_hash_table_iter_next(&it, &key, NULL)) {
            uint64_t b = *(uint64_t *)key;

            if (b >= first && b < end) {
                if (moved) {
                    g_array_append_val(moved, b);
                }
                g_hash_table_iter_remove(&it);
            }
        }
    }
}

/* Mark blocks [first, end) in this tenure's write set (lock held). */
static void hostcache_wset_mark(BDRVHostcacheState *s, uint64_t first,
                                uint64_t end)
{
    HostcacheWset *w = &s->t.cur;
    uint32_t bshift = ctz32(hostcache_bsize(s));
    uint64_t c0, c1;

    if (!w->bits || first >= end) {
        return;
    }
    c0 = first >> (s->t.shift - bshift);
    c1 = end > (w->nchunks << (s->t.shift - bshift)) ? w->nchunks :
        DIV_ROUND_UP(end, 1ull << (s->t.shift - bshift));
    if (c0 < c1) {
        bitmap_set(w->bits, c0, c1 - c0);
    }
}

/*
 * Blocks [first, end) change (a write, write-zeroes, discard or resize
 * begins, or a write-back write makes them dirty), lock held.  A source
 * announces those it sent; a destination drops their staged data; both
 * mark them written in this tenure.
 */
void hostcache_modified_locked(BDRVHostcacheState *s, uint64_t first,
                               uint64_t end)
{
    hostcache_wset_mark(s, first, end);
    if (s->mig_out.sent && g_hash_table_size(s->mig_out.sent)) {
        hostcache_block_set_drop(s->mig_out.sent, first, end,
                                 s->mig_out.inval);
    }
    if (s->mig_in.data && g_hash_table_size(s->mig_in.data)) {
        hostcache_block_set_drop(s->mig_in.data, first, end, NULL);
    }
}

/* bytes were written back to the origin (lock held). */
void hostcache_mig_drained_locked(BDRVHostcacheState *s, uint64_t bytes)
{
    HostcacheMigOut *o = &s->mig_out;
    int64_t now;

    if (!o->drain) {
        return;
    }
    now = get_clock();
    o->drained += bytes;
    o->win_bytes += bytes;
    if (now - o->win_ns >= 200 * SCALE_MS) {
        uint64_t r = o->win_bytes * NANOSECONDS_PER_SECOND /
            (now - o->win_ns);

        o->rate = o->rate ? (o->rate + r) / 2 : r;
        o->win_bytes = 0;
        o->win_ns = now;
    }
}

/* The hot list: RAM's hottest first, then the SSD tier's (lock held). */
static void hostcache_mig_capture_hot(BDRVHostcacheState *s)
{
    HostcacheMigOut *o = &s->mig_out;
    uint64_t ram = hc_engine_blocks(s->eng);
    uint64_t ssd = s->ssd.idx && s->ssd.on ? hc_ssd_used(s->ssd.idx) : 0;
    size_t max = MIN(ram + ssd, HOSTCACHE_MIG_HOT_MAX);
    size_t n;

    o->hot = g_new(uint64_t, MAX(max, 1));
    n = hc_engine_hot_blocks(s->eng, o->hot, max);
    if (ssd && n < max) {
        size_t end = n + hc_ssd_hot_blocks(s->ssd.idx, o->hot + n, max - n);

        /* a block in both tiers: RAM's place counts */
        for (size_t i = n; i < end; i++) {
            if (!hc_contains(s->eng, o->hot[i])) {
                o->hot[n++] = o->hot[i];
            }
        }
    }
    o->nhot = n;
}

static void hostcache_mig_kick_bh(void *opaque)
{
    BlockDriverState *bs = opaque;

    hostcache_kick_destager(bs);
    hostcache_wake_destager(bs);
}

/*
 * An outgoing migration enters pre-copy (BQL, any thread): drain, and
 * capture the hot list.  The destager is woken in the node's own context:
 * qemu_co_sleep_wake() must not be called from the migration thread.
 */
void hostcache_mig_out_begin(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigOut *o = &s->mig_out;

    qemu_mutex_lock(&s->lock);
    hostcache_mig_free_out_locked(s);
    o->drain = true;
    o->drain_ns = o->win_ns = get_clock();
    o->win_bytes = 0;
    o->rate = 0;
    o->max_dirty_cap = 0;
    o->warm = s->opts.warm_up;
    if (o->warm != HOSTCACHE_WARM_UP_OFF) {
        hostcache_mig_capture_hot(s);
    }
    if (o->warm == HOSTCACHE_WARM_UP_CONTENT) {
        o->sent = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
                                        NULL);
        o->inval = g_array_new(false, false, sizeof(uint64_t));
        o->data_budget = hc_engine_capacity(s->eng);
    }
    trace_hostcache_mig_out_begin(bs, hc_dirty_blocks(s->eng) +
                                  hostcache_ssd_dirty(s), o->nhot, o->warm);
    qemu_mutex_unlock(&s->lock);
    aio_bh_schedule_oneshot(bdrv_get_aio_context(bs), hostcache_mig_kick_bh,
                            bs);
}

/* The migration ended, completed or not (BQL): back to normal. */
void hostcache_mig_out_end(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    trace_hostcache_mig_out_end(bs, s->mig_out.drained,
                                s->mig_out.data_sent);
    s->mig_out.drain = false;
    s->mig_out.max_dirty_cap = 0;
    /* a batch the drain started must not go on (a cancel, a failure) */
    qatomic_set(&s->wb.interrupt, 1);
    hostcache_mig_free_out_locked(s);
    qemu_mutex_unlock(&s->lock);
    aio_bh_schedule_oneshot(bdrv_get_aio_context(bs), hostcache_mig_kick_bh,
                            bs);
}

HostcacheWarmUp hostcache_mig_out_mode(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheWarmUp warm;

    qemu_mutex_lock(&s->lock);
    warm = s->mig_out.warm;
    qemu_mutex_unlock(&s->lock);
    return warm;
}

/*
 * What is left to do before the switchover (any thread): dirty bytes, the
 * time the origin needs for them at the drain rate measured (UINT64_MAX
 * when not measured yet), and bytes of the stream not yet sent.  After
 * HOSTCACHE_MIG_CAP_NS of draining that does not fit in budget_ms, the
 * guest's writes are held to what the origin takes (max-dirty is capped),
 * or a guest that writes faster than the origin would never converge.
 */
void hostcache_mig_out_pending(BlockDriverState *bs, uint64_t budget_ms,
                               uint64_t *dirty, uint64_t *drain_ms,
                               uint64_t *unsent)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigOut *o = &s->mig_out;
    uint64_t bsize = hostcache_bsize(s);

    qemu_mutex_lock(&s->lock);
    *dirty = (hc_dirty_blocks(s->eng) + hostcache_ssd_dirty(s)) * bsize;
    *drain_ms = !*dirty ? 0 : !o->rate ? UINT64_MAX :
        *dirty * 1000 / o->rate;
    *unsent = (o->nhot - o->hot_sent) * sizeof(uint64_t) +
        (o->inval ? o->inval->len * sizeof(uint64_t) : 0);
    if (o->warm == HOSTCACHE_WARM_UP_CONTENT) {
        *unsent += MIN(o->data_budget, o->nhot - o->data_next) * bsize;
    }
    if (o->drain && *drain_ms > budget_ms && o->rate &&
        get_clock() - o->drain_ns > HOSTCACHE_MIG_CAP_NS) {
        o->max_dirty_cap = MAX(bsize, o->rate * budget_ms / 1000);
    }
    qemu_mutex_unlock(&s->lock);
}

/* Up to max hot-list entries not sent yet (any thread). */
size_t hostcache_mig_out_take_hot(BlockDriverState *bs, uint64_t *blks,
                                  size_t max)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigOut *o = &s->mig_out;
    size_t n;

    qemu_mutex_lock(&s->lock);
    n = MIN(max, o->nhot - o->hot_sent);
    memcpy(blks, o->hot + o->hot_sent, n * sizeof(uint64_t));
    o->hot_sent += n;
    qemu_mutex_unlock(&s->lock);
    return n;
}

/* Up to max sent blocks modified since (any thread). */
size_t hostcache_mig_out_take_invals(BlockDriverState *bs, uint64_t *blks,
                                     size_t max)
{
    BDRVHostcacheState *s = bs->opaque;
    GArray *a;
    size_t n = 0;

    qemu_mutex_lock(&s->lock);
    a = s->mig_out.inval;
    if (a) {
        n = MIN(max, a->len);
        memcpy(blks, a->data, n * sizeof(uint64_t));
        g_array_remove_range(a, 0, n);
    }
    qemu_mutex_unlock(&s->lock);
    return n;
}

/*
 * Content mode: the next hot block still in RAM, copied into buf (one
 * block) and marked sent in the same critical section (any thread; after
 * inactivation too: the RAM tier outlives it).  False when none is left.
 */
bool hostcache_mig_out_take_data(BlockDriverState *bs, uint64_t *blk,
                                 void *buf)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigOut *o = &s->mig_out;
    bool found = false;

    qemu_mutex_lock(&s->lock);
    while (o->sent && o->data_budget && o->data_next < o->nhot && !found) {
        uint64_t b = o->hot[o->data_next++];
        const void *data = hc_lookup(s->eng, b, false);

        if (data && !g_hash_table_contains(s->mig_out.sent, &b)) {
            memcpy(buf, data, hostcache_bsize(s));
            g_hash_table_add(o->sent, g_memdup2(&b, sizeof(b)));
            o->data_budget--;
            o->data_sent++;
            *blk = b;
            found = true;
        }
    }
    qemu_mutex_unlock(&s->lock);
    return found;
}

/* Free the source's migration state (lock held). */
void hostcache_mig_free_out_locked(BDRVHostcacheState *s)
{
    HostcacheMigOut *o = &s->mig_out;

    g_free(o->hot);
    o->hot = NULL;
    o->nhot = o->hot_sent = o->data_next = 0;
    o->data_budget = o->data_sent = 0;
    if (o->sent) {
        g_hash_table_destroy(o->sent);
        o->sent = NULL;
    }
    if (o->inval) {
        g_array_free(o->inval, true);
        o->inval = NULL;
    }
}

/*
 * Destination
 * -----------
 * The stream's records for this node arrive while it is inactive (BQL,
 * the incoming coroutine).
 */
void hostcache_mig_in_begin(BlockDriverState *bs, HostcacheWarmUp warm,
                            uint32_t src_block_size)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigIn *in = &s->mig_in;

    hostcache_mig_in_drop(bs, false);
    qemu_mutex_lock(&s->lock);
    in->state = HOSTCACHE_WARM_UP_STATE_RECEIVED;
    in->warm = warm;
    in->lineage = in->tenure = 0;       /* until the node's record says */
    in->hot = g_array_new(false, false, sizeof(uint64_t));
    /* another block size: only the list is of use (in this one's blocks) */
    if (warm == HOSTCACHE_WARM_UP_CONTENT &&
        src_block_size == hostcache_bsize(s)) {
        in->data = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
                                         g_free);
        in->data_max = hc_engine_capacity(s->eng);
    }
    in->src_block_size = src_block_size;
    qemu_mutex_unlock(&s->lock);
}

void hostcache_mig_in_hot(BlockDriverState *bs, const uint64_t *blks,
                          size_t n)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigIn *in = &s->mig_in;
    uint64_t bsize = hostcache_bsize(s);

    qemu_mutex_lock(&s->lock);
    for (size_t i = 0; in->hot && i < n &&
         in->hot->len < HOSTCACHE_MIG_HOT_MAX; i++) {
        uint64_t b = blks[i] * in->src_block_size / bsize;

        g_array_append_val(in->hot, b);
    }
    qemu_mutex_unlock(&s->lock);
}

void hostcache_mig_in_data(BlockDriverState *bs, uint64_t blk,
                           const void *buf)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigIn *in = &s->mig_in;

    qemu_mutex_lock(&s->lock);
    in->bytes_received += hostcache_bsize(s);
    if (in->data && (g_hash_table_size(in->data) < in->data_max ||
                     g_hash_table_contains(in->data, &blk))) {
        g_hash_table_replace(in->data, g_memdup2(&blk, sizeof(blk)),
                             g_memdup2(buf, hostcache_bsize(s)));
    }
    qemu_mutex_unlock(&s->lock);
}

void hostcache_mig_in_inval(BlockDriverState *bs, const uint64_t *blks,
                            size_t n)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    for (size_t i = 0; s->mig_in.data && i < n; i++) {
        g_hash_table_remove(s->mig_in.data, &blks[i]);
    }
    qemu_mutex_unlock(&s->lock);
}

void hostcache_mig_in_complete(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    s->mig_in.complete = s->mig_in.hot != NULL;
    qemu_mutex_unlock(&s->lock);
}

/* Forget what arrived (only when the stream did not complete). */
void hostcache_mig_in_drop(BlockDriverState *bs, bool incomplete_only)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigIn *in = &s->mig_in;

    qemu_mutex_lock(&s->lock);
    /*
     * (incomplete_only: the incoming side ends; with plain QEMU that can be
     * after the activation, when the warm-up runs or is done already)
     */
    if (!in->running && (!incomplete_only ||
                         (!in->complete &&
                          in->state == HOSTCACHE_WARM_UP_STATE_RECEIVED))) {
        if (in->hot) {
            g_array_free(in->hot, true);
            in->hot = NULL;
        }
        if (in->data) {
            g_hash_table_destroy(in->data);
            in->data = NULL;
        }
        in->complete = false;
        in->total = in->done = 0;
        if (in->state == HOSTCACHE_WARM_UP_STATE_RECEIVED) {
            in->state = HOSTCACHE_WARM_UP_STATE_NONE;
        }
    }
    qemu_mutex_unlock(&s->lock);
}

/* At close: nothing of a migration stays (the warm-up is not running). */
void hostcache_mig_free(BDRVHostcacheState *s)
{
    qemu_mutex_lock(&s->lock);
    hostcache_mig_free_out_locked(s);
    if (s->mig_in.hot) {
        g_array_free(s->mig_in.hot, true);
        s->mig_in.hot = NULL;
    }
    if (s->mig_in.data) {
        g_hash_table_destroy(s->mig_in.data);
        s->mig_in.data = NULL;
    }
    if (s->mig_in.wsets) {
        g_array_free(s->mig_in.wsets, true);
        s->mig_in.wsets = NULL;
    }
    g_free(s->t.cur.bits);
    s->t.cur.bits = NULL;
    if (s->t.old) {
        g_array_free(s->t.old, true);
        s->t.old = NULL;
    }
    qemu_mutex_unlock(&s->lock);
}

/*
 * The warm-up
 * -----------
 */

/* Install data for blk (lock held): in RAM while a slot is free, else on
 * the SSD tier through the usual demotion; false when neither takes it. */
static bool hostcache_warm_install_locked(BlockDriverState *bs, uint64_t blk,
                                          const void *data)
{
    BDRVHostcacheState *s = bs->opaque;
    void *slot;

    if (hc_contains(s->eng, blk)) {
        return true;    /* the guest's own copy, or cached meanwhile */
    }
    slot = hc_insert_warm(s->eng, blk);
    if (slot) {
        memcpy(slot, data, hostcache_bsize(s));
        return true;
    }
    if (s->ssd.on) {
        hostcache_evicted(bs, blk, data);
        return true;
    }
    return false;
}

typedef struct HostcacheWarmTask {
    AioTask task;               /* first: aio_task_co() g_free()s the task */
    BlockDriverState *bs;
    uint64_t blk;               /* the first block of the run */
    uint64_t nblk;              /* its length, 1 to HOSTCACHE_WARM_RUN_MAX */
    bool *full;
} HostcacheWarmTask;

/* Read a run of hot blocks from the origin, as a guest miss would. */
static int coroutine_fn GRAPH_RDLOCK hostcache_warm_task(AioTask *task)
{
    HostcacheWarmTask *t = container_of(task, HostcacheWarmTask, task);
    BDRVHostcacheState *s = t->bs->opaque;
    uint64_t bsize = hostcache_bsize(s), ns, i;
    g_autofree uint8_t *buf =
        qemu_try_blockalign(t->bs->file->bs, t->nblk * bsize);
    int64_t start;
    HcOp op;
    bool valid;
    int ret;

    if (!buf) {
        return 0;
    }
    qemu_mutex_lock(&s->lock);
    hc_op_fill_begin(s->eng, &op, t->blk, t->blk + t->nblk);
    qemu_mutex_unlock(&s->lock);
    start = get_clock();
    ret = bdrv_co_pread(t->bs->file, t->blk * bsize, t->nblk * bsize, buf, 0);
    ns = get_clock() - start;
    qemu_mutex_lock(&s->lock);
    /* (a write to any block of the run makes the whole read stale) */
    valid = hc_op_end(s->eng, &op);
    for (i = 0; ret == 0 && valid && i < t->nblk; i++) {
        if (!hostcache_warm_install_locked(t->bs, t->blk + i,
                                           buf + i * bsize)) {
            *t->full = true;
            break;
        }
    }
    /* pace by the origin's latency, as the destager does */
    if (ret == 0 && (!s->mig_in.lat_floor || ns < s->mig_in.lat_floor)) {
        s->mig_in.lat_floor = ns;
    }
    if (ret == 0 && ns <= s->mig_in.lat_floor * 6 / 5 + 50 * SCALE_US) {
        s->mig_in.width = MIN(s->mig_in.width + 1, HOSTCACHE_WARM_WIDTH_MAX);
    } else {
        s->mig_in.width = MAX(s->mig_in.width / 2, 1);
    }
    qemu_mutex_unlock(&s->lock);
    return 0;   /* a failed warm-up read only leaves a miss */
}

static int hostcache_warm_blk_cmp(gconstpointer a, gconstpointer b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * Read the blocks of cand (sorted here) from the origin, adjacent ones
 * together, up to width reads at once; *full when the cache took no more.
 */
static void coroutine_fn GRAPH_RDLOCK
hostcache_warm_read(BlockDriverState *bs, GArray *cand, int width, bool *full)
{
    uint64_t run_max = MIN(HOSTCACHE_WARM_RUN_MAX,
                           MAX(HOSTCACHE_WARM_RUN_BYTES /
                               hostcache_bsize(bs->opaque), 1));
    AioTaskPool *pool = aio_task_pool_new(width);
    guint i = 0;

    g_array_sort(cand, hostcache_warm_blk_cmp);
    while (i < cand->len && !*full) {
        HostcacheWarmTask *t = g_new0(HostcacheWarmTask, 1);

        t->task.func = hostcache_warm_task;
        t->bs = bs;
        t->blk = g_array_index(cand, uint64_t, i++);
        t->nblk = 1;
        t->full = full;
        while (i < cand->len && t->nblk < run_max &&
               g_array_index(cand, uint64_t, i) == t->blk + t->nblk) {
            t->nblk++;
            i++;
        }
        aio_task_pool_start_task(pool, &t->task);
    }
    aio_task_pool_wait_all(pool);
    aio_task_pool_free(pool);
}

/*
 * One round of the warm-up (graph rdlock held): the next entries of the
 * hot list, enough for width origin reads of whole runs.  Returns false
 * when the warm-up is over (list done, cache full, or mode off).
 */
static bool coroutine_fn GRAPH_RDLOCK hostcache_warm_round(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigIn *in = &s->mig_in;
    int64_t len = bdrv_co_getlength(bs->file->bs);
    uint64_t bsize = hostcache_bsize(s);
    g_autoptr(GArray) cand = g_array_new(false, false, sizeof(uint64_t));
    bool full = false;
    int width;

    if (len < 0) {
        return false;
    }
    qemu_mutex_lock(&s->lock);
    width = in->width;
    while (in->done < in->hot->len &&
           cand->len < (guint)width * HOSTCACHE_WARM_RUN_MAX && !full) {
        uint64_t b = g_array_index(in->hot, uint64_t, in->done++);
        const void *data;

        if ((b + 1) * bsize > (uint64_t)len || hc_contains(s->eng, b)) {
            continue;   /* past the end (partial blocks are never cached) */
        }
        data = in->data ? g_hash_table_lookup(in->data, &b) : NULL;
        if (data) {
            full = !hostcache_warm_install_locked(bs, b, data);
            g_hash_table_remove(in->data, &b);
        } else if (in->warm == HOSTCACHE_WARM_UP_HOT_SET) {
            g_array_append_val(cand, b);
        }
        /* content mode without data for b (sent, then written): a miss */
    }
    qemu_mutex_unlock(&s->lock);
    if (cand->len && !full) {
        hostcache_warm_read(bs, cand, width, &full);
    }
    trace_hostcache_warm_up(bs, in->done, in->hot->len, width);
    return !full && in->done < in->hot->len;
}

static void coroutine_fn GRAPH_UNLOCKED hostcache_warm_up(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigIn *in = &s->mig_in;
    bool more = true;

    while (more && !qatomic_read(&s->wb.quiesced)) {
        bdrv_graph_co_rdlock();
        more = hostcache_warm_round(bs);
        bdrv_graph_co_rdunlock();
        hostcache_kick_demoter(bs);
    }
    qemu_mutex_lock(&s->lock);
    in->running = false;
    if (!more) {
        in->state = HOSTCACHE_WARM_UP_STATE_DONE;
        in->done = in->total;
        g_array_free(in->hot, true);
        in->hot = NULL;
        if (in->data) {
            g_hash_table_destroy(in->data);
            in->data = NULL;
        }
    }
    qemu_mutex_unlock(&s->lock);
    bdrv_dec_in_flight(bs);
}

/* Start (or resume, after a drain) the warm-up unless it runs or is over. */
void hostcache_kick_warm_up(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    Coroutine *co;

    qemu_mutex_lock(&s->lock);
    if (s->mig_in.running || s->wb.quiesced ||
        s->mig_in.state != HOSTCACHE_WARM_UP_STATE_RUNNING) {
        qemu_mutex_unlock(&s->lock);
        return;
    }
    s->mig_in.running = true;
    qemu_mutex_unlock(&s->lock);
    bdrv_inc_in_flight(bs);
    co = qemu_coroutine_create(hostcache_warm_up, bs);
    aio_co_enter(bdrv_get_aio_context(bs), co);
}

/*
 * The node activates (a migration destination): warm up in the
 * background with what arrived, unless the stream did not complete or
 * this node's warm-up is off.  Never here and now: for plain QEMU, the
 * time spent here is downtime.
 */
void hostcache_warm_up_start(BlockDriverState *bs)
{
    BDRVHostcacheState *s = bs->opaque;
    HostcacheMigIn *in = &s->mig_in;
    bool go;

    qemu_mutex_lock(&s->lock);
    if (!in->complete) {
        /* nothing arrived, or this activation's warm-up began already */
        qemu_mutex_unlock(&s->lock);
        return;
    }
    go = in->hot && in->hot->len && in->warm != HOSTCACHE_WARM_UP_OFF &&
        s->opts.warm_up != HOSTCACHE_WARM_UP_OFF &&
        s->opts.mode != HOSTCACHE_MODE_PASS_THROUGH;
    in->complete = false;
    in->done = 0;
    in->total = in->hot ? in->hot->len : 0;
    in->width = 4;
    in->lat_floor = 0;
    if (go) {
        in->state = HOSTCACHE_WARM_UP_STATE_RUNNING;
    }
    qemu_mutex_unlock(&s->lock);
    if (!go) {
        hostcache_mig_in_drop(bs, false);
        return;
    }
    hostcache_kick_warm_up(bs);
}

/*
 * Lineage and tenure
 * ------------------
 * So that a VM coming back to a host can trust what its SSD tier there
 * still holds.  Written blocks are marked in coarse chunks (at most 2^20
 * per disk, 128 KiB of bitmap); a tier is kept on arrival only when the
 * write sets of every tenure since it was handed off arrived with the VM
 * (hc_ssd_chain_covers()), and what they name is dropped first.
 */

static void hostcache_wset_free(gpointer p)
{
    g_free(((HostcacheWset *)p)->bits);
}

/* Chunk size for an origin: the block, or more to stay under 2^20. */
static uint32_t hostcache_chunk_shift(BDRVHostcacheState *s, uint64_t size)
{
    uint32_t bshift = ctz32(hostcache_bsize(s));
    uint32_t need = size > 1 ? 64 - clz64(size - 1) : 0;

    return MAX(bshift, need > 20 ? need - 20 : 0);
}

/* A new, empty write set for tenure (lock held). */
static void hostcache_tenure_reset_locked(BDRVHostcacheState *s,
                                          uint64_t origin_size)
{
    HostcacheWset *w = &s->t.cur;

    g_free(w->bits);
    s->t.shift = hostcache_chunk_shift(s, origin_size);
    w->tenure = s->t.tenure;
    w->nchunks = MAX(DIV_ROUND_UP(origin_size, 1ull << s->t.shift), 1);
    w->bits = bitmap_new(w->nchunks);
    if (!s->t.old) {
        s->t.old = g_array_new(false, false, sizeof(HostcacheWset));
        g_array_set_clear_func(s->t.old, hostcache_wset_free);
    }
}

/* A cold start (an open that is not a migration destination's). */
void hostcache_tenure_start(BDRVHostcacheState *s, uint64_t origin_size)
{
    qemu_mutex_lock(&s->lock);
    do {
        s->t.lineage = (uint64_t)g_random_int() << 32 | g_random_int();
    } while (!s->t.lineage);
    s->t.tenure = 1;
    s->t.chain_from = 0;
    hostcache_tenure_reset_locked(s, origin_size);
    if (s->t.old->len) {
        g_array_set_size(s->t.old, 0);
    }
    qemu_mutex_unlock(&s->lock);
}

static gint hostcache_wset_cmp(gconstpointer a, gconstpointer b)
{
    const HostcacheWset *x = a, *y = b;

    return x->tenure < y->tenure ? -1 : x->tenure > y->tenure;
}

/*
 * A migration destination activates: the next tenure of the lineage that
 * arrived, with the contiguous write sets received (up to the source's
 * own), or a cold start when nothing (usable) arrived.
 */
void hostcache_tenure_arrived(BDRVHostcacheState *s, uint64_t origin_size)
{
    HostcacheMigIn *in = &s->mig_in;
    GArray *ws;
    uint64_t next;

    qemu_mutex_lock(&s->lock);
    ws = in->wsets;
    in->wsets = NULL;
    if (!in->complete || !in->lineage || !ws || !ws->len) {
        qemu_mutex_unlock(&s->lock);
        if (ws) {
            g_array_free(ws, true);
        }
        hostcache_tenure_start(s, origin_size);
        return;
    }
    g_array_sort(ws, hostcache_wset_cmp);
    /* keep the run that ends with the source's tenure */
    next = in->tenure;
    for (guint i = ws->len; i-- > 0;) {
        HostcacheWset *w = &g_array_index(ws, HostcacheWset, i);

        if (w->tenure != next) {
            g_array_remove_range(ws, 0, i + 1);
            break;
        }
        next--;
    }
    while (ws->len > HOSTCACHE_TENURES_KEPT - 1) {
        g_array_remove_index(ws, 0);
    }
    s->t.lineage = in->lineage;
    s->t.tenure = in->tenure + 1;
    s->t.chain_from = ws->len ?
        g_array_index(ws, HostcacheWset, 0).tenure : 0;
    if (s->t.old) {
        g_array_free(s->t.old, true);
    }
    s->t.old = ws;
    g_array_set_clear_func(s->t.old, hostcache_wset_free);
    hostcache_tenure_reset_locked(s, origin_size);
    qemu_mutex_unlock(&s->lock);
}

/* What the chain that arrived vouches for (an activation's open). */
void hostcache_tenure_chain(BDRVHostcacheState *s, HcSsdOpen *o)
{
    qemu_mutex_lock(&s->lock);
    o->lineage = s->t.chain_from ? s->t.lineage : 0;
    o->chain_from = s->t.chain_from;
    o->chain_to = s->t.tenure - 1;
    qemu_mutex_unlock(&s->lock);
}

static void hostcache_note_nothing(void *opaque, uint64_t sec)
{
}

/*
 * A tier handed off in tenure `since` is kept: drop, in its index, every
 * block a later tenure wrote (lock taken; the caller writes the sectors
 * and then the superblock).
 */
void hostcache_tenure_drop_written(BDRVHostcacheState *s, uint64_t since)
{
    uint32_t per = s->t.shift - ctz32(hostcache_bsize(s));

    qemu_mutex_lock(&s->lock);
    for (guint i = 0; s->t.old && i < s->t.old->len; i++) {
        HostcacheWset *w = &g_array_index(s->t.old, HostcacheWset, i);

        if (w->tenure <= since) {
            continue;
        }
        for (uint64_t c = find_first_bit(w->bits, w->nchunks);
             c < w->nchunks; c = find_next_bit(w->bits, w->nchunks, c + 1)) {
            hc_ssd_invalidate_range(s->ssd.idx, c << per, (c + 1) << per,
                                    hostcache_note_nothing, NULL);
        }
    }
    qemu_mutex_unlock(&s->lock);
}

/* The lineage and tenure an outgoing migration announces. */
void hostcache_mig_out_lineage(BlockDriverState *bs, uint64_t *lineage,
                               uint64_t *tenure)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    *lineage = s->t.lineage;
    *tenure = s->t.tenure;
    qemu_mutex_unlock(&s->lock);
}

/*
 * Copies (g_free the bits) of the write sets to send: the earlier
 * tenures', or this tenure's (current: after inactivation, complete).
 */
size_t hostcache_mig_out_wsets(BlockDriverState *bs, bool current,
                               HostcacheWset *out, size_t max,
                               uint32_t *shift)
{
    BDRVHostcacheState *s = bs->opaque;
    size_t n = 0;

    qemu_mutex_lock(&s->lock);
    *shift = s->t.shift;
    if (current && s->t.cur.bits && max) {
        out[n] = s->t.cur;
        out[n++].bits = g_memdup2(s->t.cur.bits,
                                  BITS_TO_LONGS(s->t.cur.nchunks) *
                                  sizeof(unsigned long));
    }
    for (guint i = 0; !current && s->t.old && i < s->t.old->len && n < max;
         i++) {
        HostcacheWset *w = &g_array_index(s->t.old, HostcacheWset, i);

        out[n] = *w;
        out[n++].bits = g_memdup2(w->bits, BITS_TO_LONGS(w->nchunks) *
                                  sizeof(unsigned long));
    }
    qemu_mutex_unlock(&s->lock);
    return n;
}

void hostcache_mig_in_lineage(BlockDriverState *bs, uint64_t lineage,
                              uint64_t tenure)
{
    BDRVHostcacheState *s = bs->opaque;

    qemu_mutex_lock(&s->lock);
    s->mig_in.lineage = lineage;
    s->mig_in.tenure = tenure;
    if (s->mig_in.wsets) {
        g_array_set_size(s->mig_in.wsets, 0);
    }
    qemu_mutex_unlock(&s->lock);
}

/* A write set arrived (bits: g_malloc'd, taken over). */
void hostcache_mig_in_wset(BlockDriverState *bs, uint64_t tenure,
                           uint32_t shift, uint64_t nchunks,
                           unsigned long *bits)
{
    BDRVHostcacheState *s = bs->opaque;
    uint64_t len = bdrv_getlength(bs->file->bs);
    HostcacheWset w = { tenure, nchunks, bits };

    qemu_mutex_lock(&s->lock);
    if (shift != hostcache_chunk_shift(s, len) ||
        nchunks != MAX(DIV_ROUND_UP(len, 1ull << shift), 1)) {
        /* another geometry: no chain, the tier is dropped on arrival */
        s->mig_in.lineage = 0;
        g_free(bits);
    } else {
        if (!s->mig_in.wsets) {
            s->mig_in.wsets = g_array_new(false, false,
                                          sizeof(HostcacheWset));
            g_array_set_clear_func(s->mig_in.wsets, hostcache_wset_free);
        }
        g_array_append_val(s->mig_in.wsets, w);
    }
    qemu_mutex_unlock(&s->lock);
}
