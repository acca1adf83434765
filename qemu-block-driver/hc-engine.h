/*
 * hostcache engine: the block cache behind the hostcache filter driver.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * This file and hc-engine.c use only the C library, never QEMU headers, so
 * the engine is unit-tested, property-tested and fuzzed outside QEMU
 * (tests/engine).  The QEMU-facing glue is block/hostcache.c.
 *
 * Model
 * -----
 * The origin is divided into cache blocks of block_size bytes (a power of
 * two); block number b covers bytes [b * block_size, (b + 1) * block_size).
 * The RAM tier holds up to ram_size / block_size blocks in fixed slots.
 * Slot data lives in chunks allocated as the cache fills, so an idle node
 * uses little memory whatever its ram_size.
 *
 * Eviction is segmented LRU (SLRU): a block enters the probation segment;
 * a hit there promotes it to the protected segment (at most 80% of the
 * slots); victims come from the cold end of probation first.  A one-time
 * scan therefore only churns probation and the re-used set survives it.
 *
 * Admission: with admit_after > 1, a missed block is only inserted on its
 * admit_after-th miss within the recent past, counted in a small
 * frequency sketch that is halved periodically.  Requests recognised as
 * part of a sequential stream longer than seq_cutoff are not admitted.
 *
 * Races (the engine itself is not thread-safe; the caller serialises all
 * calls, and may yield between a *_begin and its hc_op_end):
 * every origin read that may fill the cache and every write, write-zeroes,
 * discard or resize is bracketed by hc_op_*_begin() / hc_op_end().  A fill
 * whose lifetime overlaps the lifetime of a write to any of its blocks is
 * "stale" and must not be installed; two writes whose lifetimes overlap on
 * a block are both stale (the origin's final content is then unknown to
 * us), so neither installs.  Cached blocks a write touches are dropped when
 * the write begins.
 *
 * Write-back (see below) keeps dirty blocks in the same index with a
 * destage queue in write-completion order.  Designed for what comes next
 * (see docs/ARCHITECTURE.md): entries have spare flag bits for a tier, so
 * an SSD tier below the RAM tier and content hashing attach to the same
 * index; hc_engine_hot_blocks() exports the hot set for warming another
 * host after a migration.
 */

#ifndef HC_ENGINE_H
#define HC_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HC_MIN_BLOCK_SIZE 512u
#define HC_MAX_BLOCK_SIZE (2u * 1024 * 1024)
/* Slot numbers are 32-bit with one value reserved as "none". */
#define HC_MAX_SLOTS 0x7fffffffu

typedef enum HcPolicy {
    HC_POLICY_SLRU = 0,     /* default: scan resistant */
    HC_POLICY_LRU,          /* plain LRU, kept for comparison benchmarks */
} HcPolicy;

typedef struct HcConfig {
    uint64_t ram_size;      /* bytes of block data, >= block_size */
    uint32_t block_size;    /* power of two, HC_MIN..HC_MAX_BLOCK_SIZE */
    uint32_t admit_after;   /* >= 1; 1 admits on the first miss */
    uint64_t seq_cutoff;    /* bytes; 0 disables sequential detection */
    HcPolicy policy;
} HcConfig;

/* Latency histogram: 4 sub-buckets per power of two of nanoseconds. */
#define HC_LAT_BUCKETS 256
typedef struct HcLatency {
    uint64_t count;
    uint64_t total_ns;
    uint64_t bucket[HC_LAT_BUCKETS];
} HcLatency;

typedef struct HcStats {
    uint64_t read_hits, read_misses;
    uint64_t read_hit_bytes, read_miss_bytes;
    uint64_t writes, write_bytes, discards, flushes;
    uint64_t admissions, admissions_refused, evictions, invalidations;
    uint64_t seq_bypasses, stale_fills, origin_errors;
    /* blocks written back to the origin, failed writes: the caller's count
     * (a destage may also go to the SSD tier's journal, which is neither) */
    uint64_t destaged, destage_errors;
    uint64_t ssd_hits, ssd_hit_bytes, ssd_demotions, ssd_corrupt, ssd_errors;
    HcLatency hit_lat, miss_lat, flush_lat;
} HcStats;

typedef struct HcEngine HcEngine;

/*
 * An in-flight origin operation, owned by the caller (typically on a
 * coroutine stack) and linked into the engine between begin and end.
 */
typedef enum HcOpKind { HC_OP_FILL, HC_OP_WRITE } HcOpKind;
typedef struct HcOp {
    uint64_t first, end;        /* block range [first, end) */
    HcOpKind kind;
    bool stale;                 /* see "Races" above */
    struct HcOp *prev, *next;
} HcOp;

/*
 * Check a configuration.  Returns 0, or -EINVAL with a message for a
 * person in err (always NUL-terminated when errlen > 0).
 */
int hc_config_check(const HcConfig *cfg, char *err, size_t errlen);

/* Create an engine; NULL with a message in err on bad config or ENOMEM. */
HcEngine *hc_engine_new(const HcConfig *cfg, char *err, size_t errlen);
void hc_engine_free(HcEngine *e);

/*
 * Change ram_size, admit_after, seq_cutoff and policy of a live engine.
 * block_size cannot change.  Shrinking evicts the coldest blocks and moves
 * the rest into the remaining slots.  On failure nothing has changed.
 */
int hc_engine_reconfigure(HcEngine *e, const HcConfig *cfg,
                          char *err, size_t errlen);

const HcConfig *hc_engine_config(const HcEngine *e);

/*
 * Sequential detection for one guest request at [offset, offset + bytes).
 * Returns true when the request continues a stream that is now longer than
 * seq_cutoff, or is itself that long; the caller then should not admit
 * (its misses) nor touch recency (its hits).  Counts seq_bypasses.
 */
bool hc_seq_check(HcEngine *e, uint64_t offset, uint64_t bytes);

/*
 * Look up block blk.  Returns its data (block_size bytes, valid until the
 * next engine call that inserts, invalidates or reconfigures), or NULL.
 * When touch is true a hit updates recency (and may promote the block).
 */
const void *hc_lookup(HcEngine *e, uint64_t blk, bool touch);
bool hc_contains(const HcEngine *e, uint64_t blk);

/*
 * Record a miss of blk (not in the cache) and decide whether to admit it.
 * Counts admissions_refused when the answer is no.
 */
bool hc_admit_miss(HcEngine *e, uint64_t blk);

/*
 * Insert (or overwrite) block blk, evicting if needed, and return its slot
 * for the caller to fill with block_size bytes before the next engine call.
 * The returned block is marked recently used.
 */
void *hc_insert(HcEngine *e, uint64_t blk);

/*
 * Warm-up (a live-migration destination): insert blk, when it is not
 * cached and a free slot is left (never evicting), at the cold end of
 * the recency order, so that blocks inserted hottest first keep their
 * order.  Returns the slot to fill, or NULL (cached already, or full).
 */
void *hc_insert_warm(HcEngine *e, uint64_t blk);

/*
 * Called with a clean block's data just before its slot is reused by an
 * eviction (to demote it to a lower tier).  The callback must not call
 * into the engine other than hc_op_fill_begin().
 */
typedef void HcEvictFn(void *opaque, uint64_t blk, const void *data);
void hc_engine_set_evict_cb(HcEngine *e, HcEvictFn *fn, void *opaque);

/* Drop every cached block in [first, end).  Returns how many were dropped. */
uint64_t hc_invalidate(HcEngine *e, uint64_t first, uint64_t end);

/* Drop everything. */
void hc_invalidate_all(HcEngine *e);

/*
 * Bracket an origin read whose data may be installed, or an origin write /
 * write-zeroes / discard / resize over blocks [first, end).
 * hc_op_write_begin() drops the cached blocks in range.
 * hc_op_end() unlinks op and returns true when its data may be installed
 * (the op is not stale).
 */
void hc_op_fill_begin(HcEngine *e, HcOp *op, uint64_t first, uint64_t end);
void hc_op_write_begin(HcEngine *e, HcOp *op, uint64_t first, uint64_t end);
bool hc_op_end(HcEngine *e, HcOp *op);

/*
 * Write-back.
 *
 * A dirty block holds data newer than the origin's.  Dirty blocks are never
 * evicted.  Every block that becomes dirty gets a record in the destage
 * queue, in write-completion order; a block rewritten while still queued
 * keeps its (older) place, so the queue position always covers the oldest
 * write not yet on the origin.  Write sequence numbers (seq) increase with
 * every write-back write; a flush that started when the last seq was F is
 * complete once hc_dirty_pending_upto(e, F) is false and the origin has
 * been flushed.
 *
 * A destage takes the queue's head (hc_destage_begin), copies the block's
 * data (valid until the next engine call), writes it to the origin without
 * the lock, and reports the result (hc_destage_end).  The block becomes
 * clean only if the write succeeded and the block was not rewritten
 * meanwhile; a failed destage goes back to the head of the queue.
 */
typedef struct HcDestage {
    uint64_t blk;
    uint64_t seq;               /* queue position this destage covers */
    uint64_t time_ns;           /* when the block became dirty */
    uint16_t gen;               /* block's write generation at begin */
    struct HcDestage *prev, *next;
} HcDestage;

/*
 * Make blk dirty for a write of the caller's data, inserting it if needed
 * (evicting a clean block).  Returns the slot to copy the data into before
 * the next engine call, or NULL when every slot is dirty.  In-flight fills
 * of blk become stale.
 */
void *hc_write_dirty(HcEngine *e, uint64_t blk, uint64_t now_ns);

/*
 * Start destaging the oldest queued dirty block, if its seq <= max_seq and
 * no write operation (hc_op_write_begin) overlapping it is in flight.
 * Returns the data to write, or NULL when nothing can start now.
 */
const void *hc_destage_begin(HcEngine *e, HcDestage *d, uint64_t max_seq);
/*
 * Start destaging block blk out of queue order (before a discard over it),
 * if it is dirty, not already in flight and not behind a write operation.
 */
const void *hc_destage_begin_blk(HcEngine *e, HcDestage *d, uint64_t blk);
void hc_destage_end(HcEngine *e, HcDestage *d, bool ok);

/* Is any write with seq <= upto not yet on the origin (queued or in flight)? */
bool hc_dirty_pending_upto(const HcEngine *e, uint64_t upto);
uint64_t hc_write_seq(const HcEngine *e);       /* last seq handed out */
uint64_t hc_dirty_blocks(const HcEngine *e);
uint64_t hc_dirty_queued(const HcEngine *e);    /* destage backlog */
/* Dirty time of the oldest queued block; false if the queue is empty. */
bool hc_dirty_oldest(HcEngine *e, uint64_t *time_ns);
bool hc_is_dirty(const HcEngine *e, uint64_t blk);
/* First dirty block in [first, end), or UINT64_MAX. */
uint64_t hc_dirty_find(const HcEngine *e, uint64_t first, uint64_t end);
/* First cached (clean or dirty) block in [first, end), or UINT64_MAX. */
uint64_t hc_cached_find(const HcEngine *e, uint64_t first, uint64_t end);

/* Statistics; the caller adds request-level counters directly. */
HcStats *hc_engine_stats(HcEngine *e);
uint64_t hc_engine_blocks(const HcEngine *e);     /* blocks cached */
uint64_t hc_engine_capacity(const HcEngine *e);   /* slots */
uint64_t hc_engine_metadata_bytes(const HcEngine *e);
uint64_t hc_engine_data_bytes_allocated(const HcEngine *e);

void hc_latency_record(HcLatency *l, uint64_t ns);
uint64_t hc_latency_avg(const HcLatency *l);
/* Value below which about q (0 < q < 1) of the samples lie; 0 if empty. */
uint64_t hc_latency_quantile(const HcLatency *l, double q);

/*
 * Export up to max block numbers, hottest first (protected segment from
 * its hot end, then probation).  Returns the number written.
 */
size_t hc_engine_hot_blocks(const HcEngine *e, uint64_t *out, size_t max);

/* Internal consistency check for tests; returns NULL or a description. */
const char *hc_engine_check(const HcEngine *e);

#ifdef __cplusplus
}
#endif

#endif /* HC_ENGINE_H */
