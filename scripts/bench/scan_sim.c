/*
 * scan_sim: hot-set hit ratio of the hostcache engine under a one-time scan,
 * for the SLRU policy the driver uses and for plain LRU (HC_POLICY_LRU,
 * which the driver does not expose).  Used by scripts/bench.py, figure d.
 *
 * Copyright (c) 2026 The hostcache authors
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The trace replays what the driver does for a 4 KiB read: hc_lookup()
 * with touch, and on a miss hc_admit_miss() then hc_insert().  Hot reads
 * pick a block uniformly from [0, hot); scan reads take a block never used
 * before.  After a hot-only warm-up, a hot-only phase gives the floor and
 * a mixed phase (scan reads interleaved at scan_per_hot per hot read, in
 * random order) gives the figure.
 *
 * usage: scan_sim slru|lru CACHE_BLOCKS HOT_BLOCKS SCAN_PER_HOT HOT_OPS
 * prints one JSON object.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc-engine.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static double rng_unit(void)
{
    return (rng() >> 11) * (1.0 / 9007199254740992.0);
}

/* One read of blk as the driver does it; returns true on a hit. */
static int sim_read(HcEngine *e, uint64_t blk)
{
    void *slot;

    if (hc_lookup(e, blk, true)) {
        return 1;
    }
    if (hc_admit_miss(e, blk)) {
        slot = hc_insert(e, blk);
        if (slot) {
            memset(slot, 0, 8);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    HcConfig cfg = { 0 };
    char err[256];
    HcEngine *e;
    uint64_t cache, hot, hot_ops, scan_next, hits, i;
    double scan_per_hot, p_scan, floor_ratio, scan_ratio;
    uint64_t scans = 0;

    if (argc != 6 || (strcmp(argv[1], "slru") && strcmp(argv[1], "lru"))) {
        fprintf(stderr, "usage: %s slru|lru CACHE_BLOCKS HOT_BLOCKS "
                "SCAN_PER_HOT HOT_OPS\n", argv[0]);
        return 2;
    }
    cache = strtoull(argv[2], NULL, 0);
    hot = strtoull(argv[3], NULL, 0);
    scan_per_hot = strtod(argv[4], NULL);
    hot_ops = strtoull(argv[5], NULL, 0);
    if (!cache || !hot || hot_ops == 0 || scan_per_hot < 0) {
        fprintf(stderr, "scan_sim: bad arguments\n");
        return 2;
    }

    cfg.block_size = 4096;
    cfg.ram_size = cache * cfg.block_size;
    cfg.admit_after = 1;
    cfg.seq_cutoff = 0;
    cfg.policy = strcmp(argv[1], "lru") ? HC_POLICY_SLRU : HC_POLICY_LRU;
    e = hc_engine_new(&cfg, err, sizeof(err));
    if (!e) {
        fprintf(stderr, "scan_sim: %s\n", err);
        return 1;
    }

    /* Warm-up: five reads per hot block on average. */
    for (i = 0; i < 5 * hot; i++) {
        sim_read(e, rng() % hot);
    }

    /* Floor: hot reads alone. */
    hits = 0;
    for (i = 0; i < hot_ops; i++) {
        hits += sim_read(e, rng() % hot);
    }
    floor_ratio = (double)hits / hot_ops;

    /* Figure: the same hot reads with scan reads mixed in. */
    p_scan = scan_per_hot / (1.0 + scan_per_hot);
    scan_next = hot + (1ull << 32);
    hits = 0;
    for (i = 0; i < hot_ops;) {
        if (rng_unit() < p_scan) {
            sim_read(e, scan_next++);
            scans++;
            continue;
        }
        hits += sim_read(e, rng() % hot);
        i++;
    }
    scan_ratio = (double)hits / hot_ops;

    printf("{\"policy\": \"%s\", \"cache_blocks\": %llu, \"hot_blocks\": %llu,"
           " \"scan_reads\": %llu, \"hot_reads\": %llu,"
           " \"hot_hit_ratio_alone\": %.6f, \"hot_hit_ratio_scan\": %.6f}\n",
           argv[1], (unsigned long long)cache, (unsigned long long)hot,
           (unsigned long long)scans, (unsigned long long)hot_ops,
           floor_ratio, scan_ratio);
    hc_engine_free(e);
    return 0;
}
