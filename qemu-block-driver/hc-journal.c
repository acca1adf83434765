/*
 * hostcache write-back journal: order and write-back rules.  See
 * hc-journal.h.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hc-journal.h"

/* Compact the array once this many entries before head are done. */
#define HC_JOURNAL_COMPACT      1024

struct HcJournal {
    HcJEntry *e;            /* entries, in sequence order */
    size_t len, cap;
    size_t head;            /* first entry not yet on the origin */
    size_t busy;            /* first entry of the batch in flight, or NONE */
};

HcJournal *hc_journal_new(void)
{
    HcJournal *j = calloc(1, sizeof(*j));

    if (j) {
        j->busy = HC_JOURNAL_NONE;
    }
    return j;
}

void hc_journal_free(HcJournal *j)
{
    if (j) {
        free(j->e);
        free(j);
    }
}

void hc_journal_clear(HcJournal *j)
{
    j->len = j->head = 0;
    j->busy = HC_JOURNAL_NONE;
}

size_t hc_journal_len(const HcJournal *j)
{
    return j->len;
}

size_t hc_journal_head(const HcJournal *j)
{
    return j->head;
}

int hc_journal_reserve(HcJournal *j, size_t more)
{
    size_t cap = j->cap ? j->cap : 256;
    HcJEntry *e;

    while (cap < j->len + more) {
        cap *= 2;
    }
    if (cap == j->cap) {
        return 0;
    }
    e = realloc(j->e, cap * sizeof(*e));
    if (!e) {
        return -ENOMEM;
    }
    j->e = e;
    j->cap = cap;
    return 0;
}

int hc_journal_append(HcJournal *j, uint64_t slot, uint64_t seq, int64_t ns)
{
    if (j->len == j->cap && hc_journal_reserve(j, 1) < 0) {
        return -ENOMEM;
    }
    j->e[j->len++] = (HcJEntry) { .slot = slot, .seq = seq, .ns = ns };
    return 0;
}

static int hc_jentry_cmp(const void *a, const void *b)
{
    const HcJEntry *x = a, *y = b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int hc_journal_rebuild(HcJournal *j, const HcSsd *ssd)
{
    hc_journal_clear(j);
    for (uint64_t slot = hc_ssd_next_dirty(ssd, 0); slot != HC_SSD_NONE;
         slot = hc_ssd_next_dirty(ssd, slot + 1)) {
        uint64_t seq;

        hc_ssd_slot_blk(ssd, slot, &seq, NULL);
        if (hc_journal_append(j, slot, seq, 0) < 0) {
            return -ENOMEM;
        }
        j->e[j->len - 1].recovered = true;
    }
    if (j->len) {
        qsort(j->e, j->len, sizeof(*j->e), hc_jentry_cmp);
    }
    return 0;
}

void hc_journal_batch_begin(HcJournal *j)
{
    j->busy = j->len;
}

void hc_journal_batch_end(HcJournal *j)
{
    j->busy = HC_JOURNAL_NONE;
}

bool hc_journal_due(const HcJournal *j, int64_t now, uint64_t age_ns,
                    uint64_t ssd_dirty, uint64_t capacity, int64_t *oldest)
{
    const HcJEntry *e = j->head < j->len ? &j->e[j->head] : NULL;

    *oldest = e ? e->ns : now;
    if (!e || e->recovered || ssd_dirty > capacity / 4) {
        /*
         * (no entry queued: kept older versions only, write them back; a
         * recovered journal's time is unknown, and a clock that starts at
         * the boot would make a host just back from a power cut wait)
         */
        return true;
    }
    return (uint64_t)(now - e->ns) >= age_ns;
}

size_t hc_journal_pick(const HcJournal *j, HcSsd *ssd, HcJEntry *out,
                       size_t limit, size_t *next)
{
    size_t stop = j->busy < j->len ? j->busy : j->len;
    size_t n = 0, pos;

    for (pos = j->head; pos < stop && n < limit; pos++) {
        const HcJEntry *e = &j->e[pos];
        uint64_t blk = hc_ssd_slot_blk(ssd, e->slot, NULL, NULL);
        bool again = false;

        if (!hc_ssd_is_dirty(ssd, e->slot, e->seq)) {
            continue;       /* replaced since, or on the origin already */
        }
        for (size_t k = 0; k < n && !again; k++) {
            again = hc_ssd_slot_blk(ssd, out[k].slot, NULL, NULL) == blk;
        }
        if (again) {
            break;          /* the next batch takes it, after this one */
        }
        hc_ssd_pin(ssd, e->slot);
        out[n++] = *e;
    }
    *next = pos;
    return n;
}

void hc_journal_advance(HcJournal *j, size_t next)
{
    j->head = next > j->len ? j->len : next;
    if (j->head > HC_JOURNAL_COMPACT && j->head * 2 > j->len &&
        j->busy == HC_JOURNAL_NONE) {
        memmove(j->e, j->e + j->head, (j->len - j->head) * sizeof(*j->e));
        j->len -= j->head;
        j->head = 0;
    }
}

const char *hc_journal_check(const HcJournal *j, const HcSsd *ssd)
{
    if (j->head > j->len || (j->busy != HC_JOURNAL_NONE && j->busy > j->len)) {
        return "journal head or busy past its end";
    }
    for (size_t i = 1; i < j->len; i++) {
        if (j->e[i - 1].seq >= j->e[i].seq) {
            return "journal entries out of sequence order";
        }
    }
    /* every dirty slot of the tier is an entry from head on */
    for (uint64_t slot = hc_ssd_next_dirty(ssd, 0); slot != HC_SSD_NONE;
         slot = hc_ssd_next_dirty(ssd, slot + 1)) {
        uint64_t seq;
        bool found = false;

        hc_ssd_slot_blk(ssd, slot, &seq, NULL);
        /* entries are in sequence order: a binary search from head */
        for (size_t lo = j->head, hi = j->len; lo < hi && !found;) {
            size_t mid = lo + (hi - lo) / 2;

            if (j->e[mid].seq == seq) {
                found = j->e[mid].slot == slot;
                break;
            } else if (j->e[mid].seq < seq) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if (!found) {
            return "a dirty SSD slot is not in the journal after its head";
        }
    }
    return NULL;
}
