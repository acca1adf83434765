/*
 * hostcache: the driver's private state and the functions its files share
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef BLOCK_HOSTCACHE_INT_H
#define BLOCK_HOSTCACHE_INT_H

#include "block/block_int.h"
#include "qapi/qapi-types-block-core.h"
#include "qemu/coroutine.h"
#include "qemu/queue.h"
#include "qemu/thread.h"
#include "qemu/timer.h"

#include "hc-engine.h"
#include "hc-journal.h"
#include "hc-ssd.h"

/* Defaults; see docs/DRIVER.md for the measurements behind them. */
#define HOSTCACHE_DEFAULT_MODE          HOSTCACHE_MODE_WRITE_THROUGH
#define HOSTCACHE_DEFAULT_RAM_SIZE      (256 * MiB)
#define HOSTCACHE_DEFAULT_BLOCK_SIZE    (4 * KiB)
#define HOSTCACHE_DEFAULT_ADMIT_AFTER   1
#define HOSTCACHE_DEFAULT_SEQ_CUTOFF    (4 * MiB)
#define HOSTCACHE_DEFAULT_DIRTY_AGE_MS  5000
#define HOSTCACHE_MAX_DIRTY_AGE_MS      3600000

/* Write-back concurrency towards the origin. */
#define HOSTCACHE_DESTAGE_WIDTH_MAX     16
#define HOSTCACHE_FLUSH_WIDTH           16

/* Evicted blocks waiting to be written to the SSD tier, at most. */
#define HOSTCACHE_DEMOTE_MAX        1024
/* Demotions written per round, before their slot-table sectors. */
#define HOSTCACHE_DEMOTE_BATCH      32

typedef struct HostcacheOpts {
    HostcacheMode mode;
    HcConfig cfg;
    uint64_t max_dirty;         /* bytes */
    uint64_t dirty_age_ns;
    char origin_id[HC_SSD_ORIGIN_ID_MAX];   /* "" = origin's filename */
    bool ssd_create;            /* a blank or foreign tier may be formatted */
    HostcacheWarmUp warm_up;    /* what a live migration sends */
} HostcacheOpts;

/*
 * Slot-table sectors to persist.  On overflow every sector is visited, but
 * hostcache_ssd_persist() only writes those changed since their last write.
 */
typedef struct HostcacheSectors {
    uint64_t sec[32];
    int n;
    bool overflow;
} HostcacheSectors;

/* A clean block evicted from RAM, on its way to the SSD tier. */
typedef struct HostcacheDemotion {
    uint64_t blk;
    uint64_t wgen;              /* origin writes before it (origin_wgen) */
    HcOp op;                    /* a write to blk meanwhile makes it stale */
    void *buf;
    QSIMPLEQ_ENTRY(HostcacheDemotion) next;
} HostcacheDemotion;


/*
 * Write-back towards the origin (hostcache-wb.c).  Every field is
 * protected by BDRVHostcacheState.lock.
 */
typedef struct HostcacheWb {
    bool destager_running;      /* a destager coroutine exists */
    /* drain depth (also read atomically): no background work while > 0 */
    int quiesced;
    QemuCoSleep destager_sleep; /* where an idle destager sleeps */
    /* destage writes in flight, >= 1, adapted to the origin's latency */
    int width;
    uint64_t lat_floor;         /* lowest destage latency seen, ns; 0: none */
    /*
     * Set (atomically) when a migration's drain ends: the destager's batch
     * in flight starts nothing more; cleared by the destager.
     */
    int interrupt;
} HostcacheWb;

/*
 * The SSD tier (hostcache-ssd.c); all NULL/false without one.  Protected
 * by BDRVHostcacheState.lock, except child (set at open) and the flags
 * dropping and broken, which only the node's AioContext changes.
 * Invariant: a block's SSD entry is durably dropped before the block
 * changes on the origin or becomes dirty in RAM.
 */
typedef struct HostcacheSsdTier {
    BdrvChild *child;           /* the ssd node; fixed from open to close */
    /* its index; NULL until attached (an inactive node attaches later) */
    HcSsd *idx;
    /* in use: attached, active, not pass-through, no I/O error */
    bool on;
    bool broken;                /* an SSD I/O error: never used again */
    /* broken, its content not yet dropped on the device (ssd_forget) */
    bool drop_pending;
    bool dropping;              /* that drop is being written now */
    /*
     * (Drops not yet durable, and sector writes awaiting a flush, are kept
     * by the index: hc_ssd_pending_add() and friends.)
     */
    int64_t flush_ns;           /* last SSD flush (hostcache_ssd_flush) */
    unsigned long *sec_busy;    /* slot-table sectors being written now */
    CoQueue sec_wait;           /* writers of a busy sector wait here */
    CoQueue drop_wait;          /* forgets wait here while dropping */
    /* clean blocks evicted from RAM, to be written to the tier, FIFO */
    QSIMPLEQ_HEAD(, HostcacheDemotion) demotions;
    int ndemotions;             /* their number, <= HOSTCACHE_DEMOTE_MAX */
    bool demoter_running;       /* a demoter coroutine exists */
} HostcacheSsdTier;

/*
 * The write-back journal on the SSD tier (hostcache-journal.c): with the
 * tier on in write-back mode, a flush writes dirty RAM blocks to the SSD
 * as dirty entries and flushes the SSD only; the destager writes dirty
 * entries to the origin in journal order and marks them clean once the
 * origin is flushed.  lock serializes journal batches (data, slot table,
 * superblock, SSD flush); dlock serializes batches towards the origin.
 * The other fields are protected by BDRVHostcacheState.lock.
 */
typedef struct HostcacheJournal {
    CoMutex lock;
    CoMutex dlock;
    /* the journaled blocks in order, and the batch rules (hc-journal.c) */
    HcJournal *q;
    int64_t super_ns;           /* last superblock write by the journal */
    uint64_t super_off;         /* where that write goes (its copy) */
    GArray *kept;               /* older entries to release after a flush */
    HostcacheSectors *secs;     /* released entries' sectors to write */
    int64_t secs_ns;            /* when they were last written */
} HostcacheJournal;

/*
 * The source side of a live migration (hostcache-warm.c; the stream is
 * written by hostcache-migration.c).  Protected by
 * BDRVHostcacheState.lock.  Between hostcache_mig_out_begin() and _end()
 * (pre-copy), drain is set and the hot list is being sent.
 */
typedef struct HostcacheMigOut {
    bool drain;                 /* pre-copy: the destager runs flat out */
    HostcacheWarmUp warm;       /* what this migration sends */
    int64_t drain_ns;           /* when drain was set */
    uint64_t drained;           /* bytes written back while draining, over
                                 * every migration (statistic) */
    /* drain rate: bytes over a window of at least 200 ms, then B/s */
    uint64_t win_bytes;
    int64_t win_ns;
    uint64_t rate;              /* B/s, 0: not measured yet */
    /* 0: none; else max-dirty in force (the guest outwrites the origin) */
    uint64_t max_dirty_cap;
    uint64_t *hot;              /* hot list captured at begin, hottest first */
    size_t nhot;
    size_t hot_sent;            /* entries of hot already sent */
    size_t data_next;           /* content: next entry of hot to look at */
    uint64_t data_budget;       /* content: blocks that may still be sent */
    GHashTable *sent;           /* content: blocks whose data went out */
    GArray *inval;              /* sent blocks modified since: announce */
    uint64_t data_sent;         /* blocks */
} HostcacheMigOut;

/*
 * The destination side: what arrived in the stream, kept in the node
 * (QEMU frees migration state before a paused destination activates),
 * then the warm-up.  Protected by BDRVHostcacheState.lock.
 */
typedef struct HostcacheMigIn {
    HostcacheWarmUpState state;
    HostcacheWarmUp warm;       /* the source's mode */
    bool complete;              /* the source's end record arrived */
    GArray *hot;                /* uint64_t blocks, hottest first */
    uint32_t src_block_size;    /* the source's block size */
    GHashTable *data;           /* content: blk -> block data (g_malloc) */
    uint64_t data_max;          /* blocks that may be staged */
    uint64_t bytes_received;    /* statistic */
    uint64_t done;              /* entries of hot dealt with */
    uint64_t total;             /* entries received (statistic) */
    bool running;               /* a warm-up coroutine exists */
    int width;                  /* origin reads in flight, >= 1 (AIMD) */
    uint64_t lat_floor;         /* lowest warm-up read latency, ns */
    uint64_t lineage;           /* the source's (0: none arrived) */
    uint64_t tenure;            /* the source's */
    GArray *wsets;              /* HostcacheWset received, any order */
} HostcacheMigIn;

/* Write sets of earlier tenures kept and passed on, at most. */
#define HOSTCACHE_TENURES_KEPT      8

/* The chunks a tenure wrote: bit c covers bytes [c << shift, c+1 << shift). */
typedef struct HostcacheWset {
    uint64_t tenure;
    uint64_t nchunks;
    unsigned long *bits;
} HostcacheWset;

/*
 * The VM's lineage and tenure (hostcache-warm.c), so that an SSD tier a
 * VM left behind on a host can be trusted when it comes back: a cold open
 * starts a lineage; each live migration starts a tenure; every write
 * marks its chunks in the tenure's write set, and the sets of the last
 * HOSTCACHE_TENURES_KEPT tenures travel with the VM.  Protected by
 * BDRVHostcacheState.lock.
 */
typedef struct HostcacheTenure {
    uint64_t lineage;           /* random, != 0; 0 only while inactive */
    uint64_t tenure;            /* >= 1 once active */
    uint32_t shift;             /* chunk size, log2 bytes (>= block size) */
    HostcacheWset cur;          /* this tenure's writes */
    /* HostcacheWset of earlier tenures, contiguous up to tenure - 1 */
    GArray *old;
    /* it arrived by live migration with a chain from this tenure (0: no) */
    uint64_t chain_from;
} HostcacheTenure;

typedef struct BDRVHostcacheState {
    /* Options in force; changed only by reopen commit (drained, BQL). */
    HostcacheOpts opts;

    /* The cache.  Every call into it is made with lock held. */
    HcEngine *eng;

    /*
     * Protects eng (and its statistics) and the fields the sub-structures
     * below say; never held across a yield.  Requests of one node may run
     * in several threads (multiqueue devices).
     */
    QemuMutex lock;

    HostcacheWb wb;
    HostcacheSsdTier ssd;
    HostcacheJournal j;
    HostcacheMigOut mig_out;
    HostcacheMigIn mig_in;
    HostcacheTenure t;

    /*
     * Origin writes completed (origin_wgen, atomic) and covered by a
     * completed origin flush (origin_fgen <= origin_wgen, under lock): a
     * demotion's slot-table entry is written only once every origin write
     * before it is flushed, so a power cut can never leave the SSD newer
     * than the origin.
     */
    uint64_t origin_wgen;
    uint64_t origin_fgen;

    /*
     * An event count for requests that wait for work in flight elsewhere
     * (a destage, a journal batch, a direct request over the same blocks):
     * progress_gen counts completions of such work (under lock), and
     * waiters sleep in progress (hostcache_progress_wait()).
     */
    uint64_t progress_gen;
    CoQueue progress;

    /*
     * HOSTCACHE_CHECK_INDEX set in the environment (tests): the indexes'
     * invariants are checked after every batch, aborting when broken.
     */
    bool check_index;
} BDRVHostcacheState;

/* Write-back with the SSD tier on: flushes go to the journal. */
static inline bool hostcache_journaling(BDRVHostcacheState *s)
{
    return s->opts.mode == HOSTCACHE_MODE_WRITE_BACK && s->ssd.on;
}

/* Dirty entries on the SSD tier (lock held); 0 without a tier. */
static inline uint64_t hostcache_ssd_dirty(BDRVHostcacheState *s)
{
    return s->ssd.idx ? hc_ssd_dirty_blocks(s->ssd.idx) +
        hc_ssd_kept_dirty(s->ssd.idx) : 0;
}

static inline uint64_t hostcache_bsize(BDRVHostcacheState *s)
{
    return s->opts.cfg.block_size;
}

/* May blk be on the SSD tier (lock held)?  Dirty entries count always. */
static inline bool hostcache_ssd_usable(BDRVHostcacheState *s)
{
    return s->ssd.idx && (s->ssd.on || hc_ssd_dirty_blocks(s->ssd.idx));
}

/* hostcache.c */

void hostcache_check_locked(BDRVHostcacheState *s, const char *where);
void hostcache_progress_locked(BDRVHostcacheState *s);
uint64_t hostcache_progress_mark(BDRVHostcacheState *s);
void coroutine_fn hostcache_progress_wait(BDRVHostcacheState *s,
                                          uint64_t mark);

/* hostcache-io.c */

/* What hostcache_do_write() does at the origin. */
typedef enum HostcacheWriteKind {
    HOSTCACHE_WRITE,
    HOSTCACHE_ZEROES,
    HOSTCACHE_DISCARD,
} HostcacheWriteKind;

int coroutine_fn GRAPH_RDLOCK
hostcache_read(BlockDriverState *bs, int64_t offset, int64_t bytes,
               QEMUIOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
int coroutine_fn GRAPH_RDLOCK
hostcache_do_write(BlockDriverState *bs, HostcacheWriteKind kind,
                   int64_t offset, int64_t bytes, QEMUIOVector *qiov,
                   size_t qiov_offset, BdrvRequestFlags flags);

/* hostcache-wb.c */

int coroutine_fn GRAPH_RDLOCK hostcache_origin_flush(BlockDriverState *bs);
void hostcache_pace_locked(BDRVHostcacheState *s, int ret, uint64_t ns);
int coroutine_fn GRAPH_RDLOCK
hostcache_wb_flush(BlockDriverState *bs);
void hostcache_kick_destager(BlockDriverState *bs);
void hostcache_wake_destager(BlockDriverState *bs);
void hostcache_drain_begin(BlockDriverState *bs);
void hostcache_drain_end(BlockDriverState *bs);
int coroutine_fn GRAPH_RDLOCK
hostcache_wb_begin_direct(BlockDriverState *bs, HcOp *op, uint64_t first,
                          uint64_t end);
int coroutine_fn GRAPH_RDLOCK
hostcache_wb_write(BlockDriverState *bs, int64_t offset, int64_t bytes,
                   QEMUIOVector *qiov, size_t qiov_offset);

/* hostcache-ssd.c */

void hostcache_ssd_fail_locked(BlockDriverState *bs, int ret,
                               const char *what);
int GRAPH_RDLOCK hostcache_ssd_flush(BlockDriverState *bs);
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_write_sector(BlockDriverState *bs, uint64_t sec,
                           BdrvRequestFlags flags);
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_persist(BlockDriverState *bs, uint64_t sec);
void hostcache_note_sector(void *opaque, uint64_t sec);
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_write_sectors(BlockDriverState *bs, HostcacheSectors *l,
                            BdrvRequestFlags flags);
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_persist_all(BlockDriverState *bs, HostcacheSectors *l);
void hostcache_pending_add(BDRVHostcacheState *s, uint64_t blk,
                           uint64_t sec);
void coroutine_fn GRAPH_RDLOCK
hostcache_ssd_forget(BlockDriverState *bs, uint64_t first, uint64_t end);
void hostcache_ssd_drop_locked(BDRVHostcacheState *s, uint64_t blk,
                               HostcacheSectors *l);
void hostcache_evicted(void *opaque, uint64_t blk, const void *data);
void hostcache_kick_demoter(BlockDriverState *bs);
int GRAPH_RDLOCK
hostcache_ssd_write_super(BlockDriverState *bs, uint32_t state, bool drop);
int GRAPH_RDLOCK hostcache_ssd_attach(BlockDriverState *bs, bool drop,
                                      bool activation, Error **errp);
void hostcache_ssd_detach(BDRVHostcacheState *s);
int coroutine_fn GRAPH_RDLOCK
hostcache_ssd_try_read(BlockDriverState *bs, uint64_t blk, int64_t pos,
                       int64_t end_off, QEMUIOVector *qiov, size_t qiov_offset,
                       bool bypass, int64_t *n);

/* hostcache-warm.c: live migration, the driver's side (no migration API) */

bool hostcache_is_node(BlockDriverState *bs);
uint32_t hostcache_block_size(BlockDriverState *bs);
const char *hostcache_origin_id(BlockDriverState *bs);
uint64_t hostcache_max_dirty(BDRVHostcacheState *s);
void hostcache_modified_locked(BDRVHostcacheState *s, uint64_t first,
                               uint64_t end);
void hostcache_mig_drained_locked(BDRVHostcacheState *s, uint64_t bytes);
void hostcache_mig_out_begin(BlockDriverState *bs);
void hostcache_mig_out_end(BlockDriverState *bs);
void hostcache_mig_out_pending(BlockDriverState *bs, uint64_t budget_ms,
                               uint64_t *dirty, uint64_t *drain_ms,
                               uint64_t *unsent);
HostcacheWarmUp hostcache_mig_out_mode(BlockDriverState *bs);
size_t hostcache_mig_out_take_hot(BlockDriverState *bs, uint64_t *blks,
                                  size_t max);
size_t hostcache_mig_out_take_invals(BlockDriverState *bs, uint64_t *blks,
                                     size_t max);
bool hostcache_mig_out_take_data(BlockDriverState *bs, uint64_t *blk,
                                 void *buf);
void hostcache_mig_in_begin(BlockDriverState *bs, HostcacheWarmUp warm,
                            uint32_t src_block_size);
void hostcache_mig_in_hot(BlockDriverState *bs, const uint64_t *blks,
                          size_t n);
void hostcache_mig_in_data(BlockDriverState *bs, uint64_t blk,
                           const void *buf);
void hostcache_mig_in_inval(BlockDriverState *bs, const uint64_t *blks,
                            size_t n);
void hostcache_mig_in_complete(BlockDriverState *bs);
void hostcache_mig_in_drop(BlockDriverState *bs, bool incomplete_only);
void hostcache_warm_up_start(BlockDriverState *bs);
void hostcache_kick_warm_up(BlockDriverState *bs);
void hostcache_mig_free(BDRVHostcacheState *s);
void hostcache_tenure_start(BDRVHostcacheState *s, uint64_t origin_size);
void hostcache_tenure_arrived(BDRVHostcacheState *s, uint64_t origin_size);
void hostcache_tenure_chain(BDRVHostcacheState *s, HcSsdOpen *o);
void hostcache_tenure_drop_written(BDRVHostcacheState *s, uint64_t since);
void hostcache_mig_out_lineage(BlockDriverState *bs, uint64_t *lineage,
                               uint64_t *tenure);
size_t hostcache_mig_out_wsets(BlockDriverState *bs, bool current,
                               HostcacheWset *out, size_t max,
                               uint32_t *shift);
void hostcache_mig_in_lineage(BlockDriverState *bs, uint64_t lineage,
                              uint64_t tenure);
void hostcache_mig_in_wset(BlockDriverState *bs, uint64_t tenure,
                           uint32_t shift, uint64_t nchunks,
                           unsigned long *bits);
void hostcache_mig_free_out_locked(BDRVHostcacheState *s);

/* hostcache-journal.c */

int hostcache_journal_rebuild(BDRVHostcacheState *s);
void hostcache_journal_free(BDRVHostcacheState *s);
int coroutine_fn GRAPH_RDLOCK
hostcache_journal(BlockDriverState *bs, uint64_t upto, uint64_t limit,
                  bool flush);
int64_t coroutine_fn GRAPH_RDLOCK
hostcache_jdestage_some(BlockDriverState *bs, uint64_t limit,
                        const int *stop);
int coroutine_fn GRAPH_RDLOCK
hostcache_journal_sync(BlockDriverState *bs);

#endif /* BLOCK_HOSTCACHE_INT_H */
