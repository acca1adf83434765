/*
 * hostcache: the live-migration stream (qemu-system only)
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * One savevm section, "hostcache", serves every hostcache node, as
 * migration/block-dirty-bitmap.c does for bitmaps: node names differ from
 * host to host, so records name a node by its origin-id.  It does three
 * things (docs/DRIVER.md, "Live migration"):
 *
 * - Drain during pre-copy.  save_setup puts every node in drain mode (the
 *   destager writes back as fast as the origin allows) and the pending
 *   data it reports keeps QEMU iterating until what is still dirty can be
 *   written back within an eighth of the downtime limit, at the rate the
 *   origin showed during the drain.  Raw dirty bytes would be compared
 *   with the stream's bandwidth, which is near zero while only the drain
 *   is left: the switchover would then wait for zero dirty bytes, which a
 *   writing guest never reaches.
 * - Warm-up data: each node's hot list, hottest first, and in content mode
 *   the data of hot RAM blocks, with an INVAL record for every block
 *   written after it was sent.
 * - Nothing for post-copy: QEMU switches to post-copy only once the
 *   data reported as must-precopy fits, i.e. after the drain, and the
 *   disks are handed over at that switch, as at the end of pre-copy.
 *
 * Whether a migration uses the section is decided once, when it starts
 * (the MIG_EVENT_PRECOPY_SETUP notifier), never by snapshots (savevm runs
 * these handlers in the main loop, drained: waiting for a drain there
 * would hang).
 *
 * Records: u8 type, be32 payload length, payload; a destination skips
 * types it does not know.  Integers big-endian.
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "migration/misc.h"
#include "migration/qemu-file-types.h"
#include "migration/register.h"
#include "migration/options.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/bitmap.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/units.h"
#include "trace.h"
#include "hostcache-int.h"

enum {
    HCM_EOS = 0,        /* end of this section's records */
    HCM_NODE = 1,       /* be32 idx, be16 len + origin-id, be32 block size,
                         * u8 warm-up, be64 lineage, be64 tenure */
    HCM_HOT = 2,        /* be32 idx, be32 n, n x be64 block (hottest first) */
    HCM_DATA = 3,       /* be32 idx, be64 block, block-size bytes */
    HCM_INVAL = 4,      /* be32 idx, be32 n, n x be64 block */
    HCM_NODE_END = 5,   /* be32 idx */
    HCM_WSET = 6,       /* be32 idx, be64 tenure, be32 chunk shift,
                         * be64 nchunks, the bitmap (ceil(nchunks / 8)
                         * bytes, bit c of byte c / 8) */
};

#define HCM_BATCH       1024    /* block numbers per HOT or INVAL record */
#define HCM_ID_MAX      4096

typedef struct HcmNode {
    BlockDriverState *bs;       /* referenced from save_setup to cleanup */
    uint32_t block_size;
    uint8_t *buf;               /* one block (content) */
    bool old_wsets_sent;        /* earlier tenures' write sets sent */
    bool ended;                 /* NODE_END sent */
} HcmNode;

typedef struct HcmState {
    NotifierWithReturn notifier;
    bool active;                /* this migration carries the section */
    bool completed;             /* the last records went out */
    GArray *nodes;              /* HcmNode, source side */
    /* destination: index in the stream -> node (NULL: not ours) */
    GPtrArray *in_nodes;
} HcmState;

static HcmState hcm;

/* ---- source -------------------------------------------------------------- */

static int hcm_notify(NotifierWithReturn *n, MigrationEvent *e, Error **errp)
{
    BlockDriverState *bs = NULL;
    bool any = false;

    if (e->type != MIG_EVENT_PRECOPY_SETUP) {
        return 0;
    }
    while ((bs = bdrv_next_all_states(bs))) {
        any |= hostcache_is_node(bs) && !(bs->open_flags & BDRV_O_INACTIVE);
    }
    qatomic_set(&hcm.active, any && !migration_in_bg_snapshot());
    hcm.completed = false;
    return 0;
}

static bool hcm_is_active(void *opaque)
{
    return qatomic_read(&hcm.active);
}

static void hcm_put_header(QEMUFile *f, int type, uint32_t len)
{
    qemu_put_byte(f, type);
    qemu_put_be32(f, len);
}

static void hcm_put_blocks(QEMUFile *f, int type, uint32_t idx,
                           const uint64_t *blks, size_t n)
{
    hcm_put_header(f, type, 8 + 8 * n);
    qemu_put_be32(f, idx);
    qemu_put_be32(f, n);
    for (size_t i = 0; i < n; i++) {
        qemu_put_be64(f, blks[i]);
    }
}

/* Pre-copy begins (migration thread, BQL): drain every node, say so. */
static int hcm_save_setup(QEMUFile *f, void *opaque, Error **errp)
{
    BlockDriverState *bs = NULL;

    hcm.nodes = g_array_new(false, true, sizeof(HcmNode));
    while ((bs = bdrv_next_all_states(bs))) {
        const char *id;
        uint64_t lineage, tenure;
        HcmNode n = { .bs = bs };
        uint32_t idx = hcm.nodes->len;

        if (!hostcache_is_node(bs) || (bs->open_flags & BDRV_O_INACTIVE)) {
            continue;
        }
        bdrv_ref(bs);
        hostcache_mig_out_begin(bs);
        id = hostcache_origin_id(bs);
        n.block_size = hostcache_block_size(bs);
        n.buf = g_malloc(n.block_size);
        g_array_append_val(hcm.nodes, n);
        hostcache_mig_out_lineage(bs, &lineage, &tenure);
        hcm_put_header(f, HCM_NODE, 4 + 2 + strnlen(id, HCM_ID_MAX) + 4 + 1 +
                       16);
        qemu_put_be32(f, idx);
        qemu_put_be16(f, strnlen(id, HCM_ID_MAX));
        qemu_put_buffer(f, (const uint8_t *)id, strnlen(id, HCM_ID_MAX));
        qemu_put_be32(f, n.block_size);
        qemu_put_byte(f, hostcache_mig_out_mode(bs));
        qemu_put_be64(f, lineage);
        qemu_put_be64(f, tenure);
    }
    hcm_put_header(f, HCM_EOS, 0);
    return 0;
}

/* Write sets: the earlier tenures' (once), or this tenure's. */
static void hcm_send_wsets(QEMUFile *f, uint32_t idx, HcmNode *n,
                           bool current)
{
    HostcacheWset w[HOSTCACHE_TENURES_KEPT];
    uint32_t shift;
    size_t k = hostcache_mig_out_wsets(n->bs, current, w, ARRAY_SIZE(w),
                                       &shift);

    for (size_t i = 0; i < k; i++) {
        uint64_t bytes = DIV_ROUND_UP(w[i].nchunks, 8);

        hcm_put_header(f, HCM_WSET, 4 + 8 + 4 + 8 + bytes);
        qemu_put_be32(f, idx);
        qemu_put_be64(f, w[i].tenure);
        qemu_put_be32(f, shift);
        qemu_put_be64(f, w[i].nchunks);
        for (uint64_t b = 0; b < bytes; b++) {
            uint8_t byte = 0;

            for (int bit = 0; bit < 8 && b * 8 + bit < w[i].nchunks; bit++) {
                byte |= test_bit(b * 8 + bit, w[i].bits) << bit;
            }
            qemu_put_byte(f, byte);
        }
        g_free(w[i].bits);
    }
}

/* Everything a node still has to send, as far as the rate allows. */
static bool hcm_send_node(QEMUFile *f, uint32_t idx, HcmNode *n, bool all)
{
    uint64_t blks[HCM_BATCH], blk;
    size_t k;

    if (!n->old_wsets_sent) {
        hcm_send_wsets(f, idx, n, false);
        n->old_wsets_sent = true;
    }
    while (all || !migration_rate_exceeded(f)) {
        k = hostcache_mig_out_take_invals(n->bs, blks, HCM_BATCH);
        if (k) {
            hcm_put_blocks(f, HCM_INVAL, idx, blks, k);
            continue;
        }
        k = hostcache_mig_out_take_hot(n->bs, blks, HCM_BATCH);
        if (k) {
            hcm_put_blocks(f, HCM_HOT, idx, blks, k);
            continue;
        }
        if (hostcache_mig_out_take_data(n->bs, &blk, n->buf)) {
            hcm_put_header(f, HCM_DATA, 4 + 8 + n->block_size);
            qemu_put_be32(f, idx);
            qemu_put_be64(f, blk);
            qemu_put_buffer(f, n->buf, n->block_size);
            continue;
        }
        return true;    /* nothing left */
    }
    return false;
}

/*
 * Pre-copy iteration (migration thread, no BQL): send what the rate
 * allows.  When only the drain is left, wait a little: QEMU calls pending
 * and iterate in a loop and would spin a CPU the destager and the guest
 * need.  The migration thread can only poll: the drain's progress happens
 * in the node's AioContext, which has no way to wake it.
 */
static int hcm_save_iterate(QEMUFile *f, void *opaque)
{
    bool idle = true;

    for (guint i = 0; hcm.nodes && i < hcm.nodes->len; i++) {
        idle &= hcm_send_node(f, i, &g_array_index(hcm.nodes, HcmNode, i),
                              false);
    }
    hcm_put_header(f, HCM_EOS, 0);
    if (idle) {
        g_usleep(2000);
    }
    return 0;
}

/*
 * The switchover (BQL, VM stopped, nodes inactive: what was dirty is on
 * the origin, and the RAM tier is still there): the rest, then the end.
 */
static int hcm_save_complete(QEMUFile *f, void *opaque)
{
    for (guint i = 0; hcm.nodes && i < hcm.nodes->len; i++) {
        HcmNode *n = &g_array_index(hcm.nodes, HcmNode, i);

        hcm_send_node(f, i, n, true);
        hcm_send_wsets(f, i, n, true);   /* this tenure's: complete now */
        hcm_put_header(f, HCM_NODE_END, 4);
        qemu_put_be32(f, i);
        n->ended = true;
    }
    hcm_put_header(f, HCM_EOS, 0);
    hcm.completed = true;
    return 0;
}

/*
 * Pending (migration thread, no BQL).  Dirty data counts only while the
 * origin cannot take it within an eighth of the downtime limit; the
 * stream's own unsent bytes always count.
 */
static void hcm_pending(void *opaque, uint64_t *must_precopy,
                        uint64_t *can_postcopy)
{
    uint64_t budget = migrate_downtime_limit() / 8;
    uint64_t dirty = 0, ms = 0, unsent = 0;

    if (!hcm.nodes || hcm.completed) {
        return;
    }
    for (guint i = 0; i < hcm.nodes->len; i++) {
        HcmNode *n = &g_array_index(hcm.nodes, HcmNode, i);
        uint64_t d, t, u;

        hostcache_mig_out_pending(n->bs, budget, &d, &t, &u);
        dirty += d;
        ms = t == UINT64_MAX || ms == UINT64_MAX ? UINT64_MAX : ms + t;
        unsent += u;
    }
    trace_hostcache_mig_pending(dirty, ms, budget, unsent);
    *must_precopy += unsent + (ms > budget ? MAX(dirty, 1) : 0);
}

/* The migration is over, completed or not (main loop, BQL). */
static void hcm_save_cleanup(void *opaque)
{
    for (guint i = 0; hcm.nodes && i < hcm.nodes->len; i++) {
        HcmNode *n = &g_array_index(hcm.nodes, HcmNode, i);

        hostcache_mig_out_end(n->bs);
        bdrv_unref(n->bs);
        g_free(n->buf);
    }
    if (hcm.nodes) {
        g_array_free(hcm.nodes, true);
        hcm.nodes = NULL;
    }
    qatomic_set(&hcm.active, false);
    hcm.completed = false;
}

/* ---- destination ------------------------------------------------------ */

/* The inactive hostcache node of this origin, or NULL (BQL). */
static BlockDriverState *hcm_find_node(const char *origin_id)
{
    BlockDriverState *bs = NULL, *found = NULL;
    int n = 0;

    while ((bs = bdrv_next_all_states(bs))) {
        if (hostcache_is_node(bs) && (bs->open_flags & BDRV_O_INACTIVE) &&
            !strcmp(hostcache_origin_id(bs), origin_id)) {
            found = bs;
            n++;
        }
    }
    if (n > 1) {
        warn_report("hostcache: %d nodes of origin '%s' on this host; none "
                    "of them warms up (give each an origin-id of its own)",
                    n, origin_id);
        return NULL;
    }
    return found;
}

static BlockDriverState *hcm_in_node(uint32_t idx)
{
    return hcm.in_nodes && idx < hcm.in_nodes->len ?
        g_ptr_array_index(hcm.in_nodes, idx) : NULL;
}

static int hcm_load_node(QEMUFile *f, uint32_t len)
{
    g_autofree char *id = NULL;
    uint32_t idx, bsize;
    uint64_t lineage, tenure;
    uint16_t idlen;
    BlockDriverState *bs;
    int warm;

    idx = qemu_get_be32(f);
    idlen = qemu_get_be16(f);
    if (len != 4 + 2 + idlen + 4 + 1 + 16 || idlen > HCM_ID_MAX ||
        idx > 1 << 20) {
        error_report("hostcache: a corrupt node record in the migration "
                     "stream");
        return -EINVAL;
    }
    id = g_malloc0(idlen + 1);
    qemu_get_buffer(f, (uint8_t *)id, idlen);
    bsize = qemu_get_be32(f);
    warm = qemu_get_byte(f);
    lineage = qemu_get_be64(f);
    tenure = qemu_get_be64(f);
    if (!hcm.in_nodes) {
        hcm.in_nodes = g_ptr_array_new();
    }
    if (idx >= hcm.in_nodes->len) {
        g_ptr_array_set_size(hcm.in_nodes, idx + 1);
    }
    bs = hcm_find_node(id);
    trace_hostcache_mig_in_node(id, bs);
    if (bs && warm >= 0 && warm < HOSTCACHE_WARM_UP__MAX && bsize >= 512 &&
        is_power_of_2(bsize)) {
        hostcache_mig_in_begin(bs, warm, bsize);
        if (bsize == hostcache_block_size(bs)) {
            hostcache_mig_in_lineage(bs, lineage, tenure);
        }
    } else {
        bs = NULL;
    }
    g_ptr_array_index(hcm.in_nodes, idx) = bs;
    return 0;
}

static int hcm_load_blocks(QEMUFile *f, int type, uint32_t len)
{
    uint32_t idx = qemu_get_be32(f), n = qemu_get_be32(f);
    g_autofree uint64_t *blks = NULL;
    BlockDriverState *bs = hcm_in_node(idx);

    if (len != 8 + 8ull * n || n > HCM_BATCH) {
        error_report("hostcache: a corrupt block list in the migration "
                     "stream");
        return -EINVAL;
    }
    blks = g_new(uint64_t, MAX(n, 1));
    for (uint32_t i = 0; i < n; i++) {
        blks[i] = qemu_get_be64(f);
    }
    if (bs && type == HCM_HOT) {
        hostcache_mig_in_hot(bs, blks, n);
    } else if (bs) {
        hostcache_mig_in_inval(bs, blks, n);
    }
    return 0;
}

static int hcm_load_data(QEMUFile *f, uint32_t len)
{
    uint32_t idx = qemu_get_be32(f);
    uint64_t blk = qemu_get_be64(f);
    BlockDriverState *bs = hcm_in_node(idx);
    g_autofree uint8_t *buf = NULL;

    if (len < 12 || len - 12 > 2 * MiB) {
        error_report("hostcache: a corrupt data record in the migration "
                     "stream");
        return -EINVAL;
    }
    buf = g_malloc(len - 12);
    qemu_get_buffer(f, buf, len - 12);
    if (bs && len - 12 == hostcache_block_size(bs)) {
        hostcache_mig_in_data(bs, blk, buf);
    }
    return 0;
}

static int hcm_load_wset(QEMUFile *f, uint32_t len)
{
    uint32_t idx = qemu_get_be32(f);
    uint64_t tenure = qemu_get_be64(f);
    uint32_t shift = qemu_get_be32(f);
    uint64_t nchunks = qemu_get_be64(f);
    BlockDriverState *bs = hcm_in_node(idx);
    unsigned long *bits;

    if (nchunks > (1 << 20) || len != 24 + DIV_ROUND_UP(nchunks, 8) ||
        shift > 62) {
        error_report("hostcache: a corrupt write set in the migration "
                     "stream");
        return -EINVAL;
    }
    bits = bitmap_new(MAX(nchunks, 1));
    for (uint64_t b = 0; b < DIV_ROUND_UP(nchunks, 8); b++) {
        uint8_t byte = qemu_get_byte(f);

        for (int bit = 0; bit < 8; bit++) {
            if ((byte >> bit) & 1 && b * 8 + bit < nchunks) {
                set_bit(b * 8 + bit, bits);
            }
        }
    }
    if (bs) {
        hostcache_mig_in_wset(bs, tenure, shift, nchunks, bits);
    } else {
        g_free(bits);
    }
    return 0;
}

/* Records of one part of the section (incoming coroutine, BQL). */
static int hcm_load(QEMUFile *f, void *opaque, int version_id)
{
    for (;;) {
        int type = qemu_get_byte(f);
        uint32_t len = qemu_get_be32(f);
        int ret = 0;

        if (qemu_file_get_error(f)) {
            return qemu_file_get_error(f);
        }
        switch (type) {
        case HCM_EOS:
            return 0;
        case HCM_NODE:
            ret = hcm_load_node(f, len);
            break;
        case HCM_HOT:
        case HCM_INVAL:
            ret = hcm_load_blocks(f, type, len);
            break;
        case HCM_DATA:
            ret = hcm_load_data(f, len);
            break;
        case HCM_WSET:
            ret = hcm_load_wset(f, len);
            break;
        case HCM_NODE_END: {
            BlockDriverState *bs = hcm_in_node(qemu_get_be32(f));

            if (bs) {
                hostcache_mig_in_complete(bs);
            }
            break;
        }
        default:
            /* a newer source's record: skip it */
            for (uint32_t i = 0; i < len; i++) {
                qemu_get_byte(f);
            }
        }
        if (ret < 0) {
            return ret;
        }
    }
}

/*
 * The incoming side is over (BQL), before a paused destination activates:
 * what completed stays in its node until then; the rest is dropped.
 */
static int hcm_load_cleanup(void *opaque)
{
    for (guint i = 0; hcm.in_nodes && i < hcm.in_nodes->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(hcm.in_nodes, i);

        if (bs) {
            hostcache_mig_in_drop(bs, true);
        }
    }
    if (hcm.in_nodes) {
        g_ptr_array_free(hcm.in_nodes, true);
        hcm.in_nodes = NULL;
    }
    return 0;
}

static const SaveVMHandlers hcm_handlers = {
    .save_setup = hcm_save_setup,
    .save_live_iterate = hcm_save_iterate,
    .save_live_complete_precopy = hcm_save_complete,
    .state_pending_estimate = hcm_pending,
    .state_pending_exact = hcm_pending,
    .save_cleanup = hcm_save_cleanup,
    .is_active = hcm_is_active,
    .load_state = hcm_load,
    .load_cleanup = hcm_load_cleanup,
};

static void hostcache_migration_init(void)
{
    register_savevm_live("hostcache", 0, 1, &hcm_handlers, &hcm);
    migration_add_notifier(&hcm.notifier, hcm_notify);
}

migration_init(hostcache_migration_init);
