// Unit tests of the write-back journal's order and batch rules
// (qemu-block-driver/hc-journal.c), over a real SSD index (hc-ssd.c).

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "hc-journal.h"
#include "hc-ssd.h"

namespace {

constexpr uint32_t kBlock = 4096;

struct SsdDeleter {
  void operator()(HcSsd* s) const { hc_ssd_free(s); }
};
struct JournalDeleter {
  void operator()(HcJournal* j) const { hc_journal_free(j); }
};
using SsdPtr = std::unique_ptr<HcSsd, SsdDeleter>;
using JournalPtr = std::unique_ptr<HcJournal, JournalDeleter>;

HcSsdSuper Formatted() {
  HcSsdSuper sb{};
  sb.version = HC_SSD_VERSION;
  sb.block_size = kBlock;
  sb.cache_gen = 7;
  sb.state = HC_SSD_STATE_OPEN;
  sb.origin_size = 1 << 30;
  strcpy(sb.origin_id, "disk");
  char err[128];
  EXPECT_EQ(hc_ssd_layout(&sb, 4ull << 20, err, sizeof(err)), 0) << err;
  return sb;
}

struct Fixture {
  HcSsdSuper sb = Formatted();
  SsdPtr ssd{hc_ssd_new(&sb)};
  JournalPtr j{hc_journal_new()};
  Fixture() { hc_ssd_load_done(ssd.get()); }

  // Journal a new version of blk at time ns, as a journal batch does.
  uint64_t Journal(uint64_t blk, int64_t ns = 0) {
    uint64_t victim, kept;
    uint64_t slot = hc_ssd_alloc(ssd.get(), &victim);
    EXPECT_NE(slot, HC_SSD_NONE);
    uint64_t seq = hc_ssd_next_seq(ssd.get());
    hc_ssd_commit_dirty(ssd.get(), slot, blk, seq, 1, &kept);
    EXPECT_EQ(hc_journal_append(j.get(), slot, seq, ns), 0);
    return slot;
  }
  std::vector<uint64_t> PickBlocks(size_t limit, size_t* next) {
    std::vector<HcJEntry> out(limit + 1);
    size_t n = hc_journal_pick(j.get(), ssd.get(), out.data(), limit, next);
    std::vector<uint64_t> blks;
    for (size_t i = 0; i < n; i++) {
      blks.push_back(hc_ssd_slot_blk(ssd.get(), out[i].slot, nullptr, nullptr));
      hc_ssd_unpin(ssd.get(), out[i].slot);
    }
    return blks;
  }
};

TEST(Journal, PicksOldestFirstAndNeverTwoVersionsOfABlock) {
  Fixture f;
  f.Journal(10);
  f.Journal(11);
  f.Journal(10);  // a second version of 10: the older is KEPT, still dirty
  f.Journal(12);
  EXPECT_EQ(hc_journal_check(f.j.get(), f.ssd.get()), nullptr);
  size_t next;
  // 10 (old), 11, then the second 10 ends the batch
  EXPECT_EQ(f.PickBlocks(16, &next), (std::vector<uint64_t>{10, 11}));
  EXPECT_EQ(next, 2u);
  EXPECT_EQ(f.PickBlocks(1, &next), (std::vector<uint64_t>{10}));
  EXPECT_EQ(next, 1u);
}

TEST(Journal, ABatchInFlightIsNeverPassed) {
  Fixture f;
  f.Journal(1);
  hc_journal_batch_begin(f.j.get());
  f.Journal(2);  // its data may not be on the SSD yet
  size_t next;
  EXPECT_EQ(f.PickBlocks(16, &next), (std::vector<uint64_t>{1}));
  hc_journal_batch_end(f.j.get());
  EXPECT_EQ(f.PickBlocks(16, &next), (std::vector<uint64_t>{1, 2}));
}

TEST(Journal, CleanEntriesAreSkippedAndHeadMovesPastThem) {
  Fixture f;
  uint64_t a = f.Journal(1);
  f.Journal(2);
  uint64_t seq;
  hc_ssd_slot_blk(f.ssd.get(), a, &seq, nullptr);
  hc_ssd_mark_clean(f.ssd.get(), a, seq);  // 1 reached the origin already
  size_t next;
  EXPECT_EQ(f.PickBlocks(16, &next), (std::vector<uint64_t>{2}));
  hc_journal_advance(f.j.get(), next);
  EXPECT_EQ(hc_journal_head(f.j.get()), 2u);
  EXPECT_TRUE(f.PickBlocks(16, &next).empty());
}

TEST(Journal, PickedSlotsArePinned) {
  Fixture f;
  uint64_t s = f.Journal(5);
  std::vector<HcJEntry> out(4);
  size_t next;
  ASSERT_EQ(hc_journal_pick(f.j.get(), f.ssd.get(), out.data(), 4, &next), 1u);
  EXPECT_EQ(out[0].slot, s);
  // a pinned slot is never reused, even when everything else is taken
  uint64_t victim;
  for (uint64_t i = 0; i + 1 < hc_ssd_capacity(f.ssd.get()); i++) {
    uint64_t t = hc_ssd_alloc(f.ssd.get(), &victim);
    ASSERT_NE(t, s);
    if (t == HC_SSD_NONE) break;
  }
  hc_ssd_unpin(f.ssd.get(), s);
}

TEST(Journal, DueRules) {
  Fixture f;
  int64_t oldest;
  const uint64_t age = 1000, cap = hc_ssd_capacity(f.ssd.get());
  // nothing queued (kept older versions only): due
  EXPECT_TRUE(hc_journal_due(f.j.get(), 5, age, 1, cap, &oldest));
  f.Journal(1, 100);
  EXPECT_FALSE(hc_journal_due(f.j.get(), 500, age, 1, cap, &oldest));
  EXPECT_EQ(oldest, 100);
  EXPECT_TRUE(hc_journal_due(f.j.get(), 1100, age, 1, cap, &oldest));
  // a quarter of the tier dirty: due whatever the age
  EXPECT_TRUE(hc_journal_due(f.j.get(), 101, age, cap / 4 + 1, cap, &oldest));
}

TEST(Journal, ARecoveredJournalIsInSequenceOrderAndDueAtOnce) {
  Fixture f;
  f.Journal(3);
  f.Journal(4);
  f.Journal(3);
  // the same tier after a crash: its table re-read into a new index
  std::vector<uint8_t> t(hc_ssd_sectors(f.ssd.get()) * HC_SSD_SECTOR);
  for (uint64_t i = 0; i < hc_ssd_sectors(f.ssd.get()); i++) {
    hc_ssd_encode_sector(f.ssd.get(), i, &t[i * HC_SSD_SECTOR]);
  }
  SsdPtr b(hc_ssd_new(&f.sb));
  for (uint64_t i = 0; i < hc_ssd_sectors(b.get()); i++) {
    hc_ssd_load_sector(b.get(), i, &t[i * HC_SSD_SECTOR]);
  }
  hc_ssd_load_done(b.get());
  JournalPtr j(hc_journal_new());
  ASSERT_EQ(hc_journal_rebuild(j.get(), b.get()), 0);
  EXPECT_EQ(hc_journal_len(j.get()), 3u);
  EXPECT_EQ(hc_journal_check(j.get(), b.get()), nullptr);
  int64_t oldest;
  // however recently the host booted (a clock near zero) and whatever the age
  EXPECT_TRUE(hc_journal_due(j.get(), 1, UINT64_MAX / 2, 1, 1 << 20, &oldest));
  std::vector<HcJEntry> out(8);
  size_t next;
  size_t n = hc_journal_pick(j.get(), b.get(), out.data(), 8, &next);
  ASSERT_EQ(n, 2u);  // 3 (old), 4; the newer 3 waits for the next batch
  EXPECT_LT(out[0].seq, out[1].seq);
  for (size_t i = 0; i < n; i++) hc_ssd_unpin(b.get(), out[i].slot);
}

TEST(Journal, CheckFindsADirtySlotMissingFromTheJournal) {
  Fixture f;
  f.Journal(1);
  uint64_t victim, kept;
  uint64_t slot = hc_ssd_alloc(f.ssd.get(), &victim);
  hc_ssd_commit_dirty(f.ssd.get(), slot, 2, hc_ssd_next_seq(f.ssd.get()), 1, &kept);
  // (not appended: a write-back would never find it)
  EXPECT_NE(hc_journal_check(f.j.get(), f.ssd.get()), nullptr);
}

TEST(Journal, AdvanceCompactsALongDoneHead) {
  Fixture f;
  for (uint64_t b = 0; b < 40; b++) {
    uint64_t s = f.Journal(b);
    uint64_t seq;
    hc_ssd_slot_blk(f.ssd.get(), s, &seq, nullptr);
    hc_ssd_mark_clean(f.ssd.get(), s, seq);
  }
  for (int i = 0; i < 2000; i++) {
    ASSERT_EQ(hc_journal_append(f.j.get(), 0, 1000 + i, 0), 0);
  }
  hc_journal_advance(f.j.get(), 1500);
  EXPECT_EQ(hc_journal_head(f.j.get()), 0u);  // compacted
  EXPECT_EQ(hc_journal_len(f.j.get()), 540u);
}

}  // namespace
