/*
 * hostcache engine: write-back.  Dirty blocks in RAM, the destage queue in
 * write order, destages in flight and what they wait for.  See
 * hc-engine.h; the index and eviction are hc-engine.c.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hc-engine-int.h"

static bool hc_dq_reserve(HcEngine *e)
{
    size_t ncap;
    HcDirtyRec *n;

    if (e->dq_len < e->dq_cap) {
        return true;
    }
    ncap = e->dq_cap ? e->dq_cap * 2 : 256;
    n = malloc(ncap * sizeof(*n));
    if (!n) {
        return false;
    }
    for (size_t i = 0; i < e->dq_len; i++) {
        n[i] = e->dq[(e->dq_head + i) % e->dq_cap];
    }
    free(e->dq);
    e->dq = n;
    e->dq_cap = ncap;
    e->dq_head = 0;
    return true;
}

static inline HcDirtyRec *hc_dq_at(const HcEngine *e, size_t i)
{
    return &e->dq[(e->dq_head + i) % e->dq_cap];
}

void *hc_write_dirty(HcEngine *e, uint64_t blk, uint64_t now_ns)
{
    uint32_t s = hc_find(e, blk);
    HcEntry *x;

    if (!hc_dq_reserve(e)) {
        return NULL;
    }
    if (s == HC_NIL) {
        s = hc_slot_new(e, blk);
        if (s == HC_NIL) {
            return NULL;
        }
    } else {
        hc_touch(e, s);
    }
    x = &e->ent[s];
    x->gen++;
    if (!(x->flags & HC_F_DIRTY)) {
        x->flags |= HC_F_DIRTY;
        e->ndirty++;
    }
    if (!(x->flags & HC_F_QUEUED)) {
        /* Not queued (clean, or its record is being destaged): queue it. */
        *hc_dq_at(e, e->dq_len++) = (HcDirtyRec) { blk, ++e->wseq, now_ns };
        x->flags |= HC_F_QUEUED;
    } else {
        ++e->wseq;  /* covered by the record already queued (older seq) */
    }
    for (HcOp *o = e->ops; o; o = o->next) {
        if (o->kind == HC_OP_FILL && blk >= o->first && blk < o->end) {
            o->stale = true;
        }
    }
    return hc_slot_data(e, s);
}

static bool hc_blocked_by_write(const HcEngine *e, uint64_t blk)
{
    for (HcOp *o = e->ops; o; o = o->next) {
        if (o->kind == HC_OP_WRITE && blk >= o->first && blk < o->end) {
            return true;
        }
    }
    return false;
}

const void *hc_destage_begin(HcEngine *e, HcDestage *d, uint64_t max_seq)
{
    while (e->dq_len) {
        HcDirtyRec *r = hc_dq_at(e, 0);
        uint32_t s = hc_find(e, r->blk);
        HcEntry *x;

        if (s == HC_NIL || !(e->ent[s].flags & HC_F_QUEUED)) {
            /* dropped (invalidated) while queued */
            e->dq_head = (e->dq_head + 1) % e->dq_cap;
            e->dq_len--;
            continue;
        }
        x = &e->ent[s];
        if (r->seq > max_seq || (x->flags & HC_F_DESTAGE) ||
            hc_blocked_by_write(e, r->blk)) {
            return NULL;
        }
        *d = (HcDestage) { r->blk, r->seq, r->time_ns, x->gen, NULL, NULL };
        e->dq_head = (e->dq_head + 1) % e->dq_cap;
        e->dq_len--;
        x->flags = (x->flags & ~HC_F_QUEUED) | HC_F_DESTAGE;
        d->next = e->destaging;
        if (d->next) {
            d->next->prev = d;
        }
        e->destaging = d;
        return hc_slot_data(e, s);
    }
    return NULL;
}

const void *hc_destage_begin_blk(HcEngine *e, HcDestage *d, uint64_t blk)
{
    uint32_t s = hc_find(e, blk);
    HcEntry *x;

    if (s == HC_NIL) {
        return NULL;
    }
    x = &e->ent[s];
    if (!(x->flags & HC_F_DIRTY) || (x->flags & HC_F_DESTAGE) ||
        hc_blocked_by_write(e, blk)) {
        return NULL;
    }
    /*
     * Its queue record (if any) is skipped from now on.  seq 0 makes every
     * flush wait for this destage, which is conservative: its own position
     * in the queue is not known here.
     */
    *d = (HcDestage) { blk, 0, 0, x->gen, NULL, NULL };
    x->flags = (x->flags & ~HC_F_QUEUED) | HC_F_DESTAGE;
    d->next = e->destaging;
    if (d->next) {
        d->next->prev = d;
    }
    e->destaging = d;
    return hc_slot_data(e, s);
}

void hc_destage_end(HcEngine *e, HcDestage *d, bool ok)
{
    uint32_t s = hc_find(e, d->blk);
    HcEntry *x = s == HC_NIL ? NULL : &e->ent[s];

    if (d->prev) {
        d->prev->next = d->next;
    } else {
        e->destaging = d->next;
    }
    if (d->next) {
        d->next->prev = d->prev;
    }
    d->prev = d->next = NULL;
    if (!x || !(x->flags & HC_F_DESTAGE)) {
        return;     /* dropped while in flight */
    }
    x->flags &= ~HC_F_DESTAGE;
    if (ok) {
        if (x->gen == d->gen && !(x->flags & HC_F_QUEUED)) {
            x->flags &= ~HC_F_DIRTY;
            e->ndirty--;
        }
        return;
    }
    /*
     * Retry with the original seq: flushes waiting for it must not
     * complete.  A newer record of the same block may also be queued; it
     * then finds the block clean or destages it again.
     */
    if (hc_dq_reserve(e)) {
        /*
         * Back at its place in seq order (not simply at the head: two
         * failed destages would then be out of order, and a flush waiting
         * for the older one would stop looking at the newer one).
         */
        size_t i = 0;

        while (i < e->dq_len && hc_dq_at(e, i)->seq <= d->seq) {
            i++;
        }
        for (size_t j = e->dq_len; j > i; j--) {
            *hc_dq_at(e, j) = *hc_dq_at(e, j - 1);
        }
        e->dq_len++;
        *hc_dq_at(e, i) = (HcDirtyRec) { d->blk, d->seq, d->time_ns };
        x->flags |= HC_F_QUEUED;
    }
}

bool hc_dirty_pending_upto(const HcEngine *e, uint64_t upto)
{
    for (HcDestage *d = e->destaging; d; d = d->next) {
        if (d->seq <= upto) {
            return true;
        }
    }
    for (size_t i = 0; i < e->dq_len; i++) {
        const HcDirtyRec *r = hc_dq_at(e, i);
        uint32_t s;

        if (r->seq > upto) {
            return false;   /* the queue is in seq order */
        }
        s = hc_find(e, r->blk);
        if (s != HC_NIL && (e->ent[s].flags & HC_F_QUEUED)) {
            return true;
        }
    }
    return false;
}

uint64_t hc_write_seq(const HcEngine *e)
{
    return e->wseq;
}

uint64_t hc_dirty_blocks(const HcEngine *e)
{
    return e->ndirty;
}

uint64_t hc_dirty_queued(const HcEngine *e)
{
    return e->dq_len;
}

bool hc_dirty_oldest(HcEngine *e, uint64_t *time_ns)
{
    uint64_t t = UINT64_MAX;

    for (HcDestage *d = e->destaging; d; d = d->next) {
        t = d->time_ns < t ? d->time_ns : t;
    }
    if (e->dq_len && hc_dq_at(e, 0)->time_ns < t) {
        t = hc_dq_at(e, 0)->time_ns;
    }
    *time_ns = t;
    return t != UINT64_MAX;
}

bool hc_is_dirty(const HcEngine *e, uint64_t blk)
{
    uint32_t s = hc_find(e, blk);

    return s != HC_NIL && (e->ent[s].flags & HC_F_DIRTY);
}
