/*
 * hostcache SSD tier: on-disk format and in-memory index.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * Plain C without QEMU headers, like hc-engine.[ch]: the driver does the
 * I/O, this module encodes, decodes, checks and indexes.  The format is
 * documented in docs/SSD-FORMAT.md; in short:
 *
 *   [0, 4 KiB)       superblock copy 0     \  written alternately; the valid
 *   [4 KiB, 8 KiB)   superblock copy 1     /  copy with the higher generation
 *   [8 KiB, D)       slot table: one 32-byte entry per data slot, each entry
 *                    with its own CRC32C, 128 entries per 4 KiB sector
 *   [D, end)         data slots of block_size bytes (D aligned to 4 KiB
 *                    and to block_size)
 *
 * An entry names the origin block its slot holds, a sequence number (the
 * newest valid entry of a block wins), the CRC32C of the slot's data and
 * the superblock's cache generation at the time it was written: bumping the
 * generation in the superblock drops every entry at once.  Every read of a
 * slot is checked against its data CRC, so a torn or corrupted slot is a
 * miss, never a wrong read.
 */

#ifndef HC_SSD_H
#define HC_SSD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HC_SSD_VERSION          3  /* 1: no journal, 2: no hand-off; read */
#define HC_SSD_SB_SIZE          4096u
#define HC_SSD_META_OFFSET      (2 * HC_SSD_SB_SIZE)
#define HC_SSD_SECTOR           4096u
#define HC_SSD_ENTRY_SIZE       32u
#define HC_SSD_PER_SECTOR       (HC_SSD_SECTOR / HC_SSD_ENTRY_SIZE)
#define HC_SSD_ORIGIN_ID_MAX    256
#define HC_SSD_NONE             UINT64_MAX

enum {
    HC_SSD_STATE_CLEAN = 1,     /* closed cleanly */
    HC_SSD_STATE_OPEN = 2,      /* in use, or the host crashed */
    /*
     * The VM went on to another host by live migration, in tenure
     * `tenure` of lineage `lineage`, with everything on the origin: the
     * clean entries are valid unless a later tenure wrote their blocks.
     */
    HC_SSD_STATE_HANDED_OFF = 3,
};

#define HC_SSD_ENTRY_VALID      0x0001
#define HC_SSD_ENTRY_DIRTY      0x0002  /* write-back journal */

typedef struct HcSsdSuper {
    uint32_t version;
    uint32_t block_size;
    uint64_t nslots;
    uint64_t meta_offset;
    uint64_t data_offset;
    uint64_t dev_size;          /* size of the SSD node when formatted */
    uint64_t generation;        /* copy = generation % 2 */
    uint64_t cache_gen;         /* entries of another generation are free */
    uint32_t state;             /* HC_SSD_STATE_* */
    uint64_t origin_size;
    char origin_id[HC_SSD_ORIGIN_ID_MAX];  /* NUL-terminated */
    /*
     * Write-back journal: every dirty entry with seq <= durable_seq was
     * made durable by a completed flush (a damaged one fails the open).
     */
    uint64_t durable_seq;
    /*
     * Live migration (version 3): the VM's lineage (a random id its runs
     * since a cold start share) and the tenure (1, 2, ...: one per host
     * the VM ran on since) in which this tier was last in use.
     */
    uint64_t lineage, tenure;
    uint64_t reserved;          /* 0 */
} HcSsdSuper;

typedef struct HcSsd HcSsd;

uint32_t hc_crc32c(uint32_t crc, const void *data, size_t len);

/*
 * Geometry for a device of dev_size bytes: fills nslots, meta_offset and
 * data_offset of sb (block_size must be set).  -ENOSPC with a message when
 * not even one slot fits.
 */
int hc_ssd_layout(HcSsdSuper *sb, uint64_t dev_size, char *err,
                  size_t errlen);

void hc_ssd_super_encode(const HcSsdSuper *sb, uint8_t buf[HC_SSD_SB_SIZE]);

/*
 * Pick the valid superblock copy with the higher generation.  Returns 0,
 * -ENOENT when both copies are all zeroes (a blank device), -EINVAL with a
 * message when neither copy is valid and the device is not blank.
 */
int hc_ssd_super_pick(const uint8_t *copy0, const uint8_t *copy1,
                      HcSsdSuper *sb, char *err, size_t errlen);

/* End of the tier's data slots (a superblock hc_ssd_super_pick took). */
uint64_t hc_ssd_tier_end(const HcSsdSuper *sb);

/*
 * What to do with the SSD node when a node opens (or a migration
 * destination activates): a pure function of the superblock, the node's
 * options and the sizes of the devices, so that every rule is unit-tested
 * (tests/engine/ssd_test.cc) and fuzzed.
 */
typedef struct HcSsdOpen {
    uint32_t block_size;        /* the node's block-size */
    uint64_t dev_size;          /* size of the ssd node now */
    uint64_t origin_size;       /* size of the origin now */
    const char *origin_id;      /* the tier's owner this node expects */
    const char *node_name;      /* the ssd node's name, for messages */
    bool ssd_create;            /* a blank or foreign tier may be formatted */
    bool activation;            /* a migration destination activates */
    /*
     * With activation: the incoming stream vouches for every write of the
     * VM's lineage `lineage` from tenure chain_from to chain_to (the
     * source's) by write sets (0: no such chain).  A tier handed off in
     * tenure t of that lineage, chain_from <= t + 1 and t <= chain_to, is
     * kept: the caller drops what those write sets name.
     */
    uint64_t lineage, chain_from, chain_to;
    bool drop;                  /* the content is dropped (pass-through) */
    bool read_only;             /* the node is read-only */
} HcSsdOpen;

typedef enum HcSsdPlan {
    HC_SSD_PLAN_REFUSE,         /* fail the open (message in err) */
    HC_SSD_PLAN_FORMAT,         /* blank, or of no use here: format it */
    HC_SSD_PLAN_LOAD,           /* read the slot table, then plan_loaded */
    HC_SSD_PLAN_KEEP,           /* use what was loaded (recovery) */
    HC_SSD_PLAN_EMPTY,          /* keep the format, drop the content */
} HcSsdPlan;

/*
 * Before the slot table is read.  pick: hc_ssd_super_pick()'s 0 or
 * -ENOENT (its -EINVAL refuses the open by itself).  Returns REFUSE,
 * FORMAT or LOAD; *why is the reason a valid tier does not fit (another
 * block size, origin or origin size, a smaller device), or NULL.
 */
HcSsdPlan hc_ssd_plan_open(int pick, const HcSsdSuper *sb,
                           const HcSsdOpen *o, const char **why,
                           char *err, size_t errlen);
/*
 * After the slot table is read (LOAD): dirty blocks and damaged entries
 * found decide.  Returns REFUSE, FORMAT (why set), EMPTY or KEEP.  A tier
 * handed off to another host is EMPTY on any open but an activation
 * whose chain covers it (HcSsdOpen.lineage), and so is any tier a
 * migration destination activates without one (its origin was written
 * elsewhere meanwhile).
 */
bool hc_ssd_chain_covers(const HcSsdSuper *sb, const HcSsdOpen *o);
HcSsdPlan hc_ssd_plan_loaded(const HcSsdSuper *sb, const char *why,
                             uint64_t dirty, uint64_t damaged,
                             const HcSsdOpen *o, char *err, size_t errlen);

/* Index of a formatted device; NULL on ENOMEM. */
HcSsd *hc_ssd_new(const HcSsdSuper *sb);
void hc_ssd_free(HcSsd *ssd);
const HcSsdSuper *hc_ssd_super(const HcSsd *ssd);
HcSsdSuper *hc_ssd_super_mut(HcSsd *ssd);

/* Recovery: feed every slot-table sector, then call load_done. */
void hc_ssd_load_sector(HcSsd *ssd, uint64_t sector, const uint8_t *buf);
void hc_ssd_load_done(HcSsd *ssd);
uint64_t hc_ssd_sectors(const HcSsd *ssd);
uint64_t hc_ssd_sector_offset(const HcSsd *ssd, uint64_t sector);
void hc_ssd_encode_sector(const HcSsd *ssd, uint64_t sector, uint8_t *buf);
uint64_t hc_ssd_sector_of(uint64_t slot);

/*
 * Slot-table sectors changed in memory carry a generation; a sector write
 * records the generation it wrote, so callers can wait until what they
 * changed is on the device.
 */
uint64_t hc_ssd_sector_gen(const HcSsd *ssd, uint64_t sector);
uint64_t hc_ssd_sector_disk_gen(const HcSsd *ssd, uint64_t sector);
/* Sector `sector` with generation gen is durable on the device. */
void hc_ssd_sector_written(HcSsd *ssd, uint64_t sector, uint64_t gen);

/*
 * Drops not yet durable.  A block whose entry was dropped in memory (a
 * CLOCK victim, a block made dirty, an older slot replaced) is pending
 * until its sector, at the generation that carries the drop, is durable:
 * before such a block changes on the origin, the caller persists the
 * sectors hc_ssd_pending_sectors() names.  hc_ssd_sector_written() ends
 * the pending drops it covers.  A sector write without FUA is durable only
 * after the next flush: hc_ssd_sector_unflushed() records it,
 * hc_ssd_flushed(n) makes the first n recorded (those before the flush
 * began: hc_ssd_unflushed_count() then) durable.  -ENOMEM when a record
 * cannot be kept (the caller must stop using the tier).
 */
int hc_ssd_pending_add(HcSsd *ssd, uint64_t blk, uint64_t sector);
void hc_ssd_pending_sectors(const HcSsd *ssd, uint64_t first, uint64_t end,
                            void (*sector_cb)(void *opaque, uint64_t sector),
                            void *opaque);
/* Every entry was dropped for good (a new cache generation is durable). */
void hc_ssd_pending_clear(HcSsd *ssd);
size_t hc_ssd_pending_count(const HcSsd *ssd);
int hc_ssd_sector_unflushed(HcSsd *ssd, uint64_t sector, uint64_t gen);
size_t hc_ssd_unflushed_count(const HcSsd *ssd);
void hc_ssd_flushed(HcSsd *ssd, size_t n);

/* Lookups.  lookup marks the slot referenced (CLOCK) and returns its slot. */
uint64_t hc_ssd_lookup(HcSsd *ssd, uint64_t blk, uint32_t *data_crc);
uint64_t hc_ssd_data_offset(const HcSsd *ssd, uint64_t slot);

/*
 * Take a slot to write blk into (free, or the CLOCK victim among unpinned
 * valid slots, which leaves the index at once; its block is returned in
 * *victim_blk, else HC_SSD_NONE: the caller must persist the victim's
 * sector before that block changes on the origin).  The slot is pinned and
 * not in the index until hc_ssd_commit; hc_ssd_release gives it back.
 */
uint64_t hc_ssd_alloc(HcSsd *ssd, uint64_t *victim_blk);
/*
 * Index slot for blk; returns the sector to persist.  An older slot of blk
 * is dropped: its sector is returned in *old_sec (else HC_SSD_NONE) and
 * must be persisted before blk changes on the origin.
 */
uint64_t hc_ssd_commit(HcSsd *ssd, uint64_t slot, uint64_t blk,
                       uint32_t data_crc, uint64_t *old_sec);
/* Sectors changed in memory since recovery (duplicates dropped): write
 * them before use.  Returns the next such sector >= from, or HC_SSD_NONE. */
uint64_t hc_ssd_next_unwritten(const HcSsd *ssd, uint64_t from);
void hc_ssd_release(HcSsd *ssd, uint64_t slot);
void hc_ssd_pin(HcSsd *ssd, uint64_t slot);
void hc_ssd_unpin(HcSsd *ssd, uint64_t slot);

/*
 * Write-back journal.  A dirty entry holds data the origin does not have
 * yet; it is never a CLOCK victim.  Journaling a block: hc_ssd_next_seq,
 * hc_ssd_alloc, write the data, hc_ssd_commit_dirty.  The block's older
 * entry (clean or dirty) is KEPT on the device, out of the index, until
 * the new entry is durable: then hc_ssd_release_kept (returns the sector
 * to persist).  Once the origin has a dirty entry's data durably,
 * hc_ssd_mark_clean turns it into a clean entry (returns the sector, or
 * HC_SSD_NONE if the entry changed meanwhile).
 */
uint64_t hc_ssd_next_seq(HcSsd *ssd);
/* New sequence numbers stay above seq (entries seen but not loaded). */
void hc_ssd_seq_at_least(HcSsd *ssd, uint64_t seq);
uint64_t hc_ssd_commit_dirty(HcSsd *ssd, uint64_t slot, uint64_t blk,
                             uint64_t seq, uint32_t data_crc, uint64_t *kept);
uint64_t hc_ssd_release_kept(HcSsd *ssd, uint64_t kept);
/* Dirty entry slot with sequence seq, indexed or KEPT (an older version
 * of its block still to be written to the origin, in order)? */
bool hc_ssd_is_dirty(const HcSsd *ssd, uint64_t slot, uint64_t seq);
bool hc_ssd_is_kept(const HcSsd *ssd, uint64_t slot, bool *dirty);
uint64_t hc_ssd_kept_dirty(const HcSsd *ssd);
uint64_t hc_ssd_slot_blk(const HcSsd *ssd, uint64_t slot, uint64_t *seq,
                         uint32_t *data_crc);
uint64_t hc_ssd_mark_clean(HcSsd *ssd, uint64_t slot, uint64_t seq);
uint64_t hc_ssd_dirty_blocks(const HcSsd *ssd);
/* Next dirty slot >= from (slot order; indexed or KEPT), or HC_SSD_NONE. */
uint64_t hc_ssd_next_dirty(const HcSsd *ssd, uint64_t from);
bool hc_ssd_dirty_in_range(const HcSsd *ssd, uint64_t first, uint64_t end);
/* Decode one slot-table entry; false if it is no valid entry. */
bool hc_ssd_entry_decode(const uint8_t *e, uint64_t cache_gen,
                         uint64_t *blk, uint64_t *seq, uint32_t *data_crc,
                         bool *dirty);

/* Drop blk from the index; returns the sector to persist or HC_SSD_NONE. */
uint64_t hc_ssd_invalidate(HcSsd *ssd, uint64_t blk);
/* Drop everything (the caller bumps and persists the cache generation). */
void hc_ssd_invalidate_all(HcSsd *ssd);
/*
 * Drop the blocks in [first, end): calls sector_cb for every sector to
 * persist (possibly more than once per sector).
 */
void hc_ssd_invalidate_range(HcSsd *ssd, uint64_t first, uint64_t end,
                             void (*sector_cb)(void *opaque, uint64_t sector),
                             void *opaque);

/*
 * Export up to max indexed block numbers, those referenced since the last
 * CLOCK sweep first (the tier's notion of hot).  Returns the number.
 */
size_t hc_ssd_hot_blocks(const HcSsd *ssd, uint64_t *out, size_t max);

uint64_t hc_ssd_capacity(const HcSsd *ssd);      /* slots */
uint64_t hc_ssd_used(const HcSsd *ssd);          /* indexed slots */
uint64_t hc_ssd_recovered(const HcSsd *ssd);     /* valid entries loaded */
/* Table entries found neither empty (zeroes) nor valid when loaded, or
 * valid but naming a block past the origin's end or an impossible sequence
 * number: damaged (their flags are unknown: they may have been dirty). */
uint64_t hc_ssd_damaged(const HcSsd *ssd);
uint64_t hc_ssd_metadata_bytes(const HcSsd *ssd);

const char *hc_ssd_check(const HcSsd *ssd);

#ifdef __cplusplus
}
#endif

#endif /* HC_SSD_H */
