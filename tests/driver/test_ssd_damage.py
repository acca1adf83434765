#!/usr/bin/python3
"""Damage to hostcache's SSD tier file while QEMU is stopped costs hits, never
correctness: damaged data slots, slot table entries and one superblock copy
are skipped; a damaged journal entry, two damaged superblocks, a foreign
device and a crafted tier (valid CRCs, hostile contents) are refused
without being touched.

Checks as in test_ssd_hits.py (hostcache.ssdtier, hostcache.ssdfile).
HC_SEED repeats a run (the seed is printed).
"""

import os
import random
import time

from hostcache import KiB, MiB, ssdfile
from hostcache.check import check, check_eq
from hostcache.qemu import make_file
from hostcache.runner import main
from hostcache.ssdtier import (BS, REFORMAT_MSG, SEED, SsdExport,
                               check_no_wrong_entries, crashed_journal,
                               damaged_setup, file_bytes, open_fails,
                               restart_check, subdir)


def test_damaged_data_slots():
    d, img, ssd, ents = damaged_setup('dmg-data')
    sb, _ = ssdfile.read_super(ssd)
    victims = sorted(ents.items())[::len(ents) // 6][:6]
    for blk, (slot, _) in victims:
        ssdfile.flip(ssd, ssdfile.slot_offset(sb, slot) + 100 + slot % 3000, 3)
    check_eq(len(ssdfile.servable(ssd)), len(ents) - len(victims),
             'entries with a matching data CRC after the damage')
    st, _ = restart_check(d, img, ssd, 'dmg-data')
    check_eq(st['recovered-at-open'], len(ents), 'recovered (the slot '
             'table is intact)')
    check_eq(st['ssd-corrupt'], len(victims), 'ssd-corrupt: one per '
             'damaged slot read')
    check(st['ssd-hits'] >= len(ents) - len(victims) - 8,
          f'the undamaged slots were not served: {st}')


def test_damaged_slot_table():
    d, img, ssd, ents = damaged_setup('dmg-table')
    slots = sorted(s for s, _ in ents.values())
    # (i) a few entries with a flipped byte (blk, seq, crc or flags)
    hit = slots[3::len(slots) // 5][:5]
    for i, s in enumerate(hit):
        ssdfile.flip(ssd, ssdfile.entry_offset(s) + (0, 9, 17, 24, 29)[i % 5])
    # (ii) a torn table sector: its second half reads as zeroes
    torn = slots[-1] // 128
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(2048), ssdfile.META_OFFSET +
                  torn * 4096 + 2048)
    lost = set(hit) | {s for s in slots if s // 128 == torn and
                       s % 128 >= 64}
    left = len(ents) - len(lost)
    check_eq(len(ssdfile.entries(ssd)), left, 'entries left on disk')
    st, _ = restart_check(d, img, ssd, 'dmg-table')
    check_eq(st['recovered-at-open'], left, 'recovered: the damaged entries '
             'are ignored')
    check_eq(st['ssd-corrupt'], 0, 'ssd-corrupt')
    check(st['ssd-hits'] >= left - 8, f'the intact entries were not '
          f'served: {st}')


def test_damaged_journal_entry_fails_the_open():
    """A damaged slot-table entry of a tier holding a write-back journal
    may have been dirty: the open fails and changes nothing (a clean tier's
    damaged entries are misses: test_damaged_slot_table)."""
    d, img, ssd, hc, _ = crashed_journal('dmg-jentry', range(40), 4 * MiB,
                                         1 * MiB)
    sb, _ = ssdfile.read_super(ssd)
    with open(ssd, 'rb') as f:
        table = os.pread(f.fileno(), sb['nslots'] * 32, ssdfile.META_OFFSET)
    dirty = [slot for slot in range(sb['nslots'])
             if (e := ssdfile.decode_entry(table[slot * 32:slot * 32 + 32]))
             and e[4] & 2]
    check(len(dirty) >= 40, f'only {len(dirty)} dirty entries')
    # the entry of one dirty block, damaged: its flags are unknown now
    ssdfile.flip(ssd, ssdfile.entry_offset(dirty[len(dirty) // 2]) + 9)
    err = open_fails(d, img, ssd, 'dmg-jentry', 'slot table is damaged',
                     hc=hc)
    check('zero the ssd node' in err and 'nothing was changed' in err, err)
    # what the message says to do: the tier starts empty, the origin's
    # data is served
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(8192), 0)
    restart_check(d, img, ssd, 'dmg-jentry-zeroed', hc=hc)


def test_damaged_one_superblock_copy():
    d, img, ssd, ents = damaged_setup('dmg-sb')
    pristine = file_bytes(ssd)
    for copy in (0, 1):
        with open(ssd, 'wb') as f:
            f.write(pristine)
        ssdfile.flip(ssd, copy * 4096 + 64, 4)     # cache_gen
        sb, copies = ssdfile.read_super(ssd)
        check(copies[copy] is None and copies[1 - copy] is not None,
              f'copy {copy} not damaged as intended')
        check_eq(len(ssdfile.entries(ssd)), len(ents), 'entries via the '
                 'other copy')
        st, log = restart_check(d, img, ssd, f'dmg-sb{copy}')
        check_eq(st['recovered-at-open'], len(ents), f'copy {copy} damaged: '
                 'recovered through the other copy')
        check(REFORMAT_MSG not in log, f'reformatted: {log}')
        check(st['ssd-hits'] > 0, f'no hits: {st}')


def test_damaged_newest_superblock_after_a_drop():
    """A drop (here: reopen to pass-through) writes one superblock copy
    with a new cache generation; blocks then change on the origin and the
    host crashes; then that newest copy is damaged.  Recovery falls back to
    the older copy, whose cache generation must not bring the dropped
    entries back."""
    d, img, ssd, ents = damaged_setup('dmg-sb-drop')
    hx = SsdExport(d, img, ssd, name='qsd-drop',
                   hc={'ram-size': 256 * KiB, 'seq-cutoff': 0})
    try:
        check_eq(hx.stats()['ssd-recovered'], len(ents), 'recovered')
        hx.reopen(mode='pass-through')
        c = hx.client()
        rng = random.Random(f'{SEED}-sbdrop')
        for blk in sorted(ents):
            c.write(blk * BS, rng.randbytes(BS))
        c.close()
        hx.kill()
    finally:
        hx.stop()
    sb, copies = ssdfile.read_super(ssd)
    newest = copies.index(sb)
    ssdfile.flip(ssd, newest * 4096 + 200, 4)
    check(ssdfile.read_super(ssd)[1][newest] is None, 'not damaged')
    restart_check(d, img, ssd, 'dmg-sb-drop-2')
    check_no_wrong_entries(ssd, img, 'after the fallback')


def test_damaged_both_superblocks():
    d, img, ssd, ents = damaged_setup('dmg-sb2')
    rng = random.Random(f'{SEED}-sb2')
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), rng.randbytes(8192), 0)
    open_fails(d, img, ssd, 'sb2', 'zero its first 8 KiB')
    # what the message says to do makes it usable again, empty
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(8192), 0)
    st, _ = restart_check(d, img, ssd, 'sb2-zeroed')
    check_eq(st['recovered-at-open'], 0, 'recovered after zeroing')
    sb, _ = ssdfile.read_super(ssd)
    check(sb is not None, 'not formatted after zeroing')


def test_foreign_device_refused():
    d = subdir('foreign')
    img = make_file(os.path.join(d, 'origin.img'), 1 * MiB)
    # a device holding something else: random bytes; then zeroes but for
    # one byte in the second superblock's place
    ssd = make_file(os.path.join(d, 'other.img'), 1 * MiB)
    err = open_fails(d, img, ssd, 'foreign', 'zero its first 8 KiB')
    check('neither a hostcache superblock nor zeroes' in err, err)
    with open(ssd, 'r+b') as f:
        os.pwrite(f.fileno(), bytes(8192), 0)
        os.pwrite(f.fileno(), b'\x01', 4096 + 17)
    open_fails(d, img, ssd, 'foreign2', 'zero its first 8 KiB')


def test_crafted_tier_is_refused_not_obeyed():
    """A tier file is input from disk, and QEMU's user can write it: every
    field read from it is checked against the devices before use.  Each
    crafted tier below (CRCs made right, so only those checks stand in the
    way) fails the open at once with a message, changes nothing, and the
    daemon lives on: a journal entry naming a block past the origin's end
    (the destager would write past the end, and QEMU aborted at every
    start), a sequence number near 2^64 (the next one would wrap), and
    superblocks whose data offset, block size or state are impossible (a
    data offset near 2^64 made the open loop for hours)."""
    blocks = list(range(0, 40, 2))
    d, img, ssd, hc, _ = crashed_journal('crafted', blocks, 4 * MiB,
                                         1 * MiB)
    pristine = file_bytes(ssd)
    sb, _ = ssdfile.read_super(ssd)
    slot = min(s for s, _ in ssdfile.entries(ssd).values())
    cases = [
        ('blk-past-end', lambda: ssdfile.patch_entry(ssd, slot, blk=(2 * MiB) //
                                                     BS + 3),
         'past the origin'),
        ('seq-wraps', lambda: ssdfile.patch_entry(ssd, slot, seq=2**64 - 2),
         'damaged'),
        ('data-offset', lambda: ssdfile.patch_super(ssd,
                                                    data_offset=2**63 + 8192),
         'impossible geometry'),
        ('data-offset-small', lambda: ssdfile.patch_super(
            ssd, data_offset=sb['data_offset'] - 4096), 'impossible geometry'),
        ('block-size', lambda: ssdfile.patch_super(ssd, block_size=1 << 30),
         'impossible geometry'),
        ('nslots', lambda: ssdfile.patch_super(ssd, nslots=2**40),
         'impossible geometry'),
        ('state', lambda: ssdfile.patch_super(ssd, state=9),
         'impossible geometry'),
    ]
    for tag, craft, want in cases:
        with open(ssd, 'wb') as f:
            f.write(pristine)
        craft()
        t0 = time.monotonic()
        open_fails(d, img, ssd, f'crafted-{tag}', want, hc=hc)
        check(time.monotonic() - t0 < 60, f'{tag}: the refusal took '
              f'{time.monotonic() - t0:.0f} s')


if __name__ == '__main__':
    print(f'seed {SEED} (set HC_SEED to repeat)')
    main(globals())
