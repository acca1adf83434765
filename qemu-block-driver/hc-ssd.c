/*
 * hostcache SSD tier: the in-memory index of a tier's slots (load,
 * allocation, CLOCK, dirty entries, durable drops).  The on-disk format and
 * the open plan are hc-ssd-format.c.  See hc-ssd.h and docs/SSD-FORMAT.md.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hc-hash.h"
#include "hc-ssd.h"
#include "hc-ssd-int.h"

#define HC_SSD_NIL UINT32_MAX

/*
 * KEPT: an older entry of a block whose newer dirty entry is not durable
 * yet; it stays on the device (and in encoded sectors), out of the index,
 * until hc_ssd_release_kept().
 */
enum {
    HC_SLOT_FREE = 0, HC_SLOT_VALID = 1, HC_SLOT_RESERVED = 2,
    HC_SLOT_KEPT = 3,
};

/* In-memory state of one data slot. */
typedef struct HcSsdSlot {
    uint64_t blk;       /* block held; meaningful when VALID */
    uint64_t seq;       /* entry sequence number */
    uint32_t crc;       /* CRC32C of the slot's data */
    uint32_t hnext;     /* hash chain (VALID slots only) */
    uint8_t state;      /* HC_SLOT_* */
    uint8_t ref;        /* CLOCK reference bit */
    uint8_t dirty;      /* write-back journal: not yet on the origin */
    uint16_t pins;      /* > 0: I/O in flight, must not be reused */
    /*
     * An older entry of this block was released in sector guard_sec at
     * generation guard_gen: until that sector is on the device, this slot
     * is no CLOCK victim (the older entry must not become the newest).
     */
    uint32_t guard_sec;
    uint64_t guard_gen;
} HcSsdSlot;

typedef struct HcSsdPending {
    uint64_t blk, sec, gen;
} HcSsdPending;

struct HcSsd {
    HcSsdSuper sb;
    uint32_t nslots;
    HcSsdSlot *slot;
    uint32_t *bucket;
    uint32_t hbits;
    uint32_t *free_stack;       /* FREE slots */
    uint32_t nfree;
    uint32_t hand;              /* CLOCK hand */
    uint64_t used;              /* VALID slots */
    uint64_t ndirty;            /* VALID dirty slots */
    uint64_t nkept_dirty;       /* KEPT dirty slots (older versions) */
    uint64_t seq;               /* last sequence number handed out */
    uint64_t recovered;
    uint64_t damaged;           /* entries neither empty nor valid */
    uint64_t nsectors;
    uint64_t origin_blocks;     /* entries name blocks below this */
    uint64_t *sec_gen;          /* in-memory generation per table sector */
    uint64_t *sec_disk;         /* generation last written per sector */
    /*
     * Blocks whose entry was dropped in memory, in a sector whose
     * generation gen carries the drop, not yet durable on the device; and
     * sector writes (sec, gen) without FUA awaiting a flush, in order.
     */
    HcSsdPending *pending;
    size_t npending, cap_pending;
    HcSsdPending *unflushed;
    size_t nunflushed, cap_unflushed;
};

/* ---- index ------------------------------------------------------------------ */

HC_HASH_DEFINE(hc_ssd_, HcSsd, slot, HC_SSD_NIL)

uint64_t hc_ssd_sector_of(uint64_t slot)
{
    return slot / HC_SSD_PER_SECTOR;
}

static void hc_ssd_touch_sector(HcSsd *ssd, uint64_t slot)
{
    ssd->sec_gen[hc_ssd_sector_of(slot)]++;
}

/* VALID -> FREE (in memory); the caller persists the sector. */
static void hc_ssd_drop(HcSsd *ssd, uint32_t s)
{
    hc_ssd_hash_del(ssd, s);
    ssd->slot[s].state = HC_SLOT_FREE;
    if (ssd->slot[s].dirty) {
        ssd->slot[s].dirty = 0;
        ssd->ndirty--;
    }
    ssd->used--;
    hc_ssd_touch_sector(ssd, s);
    if (!ssd->slot[s].pins) {
        ssd->free_stack[ssd->nfree++] = s;
    }
}

HcSsd *hc_ssd_new(const HcSsdSuper *sb)
{
    HcSsd *ssd = calloc(1, sizeof(*ssd));
    uint32_t bits = 4;

    if (!ssd) {
        return NULL;
    }
    ssd->sb = *sb;
    ssd->nslots = (uint32_t)sb->nslots;
    ssd->origin_blocks = sb->block_size ?
        sb->origin_size / sb->block_size +
        !!(sb->origin_size % sb->block_size) : 0;
    while ((1ull << bits) < sb->nslots / 2) {
        bits++;
    }
    ssd->hbits = bits;
    ssd->nsectors = (sb->nslots + HC_SSD_PER_SECTOR - 1) / HC_SSD_PER_SECTOR;
    ssd->slot = calloc(ssd->nslots, sizeof(*ssd->slot));
    ssd->bucket = malloc(sizeof(uint32_t) << bits);
    ssd->free_stack = malloc(sizeof(uint32_t) * ssd->nslots);
    ssd->sec_gen = calloc(ssd->nsectors, sizeof(uint64_t));
    ssd->sec_disk = calloc(ssd->nsectors, sizeof(uint64_t));
    if (!ssd->slot || !ssd->bucket || !ssd->free_stack || !ssd->sec_gen ||
        !ssd->sec_disk) {
        hc_ssd_free(ssd);
        return NULL;
    }
    memset(ssd->bucket, 0xff, sizeof(uint32_t) << bits);
    return ssd;
}

void hc_ssd_free(HcSsd *ssd)
{
    if (!ssd) {
        return;
    }
    free(ssd->slot);
    free(ssd->bucket);
    free(ssd->free_stack);
    free(ssd->sec_gen);
    free(ssd->sec_disk);
    free(ssd->pending);
    free(ssd->unflushed);
    free(ssd);
}

const HcSsdSuper *hc_ssd_super(const HcSsd *ssd)
{
    return &ssd->sb;
}

HcSsdSuper *hc_ssd_super_mut(HcSsd *ssd)
{
    return &ssd->sb;
}

uint64_t hc_ssd_sectors(const HcSsd *ssd)
{
    return ssd->nsectors;
}

uint64_t hc_ssd_sector_offset(const HcSsd *ssd, uint64_t sector)
{
    return ssd->sb.meta_offset + sector * HC_SSD_SECTOR;
}

void hc_ssd_load_sector(HcSsd *ssd, uint64_t sector, const uint8_t *buf)
{
    for (uint32_t i = 0; i < HC_SSD_PER_SECTOR; i++) {
        const uint8_t *e = buf + i * HC_SSD_ENTRY_SIZE;
        uint64_t s64 = sector * HC_SSD_PER_SECTOR + i;
        uint32_t s, old;
        uint16_t flags;

        if (s64 >= ssd->nslots) {
            continue;
        }
        if (get_le32(e + 28) != hc_crc32c(0, e, 28)) {
            /*
             * Never written or freed (zeroes), or damaged: 32-byte entries
             * do not straddle 512-byte device sectors, so a torn table
             * write leaves whole old or new entries, never a bad CRC.
             */
            ssd->damaged += !hc_all_zero(e, HC_SSD_ENTRY_SIZE);
            continue;
        }
        flags = get_le16(e + 24);
        if (!(flags & HC_SSD_ENTRY_VALID) ||
            get_le32(e + 20) != (uint32_t)ssd->sb.cache_gen) {
            continue;
        }
        if (get_le64(e) >= ssd->origin_blocks ||
            get_le64(e + 8) > HC_SSD_SEQ_MAX) {
            /*
             * Valid CRC, impossible content (a block past the origin's
             * end, a sequence number no run can reach): damaged, never
             * loaded (a destage would write past the end; a huge seq
             * would wrap the next one).
             */
            ssd->damaged++;
            continue;
        }
        s = (uint32_t)s64;
        ssd->slot[s] = (HcSsdSlot) {
            .blk = get_le64(e), .seq = get_le64(e + 8),
            .crc = get_le32(e + 16), .state = HC_SLOT_VALID,
            .dirty = !!(flags & HC_SSD_ENTRY_DIRTY), .guard_sec = HC_SSD_NIL,
        };
        if (ssd->slot[s].seq > ssd->seq) {
            ssd->seq = ssd->slot[s].seq;
        }
        old = hc_ssd_find(ssd, ssd->slot[s].blk);
        if (old != HC_SSD_NIL) {
            /* two entries for one block: the newer one wins */
            uint32_t loser = ssd->slot[old].seq > ssd->slot[s].seq ? s : old;

            if (loser == old) {
                hc_ssd_hash_del(ssd, old);
                hc_ssd_hash_add(ssd, s);
            }
            ssd->recovered--;
            ssd->used--;
            if (ssd->slot[loser].dirty) {
                /*
                 * An older journaled version: KEPT, as it is on the device,
                 * until the destager has written it, so that the origin
                 * goes through every flush epoch during recovery too
                 * (hc_ssd_load_done() drops it if the newest is clean).
                 */
                ssd->slot[loser].state = HC_SLOT_KEPT;
                ssd->slot[loser].pins = 1;
            } else {
                ssd->slot[loser].state = HC_SLOT_FREE;
                hc_ssd_touch_sector(ssd, loser);
            }
        } else {
            hc_ssd_hash_add(ssd, s);
        }
        ssd->recovered++;
        ssd->used++;
    }
}

void hc_ssd_load_done(HcSsd *ssd)
{
    ssd->nfree = 0;
    ssd->ndirty = 0;
    ssd->nkept_dirty = 0;
    for (uint32_t s = 0; s < ssd->nslots; s++) {
        HcSsdSlot *x = &ssd->slot[s];
        uint32_t w;

        if (x->state != HC_SLOT_KEPT) {
            continue;
        }
        /* an older version whose newest entry is clean is on the origin */
        w = hc_ssd_find(ssd, x->blk);
        if (w == HC_SSD_NIL || !ssd->slot[w].dirty) {
            x->state = HC_SLOT_FREE;
            x->pins = 0;
            hc_ssd_touch_sector(ssd, s);
        } else {
            ssd->nkept_dirty++;
        }
    }
    for (uint32_t s = ssd->nslots; s-- > 0;) {
        if (ssd->slot[s].state == HC_SLOT_FREE) {
            ssd->slot[s].dirty = 0;
            ssd->slot[s].guard_sec = HC_SSD_NIL;
            ssd->free_stack[ssd->nfree++] = s;
        } else if (ssd->slot[s].state == HC_SLOT_VALID &&
                   ssd->slot[s].dirty) {
            ssd->ndirty++;
        }
    }
}

bool hc_ssd_entry_decode(const uint8_t *e, uint64_t cache_gen,
                         uint64_t *blk, uint64_t *seq, uint32_t *data_crc,
                         bool *dirty)
{
    uint16_t flags;

    if (get_le32(e + 28) != hc_crc32c(0, e, 28)) {
        return false;
    }
    flags = get_le16(e + 24);
    if (!(flags & HC_SSD_ENTRY_VALID) ||
        get_le32(e + 20) != (uint32_t)cache_gen) {
        return false;
    }
    if (get_le64(e + 8) > HC_SSD_SEQ_MAX) {
        return false;   /* impossible: damaged (hc_ssd_load_sector) */
    }
    *blk = get_le64(e);
    *seq = get_le64(e + 8);
    *data_crc = get_le32(e + 16);
    *dirty = !!(flags & HC_SSD_ENTRY_DIRTY);
    return true;
}

void hc_ssd_encode_sector(const HcSsd *ssd, uint64_t sector, uint8_t *buf)
{
    memset(buf, 0, HC_SSD_SECTOR);
    for (uint32_t i = 0; i < HC_SSD_PER_SECTOR; i++) {
        uint64_t s = sector * HC_SSD_PER_SECTOR + i;
        uint8_t *e = buf + i * HC_SSD_ENTRY_SIZE;
        const HcSsdSlot *x;

        if (s >= ssd->nslots || (ssd->slot[s].state != HC_SLOT_VALID &&
                                 ssd->slot[s].state != HC_SLOT_KEPT)) {
            continue;   /* all zeroes: no valid CRC, so no entry */
        }
        x = &ssd->slot[s];
        put_le64(e, x->blk);
        put_le64(e + 8, x->seq);
        put_le32(e + 16, x->crc);
        put_le32(e + 20, (uint32_t)ssd->sb.cache_gen);
        put_le16(e + 24, HC_SSD_ENTRY_VALID |
                 (x->dirty ? HC_SSD_ENTRY_DIRTY : 0));
        put_le32(e + 28, hc_crc32c(0, e, 28));
    }
}

uint64_t hc_ssd_next_unwritten(const HcSsd *ssd, uint64_t from)
{
    for (uint64_t i = from; i < ssd->nsectors; i++) {
        if (ssd->sec_gen[i] > ssd->sec_disk[i]) {
            return i;
        }
    }
    return HC_SSD_NONE;
}

uint64_t hc_ssd_sector_gen(const HcSsd *ssd, uint64_t sector)
{
    return ssd->sec_gen[sector];
}

uint64_t hc_ssd_sector_disk_gen(const HcSsd *ssd, uint64_t sector)
{
    return ssd->sec_disk[sector];
}

void hc_ssd_sector_written(HcSsd *ssd, uint64_t sector, uint64_t gen)
{
    if (gen > ssd->sec_disk[sector]) {
        ssd->sec_disk[sector] = gen;
    }
    for (size_t i = 0; i < ssd->npending;) {
        if (ssd->pending[i].sec == sector && ssd->pending[i].gen <= gen) {
            ssd->pending[i] = ssd->pending[--ssd->npending];
        } else {
            i++;
        }
    }
}

static int hc_ssd_pending_push(HcSsdPending **a, size_t *n, size_t *cap,
                               HcSsdPending p)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        HcSsdPending *b = realloc(*a, c * sizeof(*b));

        if (!b) {
            return -ENOMEM;
        }
        *a = b;
        *cap = c;
    }
    (*a)[(*n)++] = p;
    return 0;
}

int hc_ssd_pending_add(HcSsd *ssd, uint64_t blk, uint64_t sector)
{
    HcSsdPending p = { blk, sector, ssd->sec_gen[sector] };

    return hc_ssd_pending_push(&ssd->pending, &ssd->npending,
                               &ssd->cap_pending, p);
}

void hc_ssd_pending_sectors(const HcSsd *ssd, uint64_t first, uint64_t end,
                            void (*sector_cb)(void *opaque, uint64_t sector),
                            void *opaque)
{
    for (size_t i = 0; i < ssd->npending; i++) {
        if (ssd->pending[i].blk >= first && ssd->pending[i].blk < end) {
            sector_cb(opaque, ssd->pending[i].sec);
        }
    }
}

void hc_ssd_pending_clear(HcSsd *ssd)
{
    ssd->npending = 0;
}

size_t hc_ssd_pending_count(const HcSsd *ssd)
{
    return ssd->npending;
}

int hc_ssd_sector_unflushed(HcSsd *ssd, uint64_t sector, uint64_t gen)
{
    HcSsdPending p = { 0, sector, gen };

    return hc_ssd_pending_push(&ssd->unflushed, &ssd->nunflushed,
                               &ssd->cap_unflushed, p);
}

size_t hc_ssd_unflushed_count(const HcSsd *ssd)
{
    return ssd->nunflushed;
}

void hc_ssd_flushed(HcSsd *ssd, size_t n)
{
    n = n < ssd->nunflushed ? n : ssd->nunflushed;
    if (!n) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        hc_ssd_sector_written(ssd, ssd->unflushed[i].sec,
                              ssd->unflushed[i].gen);
    }
    memmove(ssd->unflushed, ssd->unflushed + n,
            (ssd->nunflushed - n) * sizeof(*ssd->unflushed));
    ssd->nunflushed -= n;
}

uint64_t hc_ssd_lookup(HcSsd *ssd, uint64_t blk, uint32_t *data_crc)
{
    uint32_t s = hc_ssd_find(ssd, blk);

    if (s == HC_SSD_NIL) {
        return HC_SSD_NONE;
    }
    ssd->slot[s].ref = 1;
    if (data_crc) {
        *data_crc = ssd->slot[s].crc;
    }
    return s;
}

uint64_t hc_ssd_data_offset(const HcSsd *ssd, uint64_t slot)
{
    return ssd->sb.data_offset + slot * ssd->sb.block_size;
}

uint64_t hc_ssd_alloc(HcSsd *ssd, uint64_t *victim_blk)
{
    uint32_t s;

    *victim_blk = HC_SSD_NONE;
    if (ssd->nfree) {
        s = ssd->free_stack[--ssd->nfree];
    } else {
        uint64_t steps;

        for (steps = 0; steps < 2ull * ssd->nslots; steps++) {
            HcSsdSlot *x = &ssd->slot[ssd->hand];

            s = ssd->hand;
            ssd->hand = ssd->hand + 1 == ssd->nslots ? 0 : ssd->hand + 1;
            if (x->state != HC_SLOT_VALID || x->pins || x->dirty) {
                continue;
            }
            if (x->guard_sec != HC_SSD_NIL) {
                if (ssd->sec_disk[x->guard_sec] < x->guard_gen) {
                    continue;
                }
                x->guard_sec = HC_SSD_NIL;
            }
            if (x->ref) {
                x->ref = 0;
                continue;
            }
            /* The victim's entry stays on disk until the slot is reused;
             * its data CRC no longer matching makes it a miss. */
            hc_ssd_hash_del(ssd, s);
            ssd->used--;
            hc_ssd_touch_sector(ssd, s);
            *victim_blk = x->blk;
            break;
        }
        if (steps == 2ull * ssd->nslots) {
            return HC_SSD_NONE;
        }
    }
    ssd->slot[s].state = HC_SLOT_RESERVED;
    ssd->slot[s].pins = 1;
    ssd->slot[s].ref = 0;
    ssd->slot[s].dirty = 0;
    ssd->slot[s].guard_sec = HC_SSD_NIL;
    return s;
}

uint64_t hc_ssd_commit(HcSsd *ssd, uint64_t slot, uint64_t blk,
                       uint32_t data_crc, uint64_t *old_sec)
{
    HcSsdSlot *x = &ssd->slot[slot];
    uint32_t old = hc_ssd_find(ssd, blk);

    *old_sec = HC_SSD_NONE;
    if (old != HC_SSD_NIL) {
        assert(!ssd->slot[old].dirty);  /* journaled data is never dropped */
        hc_ssd_drop(ssd, old);
        *old_sec = hc_ssd_sector_of(old);
    }
    x->dirty = 0;
    x->blk = blk;
    x->seq = ++ssd->seq;
    x->crc = data_crc;
    x->state = HC_SLOT_VALID;
    x->pins--;
    hc_ssd_hash_add(ssd, (uint32_t)slot);
    ssd->used++;
    hc_ssd_touch_sector(ssd, slot);
    return hc_ssd_sector_of(slot);
}

void hc_ssd_seq_at_least(HcSsd *ssd, uint64_t seq)
{
    if (ssd->seq < seq) {
        ssd->seq = seq;
    }
}

uint64_t hc_ssd_next_seq(HcSsd *ssd)
{
    return ++ssd->seq;
}

uint64_t hc_ssd_commit_dirty(HcSsd *ssd, uint64_t slot, uint64_t blk,
                             uint64_t seq, uint32_t data_crc, uint64_t *kept)
{
    HcSsdSlot *x = &ssd->slot[slot];
    uint32_t old = hc_ssd_find(ssd, blk);

    *kept = HC_SSD_NONE;
    if (old != HC_SSD_NIL) {
        /* stays on the device, as it is, until the new entry is durable */
        hc_ssd_hash_del(ssd, old);
        if (ssd->slot[old].dirty) {
            ssd->ndirty--;
            ssd->nkept_dirty++;
        }
        ssd->slot[old].state = HC_SLOT_KEPT;
        ssd->slot[old].pins++;
        ssd->used--;
        *kept = old;
    }
    x->blk = blk;
    x->seq = seq;
    x->crc = data_crc;
    x->state = HC_SLOT_VALID;
    x->dirty = 1;
    x->pins--;
    hc_ssd_hash_add(ssd, (uint32_t)slot);
    ssd->used++;
    ssd->ndirty++;
    hc_ssd_touch_sector(ssd, slot);
    return hc_ssd_sector_of(slot);
}

uint64_t hc_ssd_release_kept(HcSsd *ssd, uint64_t kept)
{
    HcSsdSlot *x = &ssd->slot[kept];
    uint64_t sec = hc_ssd_sector_of(kept);
    uint32_t now = hc_ssd_find(ssd, x->blk);

    assert(x->state == HC_SLOT_KEPT && x->pins);
    if (x->dirty) {
        ssd->nkept_dirty--;
    }
    x->state = HC_SLOT_FREE;
    x->dirty = 0;
    hc_ssd_touch_sector(ssd, kept);
    if (now != HC_SSD_NIL) {
        ssd->slot[now].guard_sec = (uint32_t)sec;
        ssd->slot[now].guard_gen = ssd->sec_gen[sec];
    }
    if (--x->pins == 0) {
        ssd->free_stack[ssd->nfree++] = (uint32_t)kept;
    }
    return sec;
}

bool hc_ssd_is_dirty(const HcSsd *ssd, uint64_t slot, uint64_t seq)
{
    const HcSsdSlot *x = &ssd->slot[slot];

    return (x->state == HC_SLOT_VALID || x->state == HC_SLOT_KEPT) &&
        x->dirty && x->seq == seq;
}

bool hc_ssd_is_kept(const HcSsd *ssd, uint64_t slot, bool *dirty)
{
    const HcSsdSlot *x = &ssd->slot[slot];

    if (dirty) {
        *dirty = x->dirty;
    }
    return x->state == HC_SLOT_KEPT;
}

uint64_t hc_ssd_kept_dirty(const HcSsd *ssd)
{
    return ssd->nkept_dirty;
}

uint64_t hc_ssd_slot_blk(const HcSsd *ssd, uint64_t slot, uint64_t *seq,
                         uint32_t *data_crc)
{
    const HcSsdSlot *x = &ssd->slot[slot];

    if (seq) {
        *seq = x->seq;
    }
    if (data_crc) {
        *data_crc = x->crc;
    }
    return x->blk;
}

uint64_t hc_ssd_mark_clean(HcSsd *ssd, uint64_t slot, uint64_t seq)
{
    HcSsdSlot *x = &ssd->slot[slot];

    if (!hc_ssd_is_dirty(ssd, slot, seq) || x->state != HC_SLOT_VALID) {
        return HC_SSD_NONE;
    }
    x->dirty = 0;
    ssd->ndirty--;
    hc_ssd_touch_sector(ssd, slot);
    /* no CLOCK victim until the device has the clean mark: the dirty
     * entry would still claim the slot's new data */
    x->guard_sec = (uint32_t)hc_ssd_sector_of(slot);
    x->guard_gen = ssd->sec_gen[x->guard_sec];
    return hc_ssd_sector_of(slot);
}

uint64_t hc_ssd_dirty_blocks(const HcSsd *ssd)
{
    return ssd->ndirty;
}

uint64_t hc_ssd_next_dirty(const HcSsd *ssd, uint64_t from)
{
    for (uint64_t s = from; s < ssd->nslots; s++) {
        if ((ssd->slot[s].state == HC_SLOT_VALID ||
             ssd->slot[s].state == HC_SLOT_KEPT) && ssd->slot[s].dirty) {
            return s;
        }
    }
    return HC_SSD_NONE;
}

bool hc_ssd_dirty_in_range(const HcSsd *ssd, uint64_t first, uint64_t end)
{
    if (!ssd->ndirty || end <= first) {
        return false;
    }
    if (end - first <= ssd->ndirty * 4) {
        for (uint64_t b = first; b < end; b++) {
            uint32_t s = hc_ssd_find(ssd, b);

            if (s != HC_SSD_NIL && ssd->slot[s].dirty) {
                return true;
            }
        }
        return false;
    }
    for (uint32_t s = 0; s < ssd->nslots; s++) {
        if (ssd->slot[s].state == HC_SLOT_VALID && ssd->slot[s].dirty &&
            ssd->slot[s].blk >= first && ssd->slot[s].blk < end) {
            return true;
        }
    }
    return false;
}

void hc_ssd_release(HcSsd *ssd, uint64_t slot)
{
    HcSsdSlot *x = &ssd->slot[slot];

    x->state = HC_SLOT_FREE;
    if (--x->pins == 0) {
        ssd->free_stack[ssd->nfree++] = (uint32_t)slot;
    }
}

void hc_ssd_pin(HcSsd *ssd, uint64_t slot)
{
    ssd->slot[slot].pins++;
}

void hc_ssd_unpin(HcSsd *ssd, uint64_t slot)
{
    HcSsdSlot *x = &ssd->slot[slot];

    if (--x->pins == 0 && x->state == HC_SLOT_FREE) {
        ssd->free_stack[ssd->nfree++] = (uint32_t)slot;
    }
}

uint64_t hc_ssd_invalidate(HcSsd *ssd, uint64_t blk)
{
    uint32_t s = hc_ssd_find(ssd, blk);

    if (s == HC_SSD_NIL) {
        return HC_SSD_NONE;
    }
    hc_ssd_drop(ssd, s);
    return hc_ssd_sector_of(s);
}

void hc_ssd_invalidate_all(HcSsd *ssd)
{
    for (uint32_t s = 0; s < ssd->nslots; s++) {
        if (ssd->slot[s].state == HC_SLOT_VALID) {
            hc_ssd_drop(ssd, s);
        }
    }
}

void hc_ssd_invalidate_range(HcSsd *ssd, uint64_t first, uint64_t end,
                             void (*sector_cb)(void *opaque, uint64_t sector),
                             void *opaque)
{
    if (end <= first || !ssd->used) {
        return;
    }
    if (end - first <= ssd->used) {
        for (uint64_t b = first; b < end; b++) {
            uint64_t sec = hc_ssd_invalidate(ssd, b);

            if (sec != HC_SSD_NONE) {
                sector_cb(opaque, sec);
            }
        }
        return;
    }
    for (uint32_t s = 0; s < ssd->nslots; s++) {
        if (ssd->slot[s].state == HC_SLOT_VALID &&
            ssd->slot[s].blk >= first && ssd->slot[s].blk < end) {
            hc_ssd_drop(ssd, s);
            sector_cb(opaque, hc_ssd_sector_of(s));
        }
    }
}

size_t hc_ssd_hot_blocks(const HcSsd *ssd, uint64_t *out, size_t max)
{
    size_t n = 0;

    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t s = 0; s < ssd->nslots && n < max; s++) {
            const HcSsdSlot *x = &ssd->slot[s];

            if (x->state == HC_SLOT_VALID && x->ref == !pass) {
                out[n++] = x->blk;
            }
        }
    }
    return n;
}

uint64_t hc_ssd_capacity(const HcSsd *ssd)
{
    return ssd->nslots;
}

uint64_t hc_ssd_used(const HcSsd *ssd)
{
    return ssd->used;
}

uint64_t hc_ssd_damaged(const HcSsd *ssd)
{
    return ssd->damaged;
}

uint64_t hc_ssd_recovered(const HcSsd *ssd)
{
    return ssd->recovered;
}

uint64_t hc_ssd_metadata_bytes(const HcSsd *ssd)
{
    return sizeof(*ssd) + (uint64_t)ssd->nslots *
        (sizeof(HcSsdSlot) + sizeof(uint32_t)) +
        ((uint64_t)sizeof(uint32_t) << ssd->hbits) +
        ssd->nsectors * 2 * sizeof(uint64_t);
}

const char *hc_ssd_check(const HcSsd *ssd)
{
    uint64_t valid = 0;
    uint8_t *seen;

    for (uint32_t s = 0; s < ssd->nslots; s++) {
        if (ssd->slot[s].state == HC_SLOT_VALID) {
            valid++;
            if (hc_ssd_find(ssd, ssd->slot[s].blk) != s) {
                return "valid slot not found in the index";
            }
        }
    }
    if (valid != ssd->used) {
        return "used count wrong";
    }
    valid = 0;
    for (uint32_t s = 0; s < ssd->nslots; s++) {
        valid += ssd->slot[s].state == HC_SLOT_VALID && ssd->slot[s].dirty;
    }
    if (valid != ssd->ndirty) {
        return "dirty count wrong";
    }
    valid = 0;
    for (uint32_t s = 0; s < ssd->nslots; s++) {
        valid += ssd->slot[s].state == HC_SLOT_KEPT && ssd->slot[s].dirty;
    }
    if (valid != ssd->nkept_dirty) {
        return "kept dirty count wrong";
    }
    seen = calloc(ssd->nslots, 1);
    if (!seen) {
        return "out of memory";
    }
    for (uint32_t i = 0; i < ssd->nfree; i++) {
        uint32_t s = ssd->free_stack[i];

        if (ssd->slot[s].state != HC_SLOT_FREE || ssd->slot[s].pins ||
            seen[s]) {
            free(seen);
            return "free stack holds a non-free, pinned or repeated slot";
        }
        seen[s] = 1;
    }
    valid = 0;
    for (uint32_t s = 0; s < ssd->nslots; s++) {
        /* free and unpinned, but not on the stack: lost */
        valid += ssd->slot[s].state == HC_SLOT_FREE && !ssd->slot[s].pins &&
            !seen[s];
    }
    free(seen);
    return valid ? "free slot missing from the free stack" : NULL;
}
