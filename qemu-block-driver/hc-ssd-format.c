/*
 * hostcache SSD tier: the on-disk format (superblock, CRC32C) and the plan
 * for a tier found at open (keep, recover, reformat or refuse).  Pure
 * functions of the bytes read and the options; the index is hc-ssd.c.  See
 * hc-ssd.h and docs/SSD-FORMAT.md.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "hc-ssd.h"
#include "hc-ssd-int.h"

static const char hc_ssd_magic[16] = "HOSTCACHE-SSD\0\0";

void hc_ssd_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- CRC32C (Castagnoli), hardware when the CPU has SSE4.2 ------------- */

static uint32_t hc_crc_table[256];

static void hc_crc_init_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++) {
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        hc_crc_table[i] = c;
    }
}

static uint32_t hc_crc32c_sw(uint32_t crc, const uint8_t *p, size_t len)
{
    if (!hc_crc_table[1]) {
        hc_crc_init_table();
    }
    while (len--) {
        crc = hc_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t hc_crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;

    while (len >= 8) {
        uint64_t v;

        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        len -= 8;
    }
    crc = (uint32_t)c;
    while (len--) {
        crc = _mm_crc32_u8(crc, *p++);
    }
    return crc;
}
#endif

uint32_t hc_crc32c(uint32_t crc, const void *data, size_t len)
{
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) {
        return ~hc_crc32c_hw(crc, data, len);
    }
#endif
    return ~hc_crc32c_sw(crc, data, len);
}

/* ---- superblock ------------------------------------------------------------ */

#define SB_CRC_OFF (HC_SSD_SB_SIZE - 4)

/*
 * Where the data slots of a tier of n slots of bs bytes start: after the
 * slot table, aligned to 4 KiB and to bs.  n <= HC_SSD_MAX_SLOTS and
 * bs <= HC_SSD_MAX_BLOCK, so nothing here can wrap.
 */
static uint64_t hc_ssd_data_start(uint64_t n, uint64_t bs)
{
    uint64_t align = bs > HC_SSD_SECTOR ? bs : HC_SSD_SECTOR;
    uint64_t meta = (n * HC_SSD_ENTRY_SIZE + HC_SSD_SECTOR - 1) /
        HC_SSD_SECTOR * HC_SSD_SECTOR;

    return (HC_SSD_META_OFFSET + meta + align - 1) / align * align;
}

int hc_ssd_layout(HcSsdSuper *sb, uint64_t dev_size, char *err,
                  size_t errlen)
{
    uint64_t bs = sb->block_size;
    uint64_t n = dev_size > HC_SSD_META_OFFSET && bs ?
        (dev_size - HC_SSD_META_OFFSET) / (bs + HC_SSD_ENTRY_SIZE) : 0;

    n = n > HC_SSD_MAX_SLOTS ? HC_SSD_MAX_SLOTS : n;
    for (; n > 0 && bs <= HC_SSD_MAX_BLOCK; n--) {
        uint64_t data = hc_ssd_data_start(n, bs);

        if (data + n * bs <= dev_size) {
            sb->nslots = n;
            sb->meta_offset = HC_SSD_META_OFFSET;
            sb->data_offset = data;
            sb->dev_size = dev_size;
            return 0;
        }
    }
    hc_ssd_err(err, errlen, "the ssd node (%llu bytes) is too small to hold "
               "even one %llu-byte block with its metadata",
               (unsigned long long)dev_size, (unsigned long long)bs);
    return -ENOSPC;
}

void hc_ssd_super_encode(const HcSsdSuper *sb, uint8_t buf[HC_SSD_SB_SIZE])
{
    memset(buf, 0, HC_SSD_SB_SIZE);
    memcpy(buf, hc_ssd_magic, sizeof(hc_ssd_magic));
    put_le32(buf + 16, sb->version);
    put_le32(buf + 20, sb->block_size);
    put_le64(buf + 24, sb->nslots);
    put_le64(buf + 32, sb->meta_offset);
    put_le64(buf + 40, sb->data_offset);
    put_le64(buf + 48, sb->dev_size);
    put_le64(buf + 56, sb->generation);
    put_le64(buf + 64, sb->cache_gen);
    put_le32(buf + 72, sb->state);
    put_le64(buf + 80, sb->origin_size);
    put_le64(buf + 88, sb->durable_seq);
    put_le64(buf + 96, sb->lineage);
    put_le64(buf + 104, sb->tenure);
    put_le64(buf + 112, sb->reserved);
    memcpy(buf + 120, sb->origin_id, HC_SSD_ORIGIN_ID_MAX);
    buf[120 + HC_SSD_ORIGIN_ID_MAX - 1] = 0;
    put_le32(buf + SB_CRC_OFF, hc_crc32c(0, buf, SB_CRC_OFF));
}

static bool hc_ssd_super_decode(const uint8_t *buf, HcSsdSuper *sb)
{
    if (memcmp(buf, hc_ssd_magic, sizeof(hc_ssd_magic)) ||
        get_le32(buf + SB_CRC_OFF) != hc_crc32c(0, buf, SB_CRC_OFF)) {
        return false;
    }
    memset(sb, 0, sizeof(*sb));
    sb->version = get_le32(buf + 16);
    sb->block_size = get_le32(buf + 20);
    sb->nslots = get_le64(buf + 24);
    sb->meta_offset = get_le64(buf + 32);
    sb->data_offset = get_le64(buf + 40);
    sb->dev_size = get_le64(buf + 48);
    sb->generation = get_le64(buf + 56);
    sb->cache_gen = get_le64(buf + 64);
    sb->state = get_le32(buf + 72);
    sb->origin_size = get_le64(buf + 80);
    sb->durable_seq = get_le64(buf + 88);
    sb->lineage = get_le64(buf + 96);
    sb->tenure = get_le64(buf + 104);
    sb->reserved = get_le64(buf + 112);
    memcpy(sb->origin_id, buf + 120, HC_SSD_ORIGIN_ID_MAX);
    sb->origin_id[HC_SSD_ORIGIN_ID_MAX - 1] = 0;
    return true;
}

int hc_ssd_super_pick(const uint8_t *copy0, const uint8_t *copy1,
                      HcSsdSuper *sb, char *err, size_t errlen)
{
    HcSsdSuper a, b;
    bool va = hc_ssd_super_decode(copy0, &a);
    bool vb = hc_ssd_super_decode(copy1, &b);

    if (!va && !vb) {
        if (hc_all_zero(copy0, HC_SSD_SB_SIZE) &&
            hc_all_zero(copy1, HC_SSD_SB_SIZE)) {
            return -ENOENT;
        }
        hc_ssd_err(err, errlen, "the ssd node holds neither a hostcache "
                   "superblock nor zeroes (is it the right device? to reuse "
                   "it as an SSD tier, zero its first 8 KiB)");
        return -EINVAL;
    }
    *sb = va && (!vb || a.generation > b.generation) ? a : b;
    if (sb->version < 1 || sb->version > HC_SSD_VERSION) {
        hc_ssd_err(err, errlen, "the ssd node has hostcache format version "
                   "%u; this build reads version %u", sb->version,
                   HC_SSD_VERSION);
        return -EINVAL;
    }
    /*
     * Every field that sizes or places something is checked here, so that
     * no sum or product of them can wrap later: block_size <= 2 MiB,
     * nslots < 2^31, and data_offset is exactly where hc_ssd_layout()
     * puts it.
     */
    if (sb->block_size < 512 || sb->block_size > HC_SSD_MAX_BLOCK ||
        (sb->block_size & (sb->block_size - 1)) ||
        sb->meta_offset != HC_SSD_META_OFFSET || !sb->nslots ||
        sb->nslots > HC_SSD_MAX_SLOTS ||
        sb->data_offset != hc_ssd_data_start(sb->nslots, sb->block_size) ||
        (sb->state != HC_SSD_STATE_CLEAN && sb->state != HC_SSD_STATE_OPEN &&
         (sb->state != HC_SSD_STATE_HANDED_OFF || sb->version < 3))) {
        hc_ssd_err(err, errlen, "the ssd node's superblock has an impossible "
                   "geometry or state (corrupted?); to reuse the node as an "
                   "SSD tier, zero its first 8 KiB");
        return -EINVAL;
    }
    return 0;
}

uint64_t hc_ssd_tier_end(const HcSsdSuper *sb)
{
    return sb->data_offset + sb->nslots * sb->block_size;
}

/* Why a valid superblock does not fit this open, or NULL. */
static const char *hc_ssd_mismatch(const HcSsdSuper *sb, const HcSsdOpen *o)
{
    if (sb->block_size != o->block_size) {
        return "it was formatted with another block-size";
    }
    if (strcmp(sb->origin_id, o->origin_id)) {
        return "it belongs to another origin";
    }
    if (sb->origin_size != o->origin_size) {
        return "the origin's size changed";
    }
    if (hc_ssd_tier_end(sb) > o->dev_size) {
        return "the ssd node shrank";
    }
    return NULL;
}

/*
 * Does the incoming stream's chain of write sets cover every tenure since
 * this tier was handed off?
 */
bool hc_ssd_chain_covers(const HcSsdSuper *sb, const HcSsdOpen *o)
{
    return o->lineage && !o->drop && sb->version >= 3 &&
        sb->state == HC_SSD_STATE_HANDED_OFF && sb->lineage == o->lineage &&
        sb->tenure + 1 >= o->chain_from && sb->tenure <= o->chain_to;
}

/* Did the tier journal write-back data in a run that did not close it? */
static bool hc_ssd_may_hold_journal(const HcSsdSuper *sb)
{
    return sb->state != HC_SSD_STATE_CLEAN && sb->durable_seq;
}

HcSsdPlan hc_ssd_plan_open(int pick, const HcSsdSuper *sb,
                           const HcSsdOpen *o, const char **why,
                           char *err, size_t errlen)
{
    /*
     * ssd-create=off: this origin's tier must be here.  A blank node, or
     * another origin's tier, means it is missing or was replaced, and it
     * may have held write-back data the origin lacks.  (A migration
     * destination starts from the source's data: any tier will do.)
     */
    bool must_exist = !o->ssd_create && !o->activation;

    *why = NULL;
    if (pick == -ENOENT) {
        if (must_exist) {
            hc_ssd_err(err, errlen, "the ssd node '%s' is blank, but "
                       "ssd-create=off says it holds the SSD tier of origin "
                       "'%s': the tier may be missing or replaced, and may "
                       "hold write-back data not yet on the origin; restore "
                       "the tier's file, or open once with ssd-create=on to "
                       "give that data up; nothing was changed",
                       o->node_name, o->origin_id);
            return HC_SSD_PLAN_REFUSE;
        }
        return HC_SSD_PLAN_FORMAT;
    }
    *why = hc_ssd_mismatch(sb, o);
    if (must_exist && *why && strcmp(sb->origin_id, o->origin_id)) {
        hc_ssd_err(err, errlen, "the ssd node '%s' belongs to another origin "
                   "('%s'), but ssd-create=off says it holds the SSD tier "
                   "of origin '%s': the tier may be missing or replaced, and "
                   "may hold write-back data not yet on the origin; restore "
                   "the tier's file, or open once with ssd-create=on to give "
                   "that data up; nothing was changed", o->node_name,
                   sb->origin_id, o->origin_id);
        return HC_SSD_PLAN_REFUSE;
    }
    if (*why && hc_ssd_tier_end(sb) > o->dev_size) {
        if (hc_ssd_may_hold_journal(sb)) {
            hc_ssd_err(err, errlen, "the ssd node '%s' (%llu bytes) is "
                       "smaller than the tier on it (%llu bytes), which was "
                       "not closed cleanly and may hold write-back data of "
                       "origin '%s' not yet on it; restore the node's size, "
                       "or zero its first 8 KiB to give that data up; "
                       "nothing was changed", o->node_name,
                       (unsigned long long)o->dev_size,
                       (unsigned long long)hc_ssd_tier_end(sb),
                       sb->origin_id);
            return HC_SSD_PLAN_REFUSE;
        }
        return HC_SSD_PLAN_FORMAT;     /* its table cannot even be read */
    }
    return HC_SSD_PLAN_LOAD;
}

HcSsdPlan hc_ssd_plan_loaded(const HcSsdSuper *sb, const char *why,
                             uint64_t dirty, uint64_t damaged,
                             const HcSsdOpen *o, char *err, size_t errlen)
{
    const char *refuse = NULL;

    /*
     * A damaged entry may have been dirty.  With a journal on the tier
     * (dirty entries, or a crash of a tier that journaled), that is data
     * the origin may lack: refuse.  Otherwise it was clean: a miss.
     */
    if (damaged && (dirty || hc_ssd_may_hold_journal(sb))) {
        hc_ssd_err(err, errlen, "the SSD tier's slot table is damaged: "
                   "%llu entries fail their checksum or name a block past "
                   "the origin's end, and the tier holds a write-back "
                   "journal, so they may have held data origin '%s' does "
                   "not have; nothing was changed (to give them up and keep "
                   "the origin's data, zero the ssd node's first 8 KiB)",
                   (unsigned long long)damaged, sb->origin_id);
        return HC_SSD_PLAN_REFUSE;
    }
    if (dirty && why) {
        refuse = why;
    } else if (dirty && o->activation) {
        refuse = "it holds data of an earlier run of this origin here, "
            "and the VM now comes from another host";
    } else if (dirty && o->drop) {
        refuse = "mode pass-through would not write them back; open "
            "the node once in another mode";
    } else if (dirty && o->read_only) {
        refuse = "the node is read-only; open it read-write once to "
            "write them back";
    }
    if (refuse) {
        hc_ssd_err(err, errlen, "the ssd node '%s' holds %llu blocks of "
                   "origin '%s' not yet written back to it (write-back "
                   "journal): %s; nothing was changed", o->node_name,
                   (unsigned long long)dirty, sb->origin_id, refuse);
        return HC_SSD_PLAN_REFUSE;
    }
    if (why) {
        return HC_SSD_PLAN_FORMAT;
    }
    if (o->activation) {
        /* only a chain of write sets makes a tier valid on arrival */
        return hc_ssd_chain_covers(sb, o) ? HC_SSD_PLAN_KEEP :
            HC_SSD_PLAN_EMPTY;
    }
    if (sb->state == HC_SSD_STATE_HANDED_OFF) {
        /* the VM ran elsewhere since, and nobody says what it wrote */
        return HC_SSD_PLAN_EMPTY;
    }
    return o->drop ? HC_SSD_PLAN_EMPTY : HC_SSD_PLAN_KEEP;
}
