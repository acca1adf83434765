/*
 * hostcache SSD tier: what hc-ssd.c (the in-memory index) and
 * hc-ssd-format.c (the superblock, CRC32C and the tier's plan) share.
 * Private to those two files.
 *
 * Copyright (c) 2026 The hostcache authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#ifndef HC_SSD_INT_H
#define HC_SSD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HC_SSD_MAX_SLOTS 0x7fffffffull
#define HC_SSD_MAX_BLOCK (2u * 1024 * 1024)
/* No run hands out this many sequence numbers; a larger one is damage. */
#define HC_SSD_SEQ_MAX   (1ull << 62)

/* An error message into err (of errlen bytes; none when err is NULL). */
void hc_ssd_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- little-endian encoding ---------------------------------------------- */

static inline void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = v;
    p[1] = v >> 8;
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = v >> (8 * i);
    }
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = v >> (8 * i);
    }
}

static inline uint16_t get_le16(const uint8_t *p)
{
    return p[0] | (uint16_t)p[1] << 8;
}

static inline uint32_t get_le32(const uint8_t *p)
{
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static inline uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static inline bool hc_all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

#endif /* HC_SSD_INT_H */
