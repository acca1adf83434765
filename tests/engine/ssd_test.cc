// Unit tests of the SSD tier's format and index (qemu-block-driver/hc-ssd.c).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "hc-ssd.h"

namespace {

constexpr uint32_t kBlock = 4096;

HcSsdSuper Formatted(uint64_t dev_size, uint32_t bs = kBlock) {
  HcSsdSuper sb{};
  sb.version = HC_SSD_VERSION;
  sb.block_size = bs;
  sb.cache_gen = 77;
  sb.state = HC_SSD_STATE_OPEN;
  sb.origin_size = 1 << 30;
  strcpy(sb.origin_id, "/san/disk0.img");
  char err[256] = "";
  EXPECT_EQ(hc_ssd_layout(&sb, dev_size, err, sizeof(err)), 0) << err;
  return sb;
}

struct SsdDeleter {
  void operator()(HcSsd* s) const { hc_ssd_free(s); }
};
using SsdPtr = std::unique_ptr<HcSsd, SsdDeleter>;

// Encode the whole slot table of a into a byte image, as on the device.
std::vector<uint8_t> Table(const HcSsd* a) {
  std::vector<uint8_t> t(hc_ssd_sectors(a) * HC_SSD_SECTOR);
  for (uint64_t i = 0; i < hc_ssd_sectors(a); i++) {
    hc_ssd_encode_sector(a, i, &t[i * HC_SSD_SECTOR]);
  }
  return t;
}

SsdPtr Load(const HcSsdSuper& sb, const std::vector<uint8_t>& t) {
  SsdPtr b(hc_ssd_new(&sb));
  for (uint64_t i = 0; i < hc_ssd_sectors(b.get()); i++) {
    hc_ssd_load_sector(b.get(), i, &t[i * HC_SSD_SECTOR]);
  }
  hc_ssd_load_done(b.get());
  return b;
}

uint64_t Put(HcSsd* s, uint64_t blk, uint32_t crc) {
  uint64_t victim;
  uint64_t slot = hc_ssd_alloc(s, &victim);
  EXPECT_NE(slot, HC_SSD_NONE);
  uint64_t old_sec;
  hc_ssd_commit(s, slot, blk, crc, &old_sec);
  return slot;
}

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(hc_crc32c(0, "123456789", 9), 0xe3069283u);
  std::vector<uint8_t> zeros(4096, 0);
  uint32_t whole = hc_crc32c(0, zeros.data(), 4096);
  uint32_t parts = hc_crc32c(hc_crc32c(0, zeros.data(), 1000),
                             zeros.data() + 1000, 3096);
  EXPECT_EQ(whole, parts);
}

TEST(Layout, FitsAndRefusesTinyDevices) {
  HcSsdSuper sb = Formatted(64ull << 20);
  EXPECT_GT(sb.nslots, 16000u);
  EXPECT_EQ(sb.data_offset % kBlock, 0u);
  EXPECT_GE(sb.data_offset, HC_SSD_META_OFFSET + sb.nslots * 32);
  EXPECT_LE(sb.data_offset + sb.nslots * kBlock, 64ull << 20);
  HcSsdSuper tiny{};
  tiny.block_size = kBlock;
  char err[256] = "";
  EXPECT_EQ(hc_ssd_layout(&tiny, 12000, err, sizeof(err)), -ENOSPC);
  EXPECT_NE(std::string(err).find("too small"), std::string::npos);
  HcSsdSuper big = Formatted(64ull << 20, 1 << 20);
  EXPECT_EQ(big.data_offset % (1 << 20), 0u);
}

TEST(Superblock, BlankCorruptAndNewestCopy) {
  std::vector<uint8_t> c0(HC_SSD_SB_SIZE, 0), c1(HC_SSD_SB_SIZE, 0);
  HcSsdSuper got{};
  char err[256] = "";
  EXPECT_EQ(hc_ssd_super_pick(c0.data(), c1.data(), &got, err, sizeof(err)),
            -ENOENT);
  c0[100] = 1;  // not blank, not ours
  EXPECT_EQ(hc_ssd_super_pick(c0.data(), c1.data(), &got, err, sizeof(err)),
            -EINVAL);
  EXPECT_NE(std::string(err).find("zero its first 8 KiB"), std::string::npos);

  HcSsdSuper sb = Formatted(64ull << 20);
  sb.generation = 4;
  hc_ssd_super_encode(&sb, c0.data());
  sb.generation = 5;
  sb.cache_gen = 78;
  hc_ssd_super_encode(&sb, c1.data());
  ASSERT_EQ(hc_ssd_super_pick(c0.data(), c1.data(), &got, err, sizeof(err)),
            0);
  EXPECT_EQ(got.generation, 5u);
  EXPECT_EQ(got.cache_gen, 78u);
  EXPECT_STREQ(got.origin_id, "/san/disk0.img");
  c1[30] ^= 0x40;  // torn newer copy: the older valid one is used
  ASSERT_EQ(hc_ssd_super_pick(c0.data(), c1.data(), &got, err, sizeof(err)),
            0);
  EXPECT_EQ(got.generation, 4u);
  sb.version = 9;
  hc_ssd_super_encode(&sb, c0.data());
  EXPECT_EQ(hc_ssd_super_pick(c0.data(), c1.data(), &got, err, sizeof(err)),
            -EINVAL);
  EXPECT_NE(std::string(err).find("version 9"), std::string::npos);
}

TEST(Recovery, EntriesSurviveAndTornOnesAreIgnored) {
  HcSsdSuper sb = Formatted(4ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  for (uint64_t b = 0; b < 300; b++) Put(a.get(), b * 3, uint32_t(b));
  auto t = Table(a.get());
  // tear one entry: its own CRC no longer matches
  uint64_t torn = hc_ssd_lookup(a.get(), 30, nullptr);
  t[torn * 32 + 3] ^= 1;
  SsdPtr b = Load(sb, t);
  EXPECT_EQ(hc_ssd_check(b.get()), nullptr);
  EXPECT_EQ(hc_ssd_recovered(b.get()), 299u);
  uint32_t crc = 0;
  EXPECT_NE(hc_ssd_lookup(b.get(), 33, &crc), HC_SSD_NONE);
  EXPECT_EQ(crc, 11u);
  EXPECT_EQ(hc_ssd_lookup(b.get(), 30, nullptr), HC_SSD_NONE);
  // a damaged entry is counted (it may have been dirty); empty ones are not
  EXPECT_EQ(hc_ssd_damaged(b.get()), 1u);
  EXPECT_EQ(hc_ssd_damaged(Load(sb, Table(a.get())).get()), 0u);
}

TEST(Recovery, AnotherCacheGenerationIsEmpty) {
  HcSsdSuper sb = Formatted(4ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  Put(a.get(), 1, 1);
  auto t = Table(a.get());
  sb.cache_gen++;
  SsdPtr b = Load(sb, t);
  EXPECT_EQ(hc_ssd_used(b.get()), 0u);
  EXPECT_EQ(hc_ssd_lookup(b.get(), 1, nullptr), HC_SSD_NONE);
}

TEST(Recovery, NewerEntryOfABlockWins) {
  HcSsdSuper sb = Formatted(4ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  uint64_t s1 = Put(a.get(), 9, 111);
  auto old_table = Table(a.get());
  uint64_t s2 = Put(a.get(), 9, 222);  // rewrite into another slot
  ASSERT_NE(s1, s2);
  auto t = Table(a.get());
  // crash image: the new entry's sector is on disk but the old entry too
  // (as if the old slot's sector had not been rewritten yet)
  memcpy(&t[(s1 / 128) * 4096 + (s1 % 128) * 32],
         &old_table[(s1 / 128) * 4096 + (s1 % 128) * 32], 32);
  SsdPtr b = Load(sb, t);
  uint32_t crc = 0;
  EXPECT_EQ(hc_ssd_lookup(b.get(), 9, &crc), s2);
  EXPECT_EQ(crc, 222u);
  EXPECT_EQ(hc_ssd_used(b.get()), 1u);
  EXPECT_EQ(hc_ssd_check(b.get()), nullptr);
}

TEST(Index, ClockEvictsUnreferencedAndRespectsPins) {
  HcSsdSuper sb = Formatted(HC_SSD_META_OFFSET + 4096 + 8 * kBlock + 4096);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  uint64_t n = hc_ssd_capacity(a.get());
  ASSERT_GE(n, 4u);
  for (uint64_t b = 0; b < n; b++) Put(a.get(), b, 0);
  hc_ssd_lookup(a.get(), 0, nullptr);     // referenced: second chance
  hc_ssd_pin(a.get(), hc_ssd_lookup(a.get(), 1, nullptr));
  uint64_t victim;
  uint64_t slot = hc_ssd_alloc(a.get(), &victim);
  ASSERT_NE(slot, HC_SSD_NONE);
  EXPECT_NE(victim, HC_SSD_NONE);
  EXPECT_NE(victim, 0u);  // referenced
  EXPECT_NE(victim, 1u);  // pinned
  EXPECT_EQ(hc_ssd_lookup(a.get(), victim, nullptr), HC_SSD_NONE);
  uint64_t old_sec;
  hc_ssd_commit(a.get(), slot, 1000, 0, &old_sec);
  EXPECT_EQ(old_sec, HC_SSD_NONE);
  EXPECT_NE(hc_ssd_lookup(a.get(), 1, nullptr), HC_SSD_NONE);  // pinned
  EXPECT_EQ(hc_ssd_used(a.get()), n);
  EXPECT_EQ(hc_ssd_check(a.get()), nullptr);
}

TEST(Index, InvalidateRangeReportsSectors) {
  HcSsdSuper sb = Formatted(16ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  for (uint64_t b = 0; b < 500; b++) Put(a.get(), b, 0);
  std::vector<uint64_t> secs;
  hc_ssd_invalidate_range(
      a.get(), 100, 400,
      [](void* o, uint64_t s) {
        static_cast<std::vector<uint64_t>*>(o)->push_back(s);
      },
      &secs);
  EXPECT_EQ(secs.size(), 300u);
  EXPECT_EQ(hc_ssd_used(a.get()), 200u);
  EXPECT_EQ(hc_ssd_lookup(a.get(), 250, nullptr), HC_SSD_NONE);
  EXPECT_NE(hc_ssd_lookup(a.get(), 450, nullptr), HC_SSD_NONE);
  uint64_t sec = hc_ssd_sector_of(hc_ssd_lookup(a.get(), 450, nullptr));
  uint64_t g = hc_ssd_sector_gen(a.get(), sec);
  EXPECT_GT(g, hc_ssd_sector_disk_gen(a.get(), sec));
  hc_ssd_sector_written(a.get(), sec, g);
  EXPECT_EQ(hc_ssd_sector_disk_gen(a.get(), sec), g);
  EXPECT_EQ(hc_ssd_check(a.get()), nullptr);
}

}  // namespace

// ---- write-back journal (format version 2) --------------------------------

namespace {

uint64_t Journal(HcSsd* s, uint64_t blk, uint32_t crc, uint64_t* kept) {
  uint64_t victim;
  uint64_t slot = hc_ssd_alloc(s, &victim);
  EXPECT_NE(slot, HC_SSD_NONE);
  hc_ssd_commit_dirty(s, slot, blk, hc_ssd_next_seq(s), crc, kept);
  return slot;
}

uint64_t SeqOf(const HcSsd* s, uint64_t slot) {
  uint64_t seq;
  hc_ssd_slot_blk(s, slot, &seq, nullptr);
  return seq;
}

// Mark every table sector as on the device (what a flush does).
void AllDurable(HcSsd* s) {
  for (uint64_t i = 0; i < hc_ssd_sectors(s); i++) {
    hc_ssd_sector_written(s, i, hc_ssd_sector_gen(s, i));
  }
}

}  // namespace

TEST(Journal, DirtyEntriesSurviveRecoveryAndOlderVersionsAreKept) {
  HcSsdSuper sb = Formatted(4ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  uint64_t kept;
  uint64_t s1 = Journal(a.get(), 7, 0x11, &kept);
  EXPECT_EQ(kept, HC_SSD_NONE);
  uint64_t s2 = Journal(a.get(), 7, 0x22, &kept);
  // the older version is out of the index but still on the device
  EXPECT_EQ(kept, s1);
  uint32_t crc = 0;
  EXPECT_EQ(hc_ssd_lookup(a.get(), 7, &crc), s2);
  EXPECT_EQ(crc, 0x22u);
  bool dirty = false;
  EXPECT_TRUE(hc_ssd_is_kept(a.get(), s1, &dirty));
  EXPECT_TRUE(dirty);
  EXPECT_TRUE(hc_ssd_is_dirty(a.get(), s1, SeqOf(a.get(), s1)));
  EXPECT_EQ(hc_ssd_dirty_blocks(a.get()), 1u);
  EXPECT_EQ(hc_ssd_kept_dirty(a.get()), 1u);
  EXPECT_EQ(hc_ssd_check(a.get()), nullptr);

  // Recovery: both entries are in the table, the newer wins, dirty; the
  // older dirty one is KEPT again (the destager writes it first, so the
  // origin goes through its flush epoch), in the journal in seq order.
  SsdPtr b = Load(sb, Table(a.get()));
  uint64_t slot = hc_ssd_lookup(b.get(), 7, &crc);
  EXPECT_EQ(slot, s2);
  EXPECT_EQ(crc, 0x22u);
  EXPECT_TRUE(hc_ssd_is_dirty(b.get(), slot, SeqOf(b.get(), slot)));
  EXPECT_EQ(hc_ssd_dirty_blocks(b.get()), 1u);
  EXPECT_EQ(hc_ssd_kept_dirty(b.get()), 1u);
  EXPECT_TRUE(hc_ssd_is_kept(b.get(), s1, &dirty));
  EXPECT_TRUE(dirty);
  EXPECT_TRUE(hc_ssd_is_dirty(b.get(), s1, SeqOf(a.get(), s1)));
  EXPECT_EQ(hc_ssd_next_dirty(b.get(), 0), std::min(s1, s2));
  EXPECT_EQ(hc_ssd_next_dirty(b.get(), std::min(s1, s2) + 1),
            std::max(s1, s2));
  EXPECT_EQ(hc_ssd_check(b.get()), nullptr);
  // once written back, it is released like a runtime KEPT entry
  hc_ssd_release_kept(b.get(), s1);
  EXPECT_EQ(hc_ssd_kept_dirty(b.get()), 0u);
  EXPECT_EQ(hc_ssd_check(b.get()), nullptr);

  // An older dirty version whose newest entry is clean (destaged, then the
  // clean copy demoted again) is on the origin: recovery drops it.
  {
    SsdPtr d(hc_ssd_new(&sb));
    hc_ssd_load_done(d.get());
    uint64_t k;
    uint64_t d1 = Journal(d.get(), 5, 0x55, &k);
    auto with_dirty = Table(d.get());
    ASSERT_NE(hc_ssd_mark_clean(d.get(), d1, SeqOf(d.get(), d1)),
              HC_SSD_NONE);
    uint64_t old_sec;
    uint64_t victim;
    uint64_t d2 = hc_ssd_alloc(d.get(), &victim);
    hc_ssd_commit(d.get(), d2, 5, 0x66, &old_sec);  // newer, clean
    auto t = Table(d.get());
    // crash image: d1's sector still says dirty
    memcpy(&t[(d1 / 128) * 4096 + (d1 % 128) * 32],
           &with_dirty[(d1 / 128) * 4096 + (d1 % 128) * 32], 32);
    SsdPtr e = Load(sb, t);
    EXPECT_EQ(hc_ssd_lookup(e.get(), 5, &crc), d2);
    EXPECT_EQ(hc_ssd_kept_dirty(e.get()), 0u);
    EXPECT_EQ(hc_ssd_dirty_blocks(e.get()), 0u);
    EXPECT_EQ(hc_ssd_next_dirty(e.get(), 0), HC_SSD_NONE);
    EXPECT_EQ(hc_ssd_check(e.get()), nullptr);
  }

  // Releasing the older version frees its slot once unpinned.
  hc_ssd_release_kept(a.get(), s1);
  EXPECT_EQ(hc_ssd_kept_dirty(a.get()), 0u);
  EXPECT_FALSE(hc_ssd_is_kept(a.get(), s1, nullptr));
  SsdPtr c = Load(sb, Table(a.get()));
  EXPECT_EQ(hc_ssd_used(c.get()), 1u);
}

TEST(Journal, DirtyAndUnflushedCleanSlotsAreNoClockVictims) {
  HcSsdSuper sb = Formatted(HC_SSD_META_OFFSET + 4096 + 8 * kBlock + 4096);
  const uint64_t n = sb.nslots;
  ASSERT_GE(n, 5u);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  uint64_t kept, victim;
  std::vector<uint64_t> slots;
  for (uint64_t b = 0; b < n; b++) {
    slots.push_back(Journal(a.get(), b, uint32_t(b), &kept));
  }
  // every slot dirty: nothing can be taken
  EXPECT_EQ(hc_ssd_alloc(a.get(), &victim), HC_SSD_NONE);
  // a clean mark that is not on the device yet does not free a slot ...
  uint64_t sec = hc_ssd_mark_clean(a.get(), slots[3], SeqOf(a.get(), slots[3]));
  EXPECT_NE(sec, HC_SSD_NONE);
  EXPECT_EQ(hc_ssd_dirty_blocks(a.get()), n - 1);
  EXPECT_EQ(hc_ssd_alloc(a.get(), &victim), HC_SSD_NONE);
  // ... once it is, the clean slot is a CLOCK victim like any other
  AllDurable(a.get());
  uint64_t s = hc_ssd_alloc(a.get(), &victim);
  EXPECT_EQ(s, slots[3]);
  EXPECT_EQ(victim, 3u);
  hc_ssd_release(a.get(), s);
  // a stale mark (the entry changed meanwhile) changes nothing
  EXPECT_EQ(hc_ssd_mark_clean(a.get(), slots[4], 12345), HC_SSD_NONE);
  EXPECT_EQ(hc_ssd_check(a.get()), nullptr);
}

TEST(Journal, DirtyInRangeAndEntryDecode) {
  HcSsdSuper sb = Formatted(4ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  uint64_t kept;
  Journal(a.get(), 100, 0xabc, &kept);
  Put(a.get(), 50, 0xdef);              // clean
  EXPECT_TRUE(hc_ssd_dirty_in_range(a.get(), 90, 101));
  EXPECT_FALSE(hc_ssd_dirty_in_range(a.get(), 0, 100));
  EXPECT_FALSE(hc_ssd_dirty_in_range(a.get(), 101, 1ull << 40));
  EXPECT_TRUE(hc_ssd_dirty_in_range(a.get(), 0, 1ull << 40));

  std::vector<uint8_t> t = Table(a.get());
  int dirty_entries = 0, entries = 0;
  for (size_t off = 0; off < t.size(); off += HC_SSD_ENTRY_SIZE) {
    uint64_t blk, seq;
    uint32_t crc;
    bool dirty;
    if (hc_ssd_entry_decode(&t[off], sb.cache_gen, &blk, &seq, &crc,
                            &dirty)) {
      entries++;
      dirty_entries += dirty;
      EXPECT_EQ(dirty, blk == 100);
    }
    // another cache generation: no entry
    EXPECT_FALSE(hc_ssd_entry_decode(&t[off], sb.cache_gen + 1, &blk, &seq,
                                     &crc, &dirty));
  }
  EXPECT_EQ(entries, 2);
  EXPECT_EQ(dirty_entries, 1);
}

TEST(Journal, SequenceNumbersStayAboveEntriesSeen) {
  HcSsdSuper sb = Formatted(4ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  hc_ssd_seq_at_least(a.get(), 1000);
  EXPECT_EQ(hc_ssd_next_seq(a.get()), 1001u);
  hc_ssd_seq_at_least(a.get(), 10);
  EXPECT_EQ(hc_ssd_next_seq(a.get()), 1002u);
}

// ---- what an open does with the tier it finds (hc_ssd_plan_*) -------------

// A node that expects the tier Formatted() describes on a 4 MiB device.
HcSsdOpen Expect(const HcSsdSuper& sb) {
  HcSsdOpen o{};
  o.block_size = sb.block_size;
  o.dev_size = sb.dev_size;
  o.origin_size = sb.origin_size;
  o.origin_id = sb.origin_id;
  o.node_name = "ssd0";
  o.ssd_create = true;
  return o;
}

struct Planned {
  HcSsdPlan plan;
  const char* why;
  std::string err;
};

Planned PlanOpen(int pick, const HcSsdSuper& sb, const HcSsdOpen& o) {
  Planned p{};
  char err[512] = "";
  p.plan = hc_ssd_plan_open(pick, &sb, &o, &p.why, err, sizeof(err));
  p.err = err;
  return p;
}

Planned PlanLoaded(const HcSsdSuper& sb, const char* why, uint64_t dirty,
                   uint64_t damaged, const HcSsdOpen& o) {
  Planned p{};
  char err[512] = "";
  p.plan = hc_ssd_plan_loaded(&sb, why, dirty, damaged, &o, err, sizeof(err));
  p.why = why;
  p.err = err;
  return p;
}

TEST(Plan, BlankIsFormattedUnlessTheTierMustExist) {
  HcSsdSuper sb = Formatted(4ull << 20);
  HcSsdOpen o = Expect(sb);
  EXPECT_EQ(PlanOpen(-ENOENT, sb, o).plan, HC_SSD_PLAN_FORMAT);
  o.ssd_create = false;
  Planned p = PlanOpen(-ENOENT, sb, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_REFUSE);
  EXPECT_NE(p.err.find("'ssd0' is blank, but ssd-create=off"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("nothing was changed"), std::string::npos) << p.err;
  // a migration destination starts from the source's data: any tier does
  o.activation = true;
  EXPECT_EQ(PlanOpen(-ENOENT, sb, o).plan, HC_SSD_PLAN_FORMAT);
}

TEST(Plan, OwnTierIsLoadedAndKept) {
  HcSsdSuper sb = Formatted(4ull << 20);
  HcSsdOpen o = Expect(sb);
  Planned p = PlanOpen(0, sb, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_LOAD);
  EXPECT_EQ(p.why, nullptr);
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_KEEP);
  EXPECT_EQ(PlanLoaded(sb, nullptr, 5, 0, o).plan, HC_SSD_PLAN_KEEP);
  // pass-through drops clean content, but never a journal
  o.drop = true;
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
  p = PlanLoaded(sb, nullptr, 5, 0, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_REFUSE);
  EXPECT_NE(p.err.find("holds 5 blocks"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("pass-through"), std::string::npos) << p.err;
}

TEST(Plan, JournalIsNeverDroppedByAMismatchActivationOrReadOnlyNode) {
  HcSsdSuper sb = Formatted(4ull << 20);
  HcSsdOpen o = Expect(sb);
  o.origin_size = sb.origin_size * 2;
  Planned p = PlanOpen(0, sb, o);
  ASSERT_EQ(p.plan, HC_SSD_PLAN_LOAD);
  ASSERT_NE(p.why, nullptr);
  EXPECT_NE(std::string(p.why).find("size changed"), std::string::npos);
  EXPECT_EQ(PlanLoaded(sb, p.why, 0, 0, o).plan, HC_SSD_PLAN_FORMAT);
  Planned q = PlanLoaded(sb, p.why, 3, 0, o);
  EXPECT_EQ(q.plan, HC_SSD_PLAN_REFUSE);
  EXPECT_NE(q.err.find("size changed"), std::string::npos) << q.err;

  o = Expect(sb);
  o.activation = true;
  EXPECT_EQ(PlanLoaded(sb, nullptr, 3, 0, o).plan, HC_SSD_PLAN_REFUSE);
  // arriving without a chain of write sets: the origin changed elsewhere
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
  o = Expect(sb);
  o.read_only = true;
  EXPECT_EQ(PlanLoaded(sb, nullptr, 3, 0, o).plan, HC_SSD_PLAN_REFUSE);
}

TEST(Plan, AnotherOriginIsReformattedOrRefusedWithSsdCreateOff) {
  HcSsdSuper sb = Formatted(4ull << 20);
  HcSsdOpen o = Expect(sb);
  o.origin_id = "/san/other.img";
  Planned p = PlanOpen(0, sb, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_LOAD);
  EXPECT_NE(std::string(p.why).find("another origin"), std::string::npos);
  EXPECT_EQ(PlanLoaded(sb, p.why, 0, 0, o).plan, HC_SSD_PLAN_FORMAT);
  o.ssd_create = false;
  p = PlanOpen(0, sb, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_REFUSE);
  EXPECT_NE(p.err.find("another origin ('/san/disk0.img')"), std::string::npos) << p.err;
  // another block size with ssd-create=off: same origin, so reformatting
  // its clean content is fine
  o = Expect(sb);
  o.ssd_create = false;
  o.block_size = 8192;
  p = PlanOpen(0, sb, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_LOAD);
  EXPECT_NE(std::string(p.why).find("block-size"), std::string::npos);
}

TEST(Plan, ShrunkDeviceIsRefusedOnlyWhenItMayHoldAJournal) {
  HcSsdSuper sb = Formatted(4ull << 20);
  HcSsdOpen o = Expect(sb);
  o.dev_size = hc_ssd_tier_end(&sb) - 1;
  sb.state = HC_SSD_STATE_CLEAN;
  EXPECT_EQ(PlanOpen(0, sb, o).plan, HC_SSD_PLAN_FORMAT);
  sb.state = HC_SSD_STATE_OPEN;   // a crash, but it never journaled
  EXPECT_EQ(PlanOpen(0, sb, o).plan, HC_SSD_PLAN_FORMAT);
  sb.durable_seq = 12;            // a crash of a tier that journaled
  Planned p = PlanOpen(0, sb, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_REFUSE);
  EXPECT_NE(p.err.find("smaller than the tier"), std::string::npos) << p.err;
}

TEST(Plan, DamagedEntriesRefuseATierThatMayHoldAJournal) {
  HcSsdSuper sb = Formatted(4ull << 20);
  HcSsdOpen o = Expect(sb);
  sb.state = HC_SSD_STATE_CLEAN;
  sb.durable_seq = 40;
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 2, o).plan, HC_SSD_PLAN_KEEP);
  EXPECT_EQ(PlanLoaded(sb, nullptr, 1, 2, o).plan, HC_SSD_PLAN_REFUSE);
  sb.state = HC_SSD_STATE_OPEN;
  Planned p = PlanLoaded(sb, nullptr, 0, 2, o);
  EXPECT_EQ(p.plan, HC_SSD_PLAN_REFUSE);
  EXPECT_NE(p.err.find("2 entries"), std::string::npos) << p.err;
  sb.durable_seq = 0;             // never journaled: clean copies, misses
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 2, o).plan, HC_SSD_PLAN_KEEP);
}

// ---- hostile superblocks and entries ----------------------------------------

int Pick(const HcSsdSuper& crafted) {
  std::vector<uint8_t> a(HC_SSD_SB_SIZE), b(HC_SSD_SB_SIZE, 0);
  hc_ssd_super_encode(&crafted, a.data());
  HcSsdSuper out;
  char err[256];
  return hc_ssd_super_pick(a.data(), b.data(), &out, err, sizeof(err));
}

TEST(Hostile, SuperblockGeometryMustBeExactlyTheLayouts) {
  const HcSsdSuper good = Formatted(4ull << 20);
  EXPECT_EQ(Pick(good), 0);
  HcSsdSuper sb = good;
  sb.data_offset = (1ull << 63) + 8192;
  EXPECT_EQ(Pick(sb), -EINVAL);
  sb = good;
  sb.data_offset += 4096;
  EXPECT_EQ(Pick(sb), -EINVAL);
  sb = good;
  sb.data_offset -= 4096;
  EXPECT_EQ(Pick(sb), -EINVAL);
  sb = good;
  sb.block_size = 4u << 20;
  EXPECT_EQ(Pick(sb), -EINVAL);
  sb = good;
  sb.block_size = 3000;
  EXPECT_EQ(Pick(sb), -EINVAL);
  sb = good;
  sb.nslots = 1ull << 40;
  EXPECT_EQ(Pick(sb), -EINVAL);
  sb = good;
  sb.state = 9;
  EXPECT_EQ(Pick(sb), -EINVAL);
  sb = good;
  sb.meta_offset = 0;
  EXPECT_EQ(Pick(sb), -EINVAL);
}

TEST(Hostile, EntriesPastTheOriginOrWithHugeSequencesAreDamaged) {
  HcSsdSuper sb = Formatted(4ull << 20);
  sb.origin_size = 10 * kBlock + 100;   // 11 blocks, the last one partial
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  uint64_t kept;
  for (uint64_t blk : {0ull, 10ull, 11ull, 1ull << 60}) {
    uint64_t victim;
    uint64_t slot = hc_ssd_alloc(a.get(), &victim);
    hc_ssd_commit_dirty(a.get(), slot, blk, hc_ssd_next_seq(a.get()), 1, &kept);
  }
  uint64_t victim;
  uint64_t slot = hc_ssd_alloc(a.get(), &victim);
  hc_ssd_seq_at_least(a.get(), (1ull << 62) + 5);
  hc_ssd_commit_dirty(a.get(), slot, 3, hc_ssd_next_seq(a.get()), 1, &kept);

  std::vector<uint8_t> t = Table(a.get());
  SsdPtr b = Load(sb, t);
  EXPECT_EQ(hc_ssd_damaged(b.get()), 3u);   // blocks 11 and 2^60, the seq
  EXPECT_EQ(hc_ssd_dirty_blocks(b.get()), 2u);
  EXPECT_NE(hc_ssd_lookup(b.get(), 10, nullptr), HC_SSD_NONE);
  EXPECT_EQ(hc_ssd_lookup(b.get(), 11, nullptr), HC_SSD_NONE);
  EXPECT_EQ(hc_ssd_lookup(b.get(), 3, nullptr), HC_SSD_NONE);
  EXPECT_EQ(hc_ssd_check(b.get()), nullptr);
  EXPECT_LT(hc_ssd_next_seq(b.get()), 1ull << 62);
}

TEST(Index, HotBlocksReferencedFirst) {
  HcSsdSuper sb = Formatted(4ull << 20);
  SsdPtr a(hc_ssd_new(&sb));
  hc_ssd_load_done(a.get());
  for (uint64_t b = 0; b < 6; b++) Put(a.get(), b, 1);
  hc_ssd_lookup(a.get(), 4, nullptr);  // read since: referenced
  hc_ssd_lookup(a.get(), 1, nullptr);
  std::vector<uint64_t> out(16);
  EXPECT_EQ(hc_ssd_hot_blocks(a.get(), out.data(), out.size()), 6u);
  ASSERT_EQ(hc_ssd_hot_blocks(a.get(), out.data(), 2), 2u);
  std::set<uint64_t> first(out.begin(), out.begin() + 2);
  EXPECT_EQ(first, (std::set<uint64_t>{1, 4}));
}

// ---- a tier across live migrations (version 3: lineage and tenure) ----------

TEST(Plan, HandedOffTierIsKeptOnlyWithAnUnbrokenChain) {
  HcSsdSuper sb = Formatted(4ull << 20);
  sb.state = HC_SSD_STATE_HANDED_OFF;
  sb.lineage = 0xabcdef;
  sb.tenure = 3;  // the VM left this host in its 3rd tenure
  HcSsdOpen o = Expect(sb);
  // a cold open (the VM ran elsewhere since; nobody says what it wrote)
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
  // arriving back with write sets of tenures 4..6 of the same lineage
  o.activation = true;
  o.lineage = 0xabcdef;
  o.chain_from = 4;
  o.chain_to = 6;
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_KEEP);
  o.chain_from = 2;  // older ones too: fine
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_KEEP);
  o.chain_from = 5;  // tenure 4's writes unknown: a gap
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
  o.chain_from = 4;
  o.lineage = 0x1234;  // another lineage (a cold start since)
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
  o.lineage = 0xabcdef;
  o.chain_to = 2;  // a stream older than the tier
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
  o.chain_to = 6;
  o.drop = true;  // pass-through drops it anyway
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
  o.drop = false;
  sb.state = HC_SSD_STATE_CLEAN;  // closed here, not handed off
  EXPECT_EQ(PlanLoaded(sb, nullptr, 0, 0, o).plan, HC_SSD_PLAN_EMPTY);
}

TEST(Superblock, LineageAndTenureRoundTripAndHandOffNeedsVersion3) {
  HcSsdSuper sb = Formatted(4ull << 20);
  sb.state = HC_SSD_STATE_HANDED_OFF;
  sb.lineage = 0x0123456789abcdefull;
  sb.tenure = 42;
  std::vector<uint8_t> a(HC_SSD_SB_SIZE), zero(HC_SSD_SB_SIZE, 0);
  hc_ssd_super_encode(&sb, a.data());
  HcSsdSuper out;
  char err[256];
  ASSERT_EQ(hc_ssd_super_pick(a.data(), zero.data(), &out, err, sizeof(err)), 0) << err;
  EXPECT_EQ(out.lineage, sb.lineage);
  EXPECT_EQ(out.tenure, 42u);
  EXPECT_EQ(out.state, (uint32_t)HC_SSD_STATE_HANDED_OFF);
  sb.version = 2;  // a version-2 tier cannot have been handed off
  hc_ssd_super_encode(&sb, a.data());
  EXPECT_EQ(hc_ssd_super_pick(a.data(), zero.data(), &out, err, sizeof(err)), -EINVAL);
  sb.version = 4;  // a newer format: refused with a message
  hc_ssd_super_encode(&sb, a.data());
  EXPECT_EQ(hc_ssd_super_pick(a.data(), zero.data(), &out, err, sizeof(err)), -EINVAL);
  EXPECT_NE(std::string(err).find("version 4"), std::string::npos) << err;
}
