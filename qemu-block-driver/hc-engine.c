/*
 * hostcache engine: index, SLRU eviction, admission, sequential detection,
 * in-flight operation tracking and accounting.  See hc-engine.h; the
 * write-back half (dirty blocks, the destage queue) is hc-engine-dirty.c.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc-engine-int.h"

static void hc_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void hc_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint32_t hc_log2(uint64_t v)
{
    return 63 - __builtin_clzll(v);
}

static uint32_t hc_pow2_bits(uint64_t v)
{
    uint32_t b = 0;

    while ((1ull << b) < v) {
        b++;
    }
    return b;
}

static inline uint64_t hc_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* ---- configuration ---------------------------------------------------- */

int hc_config_check(const HcConfig *cfg, char *err, size_t errlen)
{
    uint32_t bs = cfg->block_size;

    if (bs < HC_MIN_BLOCK_SIZE || bs > HC_MAX_BLOCK_SIZE || (bs & (bs - 1))) {
        hc_err(err, errlen, "block-size must be a power of two between %u "
               "and %u bytes, not %u", HC_MIN_BLOCK_SIZE, HC_MAX_BLOCK_SIZE,
               bs);
        return -EINVAL;
    }
    if (cfg->ram_size < bs) {
        hc_err(err, errlen, "ram-size must be at least one cache block "
               "(%u bytes), not %llu", bs,
               (unsigned long long)cfg->ram_size);
        return -EINVAL;
    }
    if (cfg->ram_size / bs > HC_MAX_SLOTS) {
        hc_err(err, errlen, "ram-size %llu holds more than %u blocks of %u "
               "bytes; use a larger block-size",
               (unsigned long long)cfg->ram_size, HC_MAX_SLOTS, bs);
        return -EINVAL;
    }
    if (cfg->admit_after < 1) {
        hc_err(err, errlen, "admit-after must be at least 1");
        return -EINVAL;
    }
    if (cfg->policy != HC_POLICY_SLRU && cfg->policy != HC_POLICY_LRU) {
        hc_err(err, errlen, "unknown eviction policy %d", (int)cfg->policy);
        return -EINVAL;
    }
    return 0;
}

/* ---- slots and chunks ------------------------------------------------- */

static bool hc_chunk_ensure(HcEngine *e, uint32_t s)
{
    uint32_t c = s >> e->cshift;
    void *p;

    if (e->chunk[c]) {
        return true;
    }
    if (posix_memalign(&p, 4096, e->chunk_bytes)) {
        return false;
    }
    e->chunk[c] = p;
    e->chunks_allocated++;
    return true;
}

static void hc_chunks_free_from(HcEngine *e, uint32_t first_chunk)
{
    for (uint32_t c = first_chunk; c < e->nchunks; c++) {
        if (e->chunk[c]) {
            free(e->chunk[c]);
            e->chunk[c] = NULL;
            e->chunks_allocated--;
        }
    }
}

/* ---- hash index --------------------------------------------------------- */

static void hc_hash_rebuild(HcEngine *e)
{
    memset(e->bucket, 0xff, sizeof(*e->bucket) << e->hbits);
    for (uint32_t s = 0; s < e->next_unused; s++) {
        if (e->ent[s].queue != HC_Q_FREE) {
            hc_hash_add(e, s);
        }
    }
}

/* Size the bucket array for nslots (load factor <= 2) and re-insert. */
static int hc_rehash(HcEngine *e)
{
    uint32_t bits = hc_pow2_bits(e->nslots);
    uint32_t *nb;

    bits = bits > 5 ? bits - 1 : 4;
    nb = malloc(sizeof(*nb) << bits);
    if (!nb) {
        return -ENOMEM;
    }
    free(e->bucket);
    e->bucket = nb;
    e->hbits = bits;
    hc_hash_rebuild(e);
    return 0;
}

/* ---- queues ------------------------------------------------------------- */

static void hc_q_unlink(HcEngine *e, uint32_t s)
{
    HcEntry *x = &e->ent[s];
    HcQueue *q = &e->q[x->queue];

    if (x->prev != HC_NIL) {
        e->ent[x->prev].next = x->next;
    } else {
        q->head = x->next;
    }
    if (x->next != HC_NIL) {
        e->ent[x->next].prev = x->prev;
    } else {
        q->tail = x->prev;
    }
    q->len--;
    x->queue = HC_Q_FREE;
}

static void hc_q_push_head(HcEngine *e, int qid, uint32_t s)
{
    HcEntry *x = &e->ent[s];
    HcQueue *q = &e->q[qid];

    x->queue = qid;
    x->prev = HC_NIL;
    x->next = q->head;
    if (q->head != HC_NIL) {
        e->ent[q->head].prev = s;
    } else {
        q->tail = s;
    }
    q->head = s;
    q->len++;
}

/* Keep the protected segment within protected_max. */
static void hc_protected_trim(HcEngine *e)
{
    while (e->q[HC_Q_PROTECTED].len > e->protected_max) {
        uint32_t s = e->q[HC_Q_PROTECTED].tail;

        hc_q_unlink(e, s);
        hc_q_push_head(e, HC_Q_PROBATION, s);
    }
}

void hc_touch(HcEngine *e, uint32_t s)
{
    /* SLRU: any hit lands in protected; LRU (protected_max 0): probation */
    hc_q_unlink(e, s);
    hc_q_push_head(e, e->protected_max ? HC_Q_PROTECTED : HC_Q_PROBATION, s);
    hc_protected_trim(e);
}

static void hc_slot_release(HcEngine *e, uint32_t s)
{
    if (e->ent[s].flags & HC_F_DIRTY) {
        e->ndirty--;
    }
    e->ent[s].flags = 0;
    hc_hash_del(e, s);
    hc_q_unlink(e, s);
    e->ent[s].next = e->free_head;
    e->free_head = s;
    e->used--;
}

/* Pick the coldest movable entry: probation first, then protected. */
static uint32_t hc_victim(const HcEngine *e)
{
    static const int order[] = { HC_Q_PROBATION, HC_Q_PROTECTED };

    for (int i = 0; i < 2; i++) {
        for (uint32_t s = e->q[order[i]].tail; s != HC_NIL;
             s = e->ent[s].prev) {
            if (!e->ent[s].flags) {
                return s;
            }
        }
    }
    return HC_NIL;
}

static bool hc_evict_one(HcEngine *e)
{
    uint32_t s = hc_victim(e);

    if (s == HC_NIL) {
        return false;
    }
    if (e->evict_cb) {
        e->evict_cb(e->evict_opaque, e->ent[s].blk, hc_slot_data(e, s));
    }
    hc_slot_release(e, s);
    e->stats.evictions++;
    return true;
}

void hc_engine_set_evict_cb(HcEngine *e, HcEvictFn *fn, void *opaque)
{
    e->evict_cb = fn;
    e->evict_opaque = opaque;
}

/* Get a free slot with its chunk allocated, evicting if needed. */
static uint32_t hc_slot_get(HcEngine *e)
{
    uint32_t s;

    if (e->free_head == HC_NIL && e->next_unused == e->nslots &&
        !hc_evict_one(e)) {
        return HC_NIL;
    }
    if (e->free_head != HC_NIL) {
        s = e->free_head;
        e->free_head = e->ent[s].next;
    } else {
        s = e->next_unused++;
    }
    if (!hc_chunk_ensure(e, s)) {
        e->ent[s].next = e->free_head;
        e->free_head = s;
        return HC_NIL;
    }
    return s;
}

/* ---- life cycle ----------------------------------------------------------- */

static void hc_apply_tunables(HcEngine *e, const HcConfig *cfg)
{
    e->cfg.admit_after = cfg->admit_after;
    e->cfg.seq_cutoff = cfg->seq_cutoff;
    e->cfg.policy = cfg->policy;
    e->protected_max = cfg->policy == HC_POLICY_SLRU ?
        (uint32_t)((uint64_t)e->nslots * HC_PROTECTED_PERCENT / 100) : 0;
}

static int hc_sketch_alloc(HcEngine *e)
{
    uint32_t bits = hc_pow2_bits(e->nslots) + 2;  /* 2 rows of 2 * nslots */
    uint8_t *sk;

    if (e->cfg.admit_after <= 1) {
        free(e->sketch);
        e->sketch = NULL;
        return 0;
    }
    bits = bits < 7 ? 7 : bits;
    sk = calloc(1, (size_t)1 << bits);
    if (!sk) {
        return -ENOMEM;
    }
    free(e->sketch);
    e->sketch = sk;
    e->sketch_mask = (1u << bits) - 1;
    e->sketch_ops = 0;
    return 0;
}

HcEngine *hc_engine_new(const HcConfig *cfg, char *err, size_t errlen)
{
    HcEngine *e;
    uint32_t spc;

    if (hc_config_check(cfg, err, errlen) < 0) {
        return NULL;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        goto nomem;
    }
    e->cfg = *cfg;
    e->bshift = hc_log2(cfg->block_size);
    e->nslots = (uint32_t)(cfg->ram_size >> e->bshift);
    spc = cfg->block_size >= HC_CHUNK_BYTES ? 1 :
        HC_CHUNK_BYTES / cfg->block_size;
    e->cshift = hc_log2(spc);
    e->chunk_bytes = (uint64_t)spc << e->bshift;
    e->nchunks = (e->nslots + spc - 1) >> e->cshift;
    e->free_head = HC_NIL;
    for (int i = 0; i < HC_NQUEUES; i++) {
        e->q[i] = (HcQueue) { HC_NIL, HC_NIL, 0 };
    }
    e->ent = calloc(e->nslots, sizeof(*e->ent));
    e->chunk = calloc(e->nchunks, sizeof(*e->chunk));
    if (!e->ent || !e->chunk || hc_rehash(e) < 0 || hc_sketch_alloc(e) < 0) {
        hc_engine_free(e);
        goto nomem;
    }
    hc_apply_tunables(e, cfg);
    return e;

nomem:
    hc_err(err, errlen, "cannot allocate the cache index for %llu blocks",
           (unsigned long long)(cfg->ram_size / cfg->block_size));
    return NULL;
}

void hc_engine_free(HcEngine *e)
{
    if (!e) {
        return;
    }
    if (e->chunk) {
        hc_chunks_free_from(e, 0);
    }
    free(e->chunk);
    free(e->ent);
    free(e->bucket);
    free(e->sketch);
    free(e->dq);
    free(e);
}

const HcConfig *hc_engine_config(const HcEngine *e)
{
    return &e->cfg;
}

/* Move the entry in slot from to the free slot to (hash fixed by caller). */
static void hc_slot_move(HcEngine *e, uint32_t from, uint32_t to)
{
    HcEntry *x;

    memcpy(hc_slot_data(e, to), hc_slot_data(e, from), e->cfg.block_size);
    e->ent[to] = e->ent[from];
    x = &e->ent[to];
    if (x->prev != HC_NIL) {
        e->ent[x->prev].next = to;
    } else {
        e->q[x->queue].head = to;
    }
    if (x->next != HC_NIL) {
        e->ent[x->next].prev = to;
    } else {
        e->q[x->queue].tail = to;
    }
    e->ent[from].queue = HC_Q_FREE;
}

static void hc_free_list_rebuild(HcEngine *e)
{
    e->free_head = HC_NIL;
    for (uint32_t s = e->next_unused; s-- > 0;) {
        if (e->ent[s].queue == HC_Q_FREE) {
            e->ent[s].next = e->free_head;
            e->free_head = s;
        }
    }
}

/*
 * Shrink to n slots: evict the coldest, then move the entries that sit in
 * slots >= n into free slots below n.  On ENOMEM (a chunk below n could not
 * be allocated) the index is left consistent at the old capacity.
 */
static int hc_shrink(HcEngine *e, uint32_t n)
{
    uint32_t to = 0;
    int ret = 0;
    HcEntry *ne;

    while (e->used > n) {
        if (!hc_evict_one(e)) {
            return -EBUSY;
        }
    }
    for (uint32_t from = n; from < e->next_unused && ret == 0; from++) {
        if (e->ent[from].queue == HC_Q_FREE) {
            continue;
        }
        while (e->ent[to].queue != HC_Q_FREE) {
            to++;   /* used <= n guarantees a free slot below n */
        }
        if (!hc_chunk_ensure(e, to)) {
            ret = -ENOMEM;
            break;
        }
        hc_slot_move(e, from, to);
    }
    if (ret == 0) {
        uint32_t nchunks = (n + (1u << e->cshift) - 1) >> e->cshift;

        e->nslots = n;
        e->next_unused = e->next_unused < n ? e->next_unused : n;
        hc_chunks_free_from(e, nchunks);
        e->nchunks = nchunks;   /* the array keeps its size; only use shrinks */
        ne = realloc(e->ent, (size_t)n * sizeof(*ne));
        if (ne) {
            e->ent = ne;
        }
    }
    hc_free_list_rebuild(e);
    hc_hash_rebuild(e);
    return ret;
}

static int hc_grow(HcEngine *e, uint32_t n)
{
    uint32_t nchunks = (n + (1u << e->cshift) - 1) >> e->cshift;
    HcEntry *ne = realloc(e->ent, (size_t)n * sizeof(*ne));
    uint8_t **nc;

    if (!ne) {
        return -ENOMEM;
    }
    e->ent = ne;
    memset(&ne[e->nslots], 0, (size_t)(n - e->nslots) * sizeof(*ne));
    if (nchunks > e->nchunks) {
        nc = realloc(e->chunk, (size_t)nchunks * sizeof(*nc));
        if (!nc) {
            return -ENOMEM;
        }
        memset(&nc[e->nchunks], 0,
               (size_t)(nchunks - e->nchunks) * sizeof(*nc));
        e->chunk = nc;
        e->nchunks = nchunks;
    }
    e->nslots = n;
    return 0;
}

int hc_engine_reconfigure(HcEngine *e, const HcConfig *cfg,
                          char *err, size_t errlen)
{
    uint32_t n;
    int ret;

    if (hc_config_check(cfg, err, errlen) < 0) {
        return -EINVAL;
    }
    if (cfg->block_size != e->cfg.block_size) {
        hc_err(err, errlen, "block-size cannot be changed on an open cache "
               "(%u -> %u)", e->cfg.block_size, cfg->block_size);
        return -EINVAL;
    }
    n = (uint32_t)(cfg->ram_size >> e->bshift);
    if (n < e->nslots) {
        ret = hc_shrink(e, n);
    } else if (n > e->nslots) {
        ret = hc_grow(e, n);
    } else {
        ret = 0;
    }
    if (ret == 0 && n != (uint32_t)(e->cfg.ram_size >> e->bshift)) {
        ret = hc_rehash(e);
    }
    if (ret < 0) {
        /*
         * Shrinking only fails before anything moved (or with the index
         * still consistent); growing fails before nslots changes.
         */
        hc_err(err, errlen, "cannot resize the cache to %llu bytes: %s",
               (unsigned long long)cfg->ram_size, strerror(-ret));
        return ret;
    }
    e->cfg.ram_size = (uint64_t)n << e->bshift;
    {
        uint32_t old_admit = e->cfg.admit_after;

        e->cfg.admit_after = cfg->admit_after;
        if ((old_admit > 1) != (cfg->admit_after > 1) || n != e->nslots ||
            (cfg->admit_after > 1 && !e->sketch)) {
            hc_sketch_alloc(e);  /* on ENOMEM: admission degrades to 1 */
        }
    }
    hc_apply_tunables(e, cfg);
    hc_protected_trim(e);
    return 0;
}

/* ---- request-level decisions ---------------------------------------- */

bool hc_seq_check(HcEngine *e, uint64_t offset, uint64_t bytes)
{
    HcStream *s = NULL, *lru = &e->stream[0];
    bool bypass;

    if (!e->cfg.seq_cutoff) {
        return false;
    }
    e->tick++;
    for (int i = 0; i < HC_STREAMS; i++) {
        HcStream *t = &e->stream[i];

        if (t->run && t->next_off == offset) {
            s = t;
            break;
        }
        if (t->tick < lru->tick) {
            lru = t;
        }
    }
    if (s) {
        s->run += bytes;
    } else {
        s = lru;
        s->run = bytes;
    }
    s->next_off = offset + bytes;
    s->tick = e->tick;
    bypass = s->run > e->cfg.seq_cutoff;
    if (bypass) {
        e->stats.seq_bypasses++;
    }
    return bypass;
}

const void *hc_lookup(HcEngine *e, uint64_t blk, bool touch)
{
    uint32_t s = hc_find(e, blk);

    if (s == HC_NIL) {
        return NULL;
    }
    if (touch) {
        hc_touch(e, s);
    }
    return hc_slot_data(e, s);
}

bool hc_contains(const HcEngine *e, uint64_t blk)
{
    return hc_find(e, blk) != HC_NIL;
}

/*
 * Admission counts live in a count-min sketch: two rows of 8-bit counters,
 * 2 * nslots each, read as the minimum of the two.  After nslots / 2
 * misses every counter is halved: "recent" means within about half a
 * cache's worth of misses, and a block missed only once is falsely taken
 * for a repeat about 2% of the time.
 */
bool hc_admit_miss(HcEngine *e, uint64_t blk)
{
    uint64_t h = hc_mix(blk);
    uint32_t row = (e->sketch_mask + 1) / 2;
    uint8_t *c0, *c1, est;

    if (!e->sketch) {
        return true;
    }
    c0 = &e->sketch[h & (row - 1)];
    c1 = &e->sketch[row + ((h >> 32) & (row - 1))];
    if (*c0 < UINT8_MAX) {
        (*c0)++;
    }
    if (*c1 < UINT8_MAX) {
        (*c1)++;
    }
    est = *c0 < *c1 ? *c0 : *c1;
    if (++e->sketch_ops >= row / 4) {
        for (uint32_t i = 0; i <= e->sketch_mask; i++) {
            e->sketch[i] >>= 1;
        }
        e->sketch_ops = 0;
    }
    if (est >= e->cfg.admit_after) {
        return true;
    }
    e->stats.admissions_refused++;
    return false;
}

/* A new clean entry for blk (not cached yet) in probation, or HC_NIL. */
uint32_t hc_slot_new(HcEngine *e, uint64_t blk)
{
    uint32_t s = hc_slot_get(e);

    if (s == HC_NIL) {
        return HC_NIL;
    }
    e->ent[s].blk = blk;
    e->ent[s].flags = 0;
    e->ent[s].gen = 0;
    hc_hash_add(e, s);
    hc_q_push_head(e, HC_Q_PROBATION, s);
    e->used++;
    e->stats.admissions++;
    return s;
}

void *hc_insert(HcEngine *e, uint64_t blk)
{
    uint32_t s = hc_find(e, blk);

    if (s != HC_NIL) {
        if (e->ent[s].flags & HC_F_DIRTY) {
            return NULL;    /* never overwrite newer data with origin data */
        }
        hc_touch(e, s);
        return hc_slot_data(e, s);
    }
    s = hc_slot_new(e, blk);
    return s == HC_NIL ? NULL : hc_slot_data(e, s);
}

void *hc_insert_warm(HcEngine *e, uint64_t blk)
{
    HcQueue *q = &e->q[HC_Q_PROBATION];
    uint32_t s;

    if (hc_find(e, blk) != HC_NIL ||
        (e->free_head == HC_NIL && e->next_unused == e->nslots)) {
        return NULL;    /* there already (newer), or no free slot */
    }
    s = hc_slot_new(e, blk);
    if (s == HC_NIL) {
        return NULL;
    }
    /* from the hot end of probation to its cold end */
    hc_q_unlink(e, s);
    e->ent[s].queue = HC_Q_PROBATION;
    e->ent[s].next = HC_NIL;
    e->ent[s].prev = q->tail;
    if (q->tail != HC_NIL) {
        e->ent[q->tail].next = s;
    } else {
        q->head = s;
    }
    q->tail = s;
    q->len++;
    return hc_slot_data(e, s);
}

uint64_t hc_invalidate(HcEngine *e, uint64_t first, uint64_t end)
{
    uint64_t n = 0;

    if (end <= first) {
        return 0;
    }
    if (end - first <= e->used) {
        for (uint64_t b = first; b < end; b++) {
            uint32_t s = hc_find(e, b);

            if (s != HC_NIL) {
                hc_slot_release(e, s);
                n++;
            }
        }
    } else {
        for (uint32_t s = 0; s < e->next_unused; s++) {
            if (e->ent[s].queue != HC_Q_FREE &&
                e->ent[s].blk >= first && e->ent[s].blk < end) {
                hc_slot_release(e, s);
                n++;
            }
        }
    }
    e->stats.invalidations += n;
    return n;
}

void hc_invalidate_all(HcEngine *e)
{
    hc_invalidate(e, 0, UINT64_MAX);
}

/* ---- in-flight operations ------------------------------------------------ */

static inline bool hc_overlap(const HcOp *a, const HcOp *b)
{
    return a->first < b->end && b->first < a->end;
}

static void hc_op_link(HcEngine *e, HcOp *op, HcOpKind kind,
                       uint64_t first, uint64_t end)
{
    op->first = first;
    op->end = end;
    op->kind = kind;
    op->stale = false;
    op->prev = NULL;
    op->next = e->ops;
    if (e->ops) {
        e->ops->prev = op;
    }
    e->ops = op;
}

void hc_op_fill_begin(HcEngine *e, HcOp *op, uint64_t first, uint64_t end)
{
    hc_op_link(e, op, HC_OP_FILL, first, end);
    for (HcOp *o = op->next; o; o = o->next) {
        if (o->kind == HC_OP_WRITE && hc_overlap(o, op)) {
            op->stale = true;
        }
    }
}

void hc_op_write_begin(HcEngine *e, HcOp *op, uint64_t first, uint64_t end)
{
    hc_op_link(e, op, HC_OP_WRITE, first, end);
    for (HcOp *o = op->next; o; o = o->next) {
        if (hc_overlap(o, op)) {
            o->stale = true;
            if (o->kind == HC_OP_WRITE) {
                op->stale = true;
            }
        }
    }
    hc_invalidate(e, first, end);
}

bool hc_op_end(HcEngine *e, HcOp *op)
{
    if (op->prev) {
        op->prev->next = op->next;
    } else {
        e->ops = op->next;
    }
    if (op->next) {
        op->next->prev = op->prev;
    }
    if (op->kind == HC_OP_WRITE) {
        for (HcOp *o = e->ops; o; o = o->next) {
            if (o->kind == HC_OP_FILL && hc_overlap(o, op)) {
                o->stale = true;
            }
        }
    } else if (op->stale) {
        e->stats.stale_fills++;
    }
    op->prev = op->next = NULL;
    return !op->stale;
}

/*
 * First block in [first, end) that is cached and has all of flags (0: any
 * cached block), or UINT64_MAX: block by block over short ranges, else one
 * pass over the slots.
 */
static uint64_t hc_find_first(const HcEngine *e, uint64_t first, uint64_t end,
                              uint8_t flags, uint64_t population)
{
    uint64_t best = UINT64_MAX;

    if (!population || end <= first) {
        return UINT64_MAX;
    }
    if (end - first <= population * 4) {
        for (uint64_t b = first; b < end; b++) {
            uint32_t s = hc_find(e, b);

            if (s != HC_NIL && (e->ent[s].flags & flags) == flags) {
                return b;
            }
        }
        return UINT64_MAX;
    }
    for (uint32_t s = 0; s < e->next_unused; s++) {
        const HcEntry *x = &e->ent[s];

        if (x->queue != HC_Q_FREE && (x->flags & flags) == flags &&
            x->blk >= first && x->blk < end && x->blk < best) {
            best = x->blk;
        }
    }
    return best;
}

uint64_t hc_dirty_find(const HcEngine *e, uint64_t first, uint64_t end)
{
    return hc_find_first(e, first, end, HC_F_DIRTY, e->ndirty);
}

uint64_t hc_cached_find(const HcEngine *e, uint64_t first, uint64_t end)
{
    return hc_find_first(e, first, end, 0, e->used);
}

/* ---- statistics ------------------------------------------------------------ */

HcStats *hc_engine_stats(HcEngine *e)
{
    return &e->stats;
}

uint64_t hc_engine_blocks(const HcEngine *e)
{
    return e->used;
}

uint64_t hc_engine_capacity(const HcEngine *e)
{
    return e->nslots;
}

uint64_t hc_engine_metadata_bytes(const HcEngine *e)
{
    return sizeof(*e) + (uint64_t)e->nslots * sizeof(HcEntry) +
        ((uint64_t)sizeof(uint32_t) << e->hbits) +
        (uint64_t)e->nchunks * sizeof(uint8_t *) +
        (e->sketch ? (uint64_t)e->sketch_mask + 1 : 0) +
        (uint64_t)e->dq_cap * sizeof(HcDirtyRec);
}

uint64_t hc_engine_data_bytes_allocated(const HcEngine *e)
{
    return e->chunks_allocated * e->chunk_bytes;
}

static uint32_t hc_lat_bucket(uint64_t ns)
{
    uint32_t m;

    if (ns < 4) {
        return (uint32_t)ns;
    }
    m = hc_log2(ns);
    return m * 4 + (uint32_t)((ns >> (m - 2)) & 3) - 4;
}

/* Midpoint of bucket i. */
static uint64_t hc_lat_value(uint32_t i)
{
    uint32_t m, sub;
    uint64_t lo, width;

    if (i < 4) {
        return i;
    }
    m = i / 4 + 1;
    sub = i % 4;
    lo = (uint64_t)(4 + sub) << (m - 2);
    width = 1ull << (m - 2);
    return lo + width / 2;
}

void hc_latency_record(HcLatency *l, uint64_t ns)
{
    l->count++;
    l->total_ns += ns;
    l->bucket[hc_lat_bucket(ns)]++;
}

uint64_t hc_latency_avg(const HcLatency *l)
{
    return l->count ? l->total_ns / l->count : 0;
}

uint64_t hc_latency_quantile(const HcLatency *l, double q)
{
    uint64_t want, cum = 0;

    if (!l->count) {
        return 0;
    }
    /* the sample of rank ceil(q * count): p99 of 10 samples is the top */
    want = (uint64_t)(q * (double)l->count);
    if (want < q * (double)l->count || want < 1) {
        want++;
    }
    if (want > l->count) {
        want = l->count;
    }
    for (uint32_t i = 0; i < HC_LAT_BUCKETS; i++) {
        cum += l->bucket[i];
        if (cum >= want) {
            return hc_lat_value(i);
        }
    }
    return hc_lat_value(HC_LAT_BUCKETS - 1);
}

/* ---- export and self-check ----------------------------------------------- */

size_t hc_engine_hot_blocks(const HcEngine *e, uint64_t *out, size_t max)
{
    static const int order[] = { HC_Q_PROTECTED, HC_Q_PROBATION };
    size_t n = 0;

    for (int i = 0; i < 2; i++) {
        for (uint32_t s = e->q[order[i]].head; s != HC_NIL && n < max;
             s = e->ent[s].next) {
            out[n++] = e->ent[s].blk;
        }
    }
    return n;
}

const char *hc_engine_check(const HcEngine *e)
{
    uint64_t seen = 0;

    for (int qid = HC_Q_PROBATION; qid < HC_NQUEUES; qid++) {
        uint32_t prev = HC_NIL, len = 0;

        for (uint32_t s = e->q[qid].head; s != HC_NIL; s = e->ent[s].next) {
            if (s >= e->next_unused || e->ent[s].queue != qid) {
                return "queue holds a slot of another queue";
            }
            if (e->ent[s].prev != prev) {
                return "queue back link broken";
            }
            if (hc_find(e, e->ent[s].blk) != s) {
                return "queued block not found in the hash index";
            }
            prev = s;
            if (++len > e->nslots) {
                return "queue has a cycle";
            }
        }
        if (e->q[qid].tail != prev || e->q[qid].len != len) {
            return "queue tail or length wrong";
        }
        seen += len;
    }
    if (seen != e->used) {
        return "queue lengths do not add up to the used count";
    }
    if (e->used > e->nslots || e->next_unused > e->nslots) {
        return "more slots used than capacity";
    }
    if (e->q[HC_Q_PROTECTED].len > e->protected_max) {
        return "protected segment over its limit";
    }
    {
        uint64_t nd = 0;

        for (uint32_t s = 0; s < e->next_unused; s++) {
            nd += e->ent[s].queue != HC_Q_FREE &&
                (e->ent[s].flags & HC_F_DIRTY);
        }
        if (nd != e->ndirty) {
            return "dirty count wrong";
        }
    }
    for (uint32_t s = e->free_head, n = 0; s != HC_NIL; s = e->ent[s].next) {
        if (s >= e->next_unused || e->ent[s].queue != HC_Q_FREE) {
            return "free list holds a used slot";
        }
        if (++n > e->nslots) {
            return "free list has a cycle";
        }
    }
    return NULL;
}
