"""Reading and damaging a hostcache SSD tier file from Python (standard
library only), for tests: the on-disk format of qemu-block-driver/hc-ssd.h.

    [0, 4 KiB)      superblock copy 0   magic "HOSTCACHE-SSD", CRC32C in
    [4 KiB, 8 KiB)  superblock copy 1   the last 4 bytes; the valid copy
                                        with the higher generation wins
    [8 KiB, D)      slot table, 32-byte entries: le64 blk, le64 seq,
                    le32 data_crc, le32 cache_gen, le16 flags, le16 -,
                    le32 CRC32C of the first 28 bytes
    [D, end)        data slots of block_size bytes (D = data_offset)

An entry counts when its CRC is right, its flags say valid and its
cache_gen is the superblock's; of two entries for one block the higher seq
wins (as hc_ssd_load_sector does).
"""

import os
import struct

SB_SIZE = 4096
META_OFFSET = 8192
ENTRY_SIZE = 32
MAGIC = b'HOSTCACHE-SSD\0\0\0'
STATE_CLEAN = 1
STATE_OPEN = 2
STATE_HANDED_OFF = 3     # a live migration's source (format version 3)
ENTRY_VALID = 1


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data, crc=0):
    """CRC32C (Castagnoli) as hc_crc32c computes it."""
    crc ^= 0xffffffff
    t = _TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


def decode_super(buf):
    """The fields of one superblock copy, or None if it is not valid."""
    if buf[:16] != MAGIC or struct.unpack_from('<I', buf, SB_SIZE - 4)[0] \
            != crc32c(buf[:SB_SIZE - 4]):
        return None
    (version, block_size, nslots, meta_offset, data_offset, dev_size,
     generation, cache_gen, state) = struct.unpack_from('<IIQQQQQQI', buf, 16)
    origin_size, = struct.unpack_from('<Q', buf, 80)
    origin_id = buf[120:120 + 256].split(b'\0', 1)[0].decode()
    return {'version': version, 'block_size': block_size, 'nslots': nslots,
            'meta_offset': meta_offset, 'data_offset': data_offset,
            'dev_size': dev_size, 'generation': generation,
            'cache_gen': cache_gen, 'state': state,
            'origin_size': origin_size, 'origin_id': origin_id}


def read_super(path):
    """(superblock in use, [copy 0, copy 1]) of an SSD tier file; the first
    is None when neither copy is valid."""
    with open(path, 'rb') as f:
        head = os.pread(f.fileno(), 2 * SB_SIZE, 0)
    copies = [decode_super(head[:SB_SIZE]),
              decode_super(head[SB_SIZE:2 * SB_SIZE])]
    valid = [c for c in copies if c]
    sb = max(valid, key=lambda c: c['generation']) if valid else None
    return sb, copies


def entry_offset(slot):
    return META_OFFSET + slot * ENTRY_SIZE


def decode_entry(e):
    """(blk, seq, data_crc, cache_gen, flags) or None if its CRC is wrong."""
    if struct.unpack_from('<I', e, 28)[0] != crc32c(e[:28]):
        return None
    blk, seq, dcrc, cgen, flags = struct.unpack_from('<QQIIH', e, 0)
    return blk, seq, dcrc, cgen, flags


def entries(path, sb=None, handed_off=False):
    """{blk: (slot, data_crc)} of the entries a recovery would load: none
    of a tier handed off to another host (a cold open empties it), unless
    handed_off (the entries on the device, as an arrival with the write
    sets of every tenure since would load them)."""
    if sb is None:
        sb, _ = read_super(path)
    if sb is None or (sb['state'] == STATE_HANDED_OFF and not handed_off):
        return {}
    with open(path, 'rb') as f:
        table = os.pread(f.fileno(), sb['nslots'] * ENTRY_SIZE, META_OFFSET)
    best = {}
    for slot in range(sb['nslots']):
        e = decode_entry(table[slot * ENTRY_SIZE:(slot + 1) * ENTRY_SIZE])
        if not e or not e[4] & ENTRY_VALID or \
                e[3] != sb['cache_gen'] & 0xffffffff:
            continue
        blk, seq, dcrc = e[0], e[1], e[2]
        if blk not in best or best[blk][0] < seq:
            best[blk] = (seq, slot, dcrc)
    return {blk: (slot, dcrc) for blk, (_, slot, dcrc) in best.items()}


def slot_offset(sb, slot):
    return sb['data_offset'] + slot * sb['block_size']


def read_slot(path, sb, slot):
    with open(path, 'rb') as f:
        return os.pread(f.fileno(), sb['block_size'], slot_offset(sb, slot))


def servable(path, sb=None):
    """{blk: data} of the entries a restart could serve: a loaded entry
    whose slot data matches its CRC (the CRC is computed only for slots
    the caller may care about: see wrong_entries)."""
    if sb is None:
        sb, _ = read_super(path)
    out = {}
    for blk, (slot, dcrc) in entries(path, sb).items():
        data = read_slot(path, sb, slot)
        if crc32c(data) == dcrc:
            out[blk] = data
    return out


def wrong_entries(ssd_path, origin_path):
    """Blocks a restart would serve from the SSD tier with data other than
    the origin's: [(blk, slot)].  The CRC is only computed for slots whose
    data differs from the origin (those are the dangerous ones)."""
    sb, _ = read_super(ssd_path)
    if sb is None:
        return []
    bs = sb['block_size']
    bad = []
    with open(ssd_path, 'rb') as s, open(origin_path, 'rb') as o:
        for blk, (slot, dcrc) in sorted(entries(ssd_path, sb).items()):
            data = os.pread(s.fileno(), bs, slot_offset(sb, slot))
            if data == os.pread(o.fileno(), bs, blk * bs):
                continue
            if crc32c(data) == dcrc:
                bad.append((blk, slot))
    return bad


def layout(dev_size, block_size):
    """(nslots, data_offset) hc_ssd_layout picks for a device, or None."""
    align = max(block_size, 4096)
    n = (dev_size - META_OFFSET) // (block_size + ENTRY_SIZE) \
        if dev_size > META_OFFSET else 0
    for n in range(n, 0, -1):
        meta = (n * ENTRY_SIZE + 4095) // 4096 * 4096
        data = (META_OFFSET + meta + align - 1) // align * align
        if data + n * block_size <= dev_size:
            return n, data
    return None


def flip(path, offset, length=1, xor=0x5a):
    """XOR length bytes at offset with xor (damage while stopped)."""
    with open(path, 'r+b') as f:
        buf = bytearray(os.pread(f.fileno(), length, offset))
        for i in range(length):
            buf[i] ^= xor
        os.pwrite(f.fileno(), bytes(buf), offset)


# Crafting hostile tiers: fields rewritten with their CRCs made right again,
# so that only the driver's own checks of the content stand in the way.
_SB_FIELDS = {'version': (16, '<I'), 'block_size': (20, '<I'),
              'nslots': (24, '<Q'), 'meta_offset': (32, '<Q'),
              'data_offset': (40, '<Q'), 'dev_size': (48, '<Q'),
              'generation': (56, '<Q'), 'cache_gen': (64, '<Q'),
              'state': (72, '<I'), 'origin_size': (80, '<Q'),
              'durable_seq': (88, '<Q')}


def patch_super(path, **fields):
    """Rewrite fields of the superblock copy in use, CRC recomputed."""
    sb, copies = read_super(path)
    copy = copies.index(sb)
    with open(path, 'r+b') as f:
        buf = bytearray(os.pread(f.fileno(), SB_SIZE, copy * SB_SIZE))
        for name, value in fields.items():
            off, fmt = _SB_FIELDS[name]
            struct.pack_into(fmt, buf, off, value)
        struct.pack_into('<I', buf, SB_SIZE - 4, crc32c(buf[:SB_SIZE - 4]))
        os.pwrite(f.fileno(), bytes(buf), copy * SB_SIZE)


def patch_entry(path, slot, blk=None, seq=None):
    """Rewrite a slot-table entry's block or sequence number, CRC
    recomputed (a valid entry with impossible content)."""
    with open(path, 'r+b') as f:
        e = bytearray(os.pread(f.fileno(), ENTRY_SIZE, entry_offset(slot)))
        if blk is not None:
            struct.pack_into('<Q', e, 0, blk)
        if seq is not None:
            struct.pack_into('<Q', e, 8, seq)
        struct.pack_into('<I', e, 28, crc32c(e[:28]))
        os.pwrite(f.fileno(), bytes(e), entry_offset(slot))
