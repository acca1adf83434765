/*
 * Fuzz target: what the driver does with an SSD tier found on disk
 * (qemu-block-driver/hc-ssd.c, QEMU-free).  The input is a small header
 * (the node's options) followed by the device's bytes.  It runs the same
 * decisions as hostcache_ssd_attach(): superblock pick, the open plan,
 * the slot table's recovery, the plan after loading, then journal
 * bookkeeping over the recovered index, and checks the index's invariants
 * (hc_ssd_check) at every step: a crash, a hang, an out-of-bounds access
 * (ASan) or a broken invariant is a bug.
 *
 * Input: byte 0 flags (1 ssd-create, 2 activation, 4 drop, 8 read-only),
 * byte 1 block-size shift (9 + b % 13: 512 B .. 2 MiB), bytes 2-3 the
 * origin's size in blocks (little endian), then the device.
 *
 * Copyright (c) 2026 The hostcache authors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc-journal.h"
#include "hc-ssd.h"

#define HDR 4

static void fuzz_check(const HcSsd *ssd, const char *where)
{
    const char *why = hc_ssd_check(ssd);

    if (why) {
        fprintf(stderr, "hc_ssd_check after %s: %s\n", where, why);
        abort();
    }
}

/* The bytes of the device at [off, off + len), zeroes past its end. */
static void dev_read(const uint8_t *dev, size_t dev_len, uint64_t off,
                     uint8_t *buf, size_t len)
{
    memset(buf, 0, len);
    if (off < dev_len) {
        size_t n = dev_len - off < len ? dev_len - off : len;

        memcpy(buf, dev + off, n);
    }
}

/*
 * What the destager does with a recovered journal: batches in journal
 * order (hc_journal_pick), each written back (mark clean, or release a
 * kept older version), until nothing is dirty.
 */
static void fuzz_write_back(HcSsd *ssd)
{
    HcJournal *j = hc_journal_new();
    HcJEntry batch[16];
    const char *why;
    size_t n, next;
    int rounds = 0;

    if (!j || hc_journal_rebuild(j, ssd) < 0) {
        hc_journal_free(j);
        return;
    }
    why = hc_journal_check(j, ssd);
    if (why) {
        fprintf(stderr, "hc_journal_check after recovery: %s\n", why);
        abort();
    }
    while ((n = hc_journal_pick(j, ssd, batch, 16, &next)) > 0) {
        for (size_t i = 0; i < n; i++) {
            hc_ssd_unpin(ssd, batch[i].slot);
            if (hc_ssd_mark_clean(ssd, batch[i].slot, batch[i].seq) ==
                HC_SSD_NONE && hc_ssd_is_kept(ssd, batch[i].slot, NULL)) {
                hc_ssd_release_kept(ssd, batch[i].slot);
            }
        }
        hc_journal_advance(j, next);
        if (++rounds > 1 << 20) {
            fprintf(stderr, "the recovered journal never drains\n");
            abort();
        }
    }
    if (hc_ssd_dirty_blocks(ssd) + hc_ssd_kept_dirty(ssd)) {
        fprintf(stderr, "dirty blocks left after the journal drained\n");
        abort();
    }
    hc_journal_free(j);
}

/* What the destager and the journal do with a recovered index. */
static void fuzz_journal(HcSsd *ssd)
{
    fuzz_write_back(ssd);
    fuzz_check(ssd, "destaging the journal");
    for (int i = 0; i < 8; i++) {
        uint64_t victim, kept, slot = hc_ssd_alloc(ssd, &victim);

        if (slot == HC_SSD_NONE) {
            break;
        }
        hc_ssd_commit_dirty(ssd, slot, i, hc_ssd_next_seq(ssd), 0, &kept);
        if (kept != HC_SSD_NONE) {
            hc_ssd_release_kept(ssd, kept);
        }
    }
    fuzz_check(ssd, "journaling");
    hc_ssd_invalidate_all(ssd);
    fuzz_check(ssd, "dropping everything");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t copies[2 * HC_SSD_SB_SIZE], sector[HC_SSD_SECTOR];
    const uint8_t *dev;
    size_t dev_len;
    HcSsdSuper sb;
    HcSsdOpen o = { .origin_id = "fuzz-origin", .node_name = "ssd0" };
    const char *why;
    char err[512];
    HcSsdPlan plan;
    HcSsd *ssd;
    int pick;

    if (size < HDR) {
        return 0;
    }
    o.ssd_create = data[0] & 1;
    o.activation = data[0] & 2;
    o.drop = data[0] & 4;
    o.read_only = data[0] & 8;
    o.block_size = 1u << (9 + data[1] % 13);
    o.origin_size = (uint64_t)(data[2] | data[3] << 8) * o.block_size;
    dev = data + HDR;
    dev_len = size - HDR;
    o.dev_size = dev_len;

    dev_read(dev, dev_len, 0, copies, sizeof(copies));
    pick = dev_len < sizeof(copies) ? -ENOENT :
        hc_ssd_super_pick(copies, copies + HC_SSD_SB_SIZE, &sb, err,
                          sizeof(err));
    if (pick == -EINVAL) {
        return 0;
    }
    plan = hc_ssd_plan_open(pick, &sb, &o, &why, err, sizeof(err));
    if (plan == HC_SSD_PLAN_FORMAT) {
        HcSsdSuper f = { .version = HC_SSD_VERSION,
                         .block_size = o.block_size,
                         .origin_size = o.origin_size,
                         .state = HC_SSD_STATE_OPEN };
        uint8_t buf[HC_SSD_SB_SIZE];
        HcSsdSuper back;

        strcpy(f.origin_id, o.origin_id);
        if (hc_ssd_layout(&f, o.dev_size, err, sizeof(err)) < 0) {
            return 0;
        }
        hc_ssd_super_encode(&f, buf);
        memset(copies, 0, sizeof(copies));
        if (hc_ssd_super_pick(buf, copies, &back, err, sizeof(err)) != 0 ||
            hc_ssd_tier_end(&back) > o.dev_size) {
            fprintf(stderr, "a fresh layout does not read back: %s\n", err);
            abort();
        }
        return 0;
    }
    if (plan != HC_SSD_PLAN_LOAD) {
        return 0;
    }
    if (hc_ssd_tier_end(&sb) > o.dev_size) {
        fprintf(stderr, "LOAD of a tier larger than its device\n");
        abort();
    }
    ssd = hc_ssd_new(&sb);
    if (!ssd) {
        return 0;
    }
    for (uint64_t sec = 0; sec < hc_ssd_sectors(ssd); sec++) {
        dev_read(dev, dev_len, hc_ssd_sector_offset(ssd, sec), sector,
                 sizeof(sector));
        for (unsigned i = 0; i < HC_SSD_PER_SECTOR; i++) {
            uint64_t blk, seq;
            uint32_t crc;
            bool dirty;

            hc_ssd_entry_decode(sector + i * HC_SSD_ENTRY_SIZE, sb.cache_gen,
                                &blk, &seq, &crc, &dirty);
        }
        hc_ssd_load_sector(ssd, sec, sector);
    }
    hc_ssd_load_done(ssd);
    fuzz_check(ssd, "recovery");
    plan = hc_ssd_plan_loaded(&sb, why, hc_ssd_dirty_blocks(ssd),
                              hc_ssd_damaged(ssd), &o, err, sizeof(err));
    if (plan == HC_SSD_PLAN_KEEP) {
        for (uint64_t sec = 0; sec < hc_ssd_sectors(ssd); sec++) {
            hc_ssd_encode_sector(ssd, sec, sector);
        }
        fuzz_journal(ssd);
    }
    hc_ssd_free(ssd);
    return 0;
}
