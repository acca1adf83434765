/*
 * hostcache: the chained hash of block numbers shared by the RAM index
 * (hc-engine.c) and the SSD index (hc-ssd.c).
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * Plain C without QEMU headers.  HC_HASH_DEFINE(p, T, arr, nil) defines,
 * for a container type T with fields `uint32_t *bucket` (2^hbits heads),
 * `uint32_t hbits` and an array `arr` of entries with fields `uint64_t blk`
 * and `uint32_t hnext`:
 *
 *   uint32_t p##bucket_of(const T *c, uint64_t blk)
 *   uint32_t p##find(const T *c, uint64_t blk)      entry index or nil
 *   void     p##hash_add(T *c, uint32_t i)          link entry i by its blk
 *   void     p##hash_del(T *c, uint32_t i)          unlink entry i
 */

#ifndef HC_HASH_H
#define HC_HASH_H

#include <stdint.h>

/* Fibonacci hashing: the top hbits bits of blk * 2^64/phi. */
#define HC_HASH_DEFINE(p, T, arr, nil)                                      \
static inline uint32_t p##bucket_of(const T *c, uint64_t blk)               \
{                                                                           \
    return (uint32_t)((blk * 0x9e3779b97f4a7c15ull) >> (64 - c->hbits));    \
}                                                                           \
                                                                            \
static inline uint32_t p##find(const T *c, uint64_t blk)                    \
{                                                                           \
    uint32_t i = c->bucket[p##bucket_of(c, blk)];                           \
                                                                            \
    while (i != (nil) && c->arr[i].blk != blk) {                            \
        i = c->arr[i].hnext;                                                \
    }                                                                       \
    return i;                                                               \
}                                                                           \
                                                                            \
static inline void p##hash_add(T *c, uint32_t i)                            \
{                                                                           \
    uint32_t b = p##bucket_of(c, c->arr[i].blk);                            \
                                                                            \
    c->arr[i].hnext = c->bucket[b];                                         \
    c->bucket[b] = i;                                                       \
}                                                                           \
                                                                            \
static inline void p##hash_del(T *c, uint32_t i)                            \
{                                                                           \
    uint32_t *link = &c->bucket[p##bucket_of(c, c->arr[i].blk)];            \
                                                                            \
    while (*link != i) {                                                    \
        link = &c->arr[*link].hnext;                                        \
    }                                                                       \
    *link = c->arr[i].hnext;                                                \
}

#endif /* HC_HASH_H */
