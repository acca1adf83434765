/*
 * hostcache engine: the state that hc-engine.c (index, SLRU, admission,
 * operations, accounting) and hc-engine-dirty.c (write-back: dirty blocks
 * and the destage queue) share.  Private to those two files.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef HC_ENGINE_INT_H
#define HC_ENGINE_INT_H

#include <stdint.h>

#include "hc-engine.h"
#include "hc-hash.h"

#define HC_NIL UINT32_MAX
#define HC_CHUNK_BYTES (2u * 1024 * 1024)
#define HC_STREAMS 16
#define HC_PROTECTED_PERCENT 80

enum { HC_Q_FREE = 0, HC_Q_PROBATION = 1, HC_Q_PROTECTED = 2, HC_NQUEUES };

/* Per-slot metadata: 24 bytes.  Invariants in the comments. */
typedef struct HcEntry {
    uint64_t blk;       /* block number; meaningful when queue != FREE */
    uint32_t prev;      /* towards the hot (head) end of the queue, or NIL */
    uint32_t next;      /* towards the cold end; free-list link when FREE */
    uint32_t hnext;     /* next slot in the same hash bucket, or NIL */
    uint8_t queue;      /* HC_Q_*; FREE slots are in no queue nor bucket */
    uint8_t flags;      /* HC_F_*; a block with any flag is never evicted */
    uint16_t gen;       /* write generation, bumped by every dirtying write */
} HcEntry;

#define HC_F_DIRTY      0x01    /* newer than the origin */
#define HC_F_QUEUED     0x02    /* has a record in the destage queue */
#define HC_F_DESTAGE    0x04    /* a destage of it is in flight */

/* A destage queue record; the queue is a ring in seq order. */
typedef struct HcDirtyRec {
    uint64_t blk;
    uint64_t seq;
    uint64_t time_ns;
} HcDirtyRec;

typedef struct HcQueue {
    uint32_t head;      /* most recently used, or NIL when empty */
    uint32_t tail;      /* least recently used, or NIL when empty */
    uint32_t len;
} HcQueue;

typedef struct HcStream {
    uint64_t next_off;  /* where a continuing request would start */
    uint64_t run;       /* bytes of the stream so far; 0 = unused */
    uint64_t tick;      /* last use, for replacement */
} HcStream;

struct HcEngine {
    HcConfig cfg;
    uint32_t bshift;            /* log2(block_size) */
    uint32_t nslots;            /* capacity: ram_size / block_size */
    uint32_t used;              /* slots not FREE */
    uint32_t next_unused;       /* slots >= this were never handed out */
    uint32_t free_head;         /* free slots below next_unused */
    HcEntry *ent;               /* [nslots] */

    uint32_t *bucket;           /* [nbuckets] heads of hash chains */
    uint32_t hbits;             /* nbuckets = 1 << hbits */

    uint8_t **chunk;            /* [nchunks], NULL until first used */
    uint32_t nchunks;
    uint32_t cshift;            /* log2(slots per chunk) */
    uint64_t chunk_bytes;
    uint64_t chunks_allocated;

    HcQueue q[HC_NQUEUES];
    uint32_t protected_max;     /* 0 with HC_POLICY_LRU */

    uint8_t *sketch;            /* admission counters, NULL if admit_after 1 */
    uint32_t sketch_mask;
    uint64_t sketch_ops;        /* increments since the last halving */

    HcStream stream[HC_STREAMS];
    uint64_t tick;

    HcOp *ops;                  /* in-flight fills and writes */
    HcEvictFn *evict_cb;        /* demotion hook, or NULL */
    void *evict_opaque;

    HcDirtyRec *dq;             /* destage queue ring, [dq_cap] */
    size_t dq_cap, dq_head, dq_len;
    uint64_t wseq;              /* last write-back seq handed out */
    uint64_t ndirty;            /* blocks with HC_F_DIRTY */
    HcDestage *destaging;       /* in-flight destages */

    HcStats stats;
};

HC_HASH_DEFINE(hc_, HcEngine, ent, HC_NIL)

/* The data of slot s (allocated: the slot was handed out). */
static inline uint8_t *hc_slot_data(const HcEngine *e, uint32_t s)
{
    return e->chunk[s >> e->cshift] +
        ((uint64_t)(s & ((1u << e->cshift) - 1)) << e->bshift);
}

/* A new slot for blk, evicting if need be; HC_NIL when none can be had. */
uint32_t hc_slot_new(HcEngine *e, uint64_t blk);
/* Slot s was used: SLRU promotion. */
void hc_touch(HcEngine *e, uint32_t s);

#endif /* HC_ENGINE_INT_H */
