/*
 * hostcache write-back journal: the order of journaled blocks and the rules
 * of their write-back to the origin.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * Plain C without QEMU headers, like hc-engine.[ch] and hc-ssd.[ch]: the
 * driver (hostcache-journal.c) does the I/O, this module decides.  Each
 * journaled block is an entry (its SSD slot and the sequence number of its
 * dirty entry there), kept in sequence order.  Entries before `head` are
 * on the origin; a journal batch in flight appends entries from `busy` on,
 * which no write-back may pass (their data may not be on the SSD yet).
 */

#ifndef HC_JOURNAL_H
#define HC_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hc-ssd.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HC_JOURNAL_NONE     SIZE_MAX

typedef struct HcJEntry {
    uint64_t slot;
    uint64_t seq;
    int64_t ns;             /* when journaled; meaningless when recovered */
    bool recovered;         /* left by an earlier run: due at once */
} HcJEntry;

typedef struct HcJournal HcJournal;

HcJournal *hc_journal_new(void);
void hc_journal_free(HcJournal *j);
void hc_journal_clear(HcJournal *j);
size_t hc_journal_len(const HcJournal *j);
size_t hc_journal_head(const HcJournal *j);

/* Entries of a recovered tier's dirty slots (indexed or KEPT), in order. */
int hc_journal_rebuild(HcJournal *j, const HcSsd *ssd);

/* A journal batch begins (its entries are appended from now) and ends. */
void hc_journal_batch_begin(HcJournal *j);
void hc_journal_batch_end(HcJournal *j);
/* Room for more appends (which then cannot fail); -ENOMEM. */
int hc_journal_reserve(HcJournal *j, size_t more);
int hc_journal_append(HcJournal *j, uint64_t slot, uint64_t seq, int64_t ns);

/*
 * Is the journal (ssd_dirty blocks on a tier of capacity slots) due for
 * the origin at time now, with entries due after age_ns?  Recovered
 * entries, kept older versions alone, and a quarter of the tier dirty are
 * due at once.  *oldest is the time the oldest entry was journaled (now
 * when none).
 */
bool hc_journal_due(const HcJournal *j, int64_t now, uint64_t age_ns,
                    uint64_t ssd_dirty, uint64_t capacity, int64_t *oldest);

/*
 * The next write-back batch: up to limit entries still dirty on ssd, oldest
 * first from head, stopping before the batch's in-flight journal entries
 * and before a second version of a block (the batch's writes run in
 * parallel: the older might land last).  The entries are copied to out
 * and their slots pinned; *next is where head goes when the batch is on
 * the origin.  Returns the number.
 */
size_t hc_journal_pick(const HcJournal *j, HcSsd *ssd, HcJEntry *out,
                       size_t limit, size_t *next);

/* The batch picked up to next is on the origin: move head, compact. */
void hc_journal_advance(HcJournal *j, size_t next);

const char *hc_journal_check(const HcJournal *j, const HcSsd *ssd);

#ifdef __cplusplus
}
#endif

#endif /* HC_JOURNAL_H */
