// Property test of the SSD tier's index (qemu-block-driver/hc-ssd.c)
// against a model, like engine_property.cc for the RAM tier.
//
// Random programs do what the driver does with an index: demote clean
// blocks (alloc + commit, CLOCK victims included), journal dirty versions
// (commit_dirty; an older version is KEPT until released or written back),
// write journaled blocks back (mark_clean, release of kept versions), drop
// blocks (invalidate, invalidate_range), look blocks up, and write
// slot-table sectors to a model device.  After every step:
//   - hc_ssd_check() holds;
//   - a lookup of a block finds exactly its newest committed version, and
//     nothing for a block dropped since;
//   - every block dropped in memory whose sector is not durable yet is
//     named by hc_ssd_pending_sectors() (so the driver persists it before
//     the block changes on the origin);
// and at the end, once every changed sector is on the model device, an
// index loaded from the device holds the same blocks, versions and dirty
// states.

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "hc-ssd.h"

namespace {

constexpr uint32_t kBlock = 4096;
constexpr uint64_t kBlocks = 40;  // origin blocks (more than the tier's slots)

struct SsdDeleter {
  void operator()(HcSsd* s) const { hc_ssd_free(s); }
};
using SsdPtr = std::unique_ptr<HcSsd, SsdDeleter>;

HcSsdSuper Formatted() {
  HcSsdSuper sb{};
  sb.version = HC_SSD_VERSION;
  sb.block_size = kBlock;
  sb.cache_gen = 5;
  sb.state = HC_SSD_STATE_OPEN;
  sb.origin_size = kBlocks * kBlock;
  strcpy(sb.origin_id, "prop");
  char err[128];
  // a small device: 24 slots, so CLOCK evicts
  EXPECT_EQ(hc_ssd_layout(&sb, 8192 + 4096 + 24 * kBlock, err, sizeof(err)), 0) << err;
  return sb;
}

struct Version {
  uint64_t seq;   // 0: clean (no journal sequence)
  uint32_t crc;
  bool dirty;
};

struct World {
  HcSsdSuper sb = Formatted();
  SsdPtr ssd{hc_ssd_new(&sb)};
  std::map<uint64_t, Version> newest;       // block -> newest committed version
  std::map<uint64_t, uint64_t> kept;        // KEPT older dirty slot -> block
  // block -> (sector, its generation once the drop is in it): dropped in
  // memory, not yet durable on the device
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> dropped;
  std::vector<std::vector<uint8_t>> disk;   // the device's table sectors
  uint32_t next_crc = 1;

  World() {
    hc_ssd_load_done(ssd.get());
    disk.assign(hc_ssd_sectors(ssd.get()), std::vector<uint8_t>(HC_SSD_SECTOR, 0));
  }

  void Dropped(uint64_t blk, uint64_t sec) {
    RC_ASSERT(hc_ssd_pending_add(ssd.get(), blk, sec) == 0);
    dropped[blk] = {sec, hc_ssd_sector_gen(ssd.get(), sec)};
  }

  void Demote(uint64_t blk) {
    if (newest.count(blk)) return;  // the driver demotes only uncached blocks
    uint64_t victim;
    uint64_t slot = hc_ssd_alloc(ssd.get(), &victim);
    if (slot == HC_SSD_NONE) return;
    if (victim != HC_SSD_NONE) {
      newest.erase(victim);
      Dropped(victim, hc_ssd_sector_of(slot));
    }
    uint64_t old_sec;
    uint32_t crc = next_crc++;
    hc_ssd_commit(ssd.get(), slot, blk, crc, &old_sec);
    newest[blk] = {0, crc, false};
    dropped.erase(blk);  // live again
  }

  void Journal(uint64_t blk) {
    uint64_t victim, kept_slot;
    uint64_t slot = hc_ssd_alloc(ssd.get(), &victim);
    if (slot == HC_SSD_NONE) return;
    if (victim != HC_SSD_NONE) {
      newest.erase(victim);
      Dropped(victim, hc_ssd_sector_of(slot));
    }
    uint64_t seq = hc_ssd_next_seq(ssd.get());
    uint32_t crc = next_crc++;
    hc_ssd_commit_dirty(ssd.get(), slot, blk, seq, crc, &kept_slot);
    if (kept_slot != HC_SSD_NONE) {
      bool d = false;
      if (hc_ssd_is_kept(ssd.get(), kept_slot, &d) && d) {
        kept[kept_slot] = blk;
      } else if (hc_ssd_is_kept(ssd.get(), kept_slot, nullptr)) {
        // a clean older copy: released once the new entry is durable
        hc_ssd_release_kept(ssd.get(), kept_slot);
      }
    }
    newest[blk] = {seq, crc, true};
    dropped.erase(blk);  // live again
  }

  void WriteBack(uint64_t blk) {
    // the oldest version first: a KEPT dirty one, if any, goes before
    for (auto it = kept.begin(); it != kept.end(); ++it) {
      if (it->second == blk) {
        hc_ssd_release_kept(ssd.get(), it->first);
        kept.erase(it);
        return;
      }
    }
    auto it = newest.find(blk);
    if (it == newest.end() || !it->second.dirty) return;
    uint64_t slot = hc_ssd_lookup(ssd.get(), blk, nullptr);
    RC_ASSERT(slot != HC_SSD_NONE);
    hc_ssd_mark_clean(ssd.get(), slot, it->second.seq);
    it->second.dirty = false;
  }

  void Invalidate(uint64_t blk) {
    auto it = newest.find(blk);
    if (it == newest.end() || it->second.dirty) return;  // never a journal entry
    uint64_t sec = hc_ssd_invalidate(ssd.get(), blk);
    RC_ASSERT(sec != HC_SSD_NONE);
    newest.erase(it);
    Dropped(blk, sec);
  }

  struct InFlight {
    uint64_t sec, gen;
    std::vector<uint8_t> buf;
  };
  std::vector<InFlight> writes;  // sector writes encoded, not yet done

  // A sector write begins (encoded now) and ends later, other steps between
  // (as the driver's writes do): a write of an older generation must not
  // make a later drop durable.
  bool Busy(uint64_t sec) const {
    for (const auto& w : writes) {
      if (w.sec == sec) return true;
    }
    return false;
  }
  // (one write per sector at a time, as the driver's sector-busy bits do)
  void BeginWrite(uint64_t sec) {
    if (Busy(sec)) return;
    InFlight w{sec, hc_ssd_sector_gen(ssd.get(), sec),
               std::vector<uint8_t>(HC_SSD_SECTOR)};
    hc_ssd_encode_sector(ssd.get(), sec, w.buf.data());
    writes.push_back(std::move(w));
  }
  void EndWrite(size_t i) {
    if (writes.empty()) return;
    i %= writes.size();
    InFlight w = std::move(writes[i]);
    writes.erase(writes.begin() + i);
    disk[w.sec] = w.buf;
    Written(w.sec, w.gen);
  }
  void WriteSector(uint64_t sec) {
    if (Busy(sec)) return;
    uint64_t gen = hc_ssd_sector_gen(ssd.get(), sec);
    hc_ssd_encode_sector(ssd.get(), sec, disk[sec].data());
    Written(sec, gen);
  }
  void Written(uint64_t sec, uint64_t gen) {
    hc_ssd_sector_written(ssd.get(), sec, gen);
    for (auto it = dropped.begin(); it != dropped.end();) {
      bool durable = it->second.first == sec && it->second.second <= gen;
      it = durable ? dropped.erase(it) : std::next(it);
    }
  }

  void Check() {
    const char* why = hc_ssd_check(ssd.get());
    RC_ASSERT(why == nullptr);
    for (uint64_t b = 0; b < kBlocks; b++) {
      uint32_t crc = 0;
      uint64_t slot = hc_ssd_lookup(ssd.get(), b, &crc);
      auto it = newest.find(b);
      if (it == newest.end()) {
        RC_ASSERT(slot == HC_SSD_NONE);
      } else {
        RC_ASSERT(slot != HC_SSD_NONE);
        RC_ASSERT(crc == it->second.crc);
        uint64_t seq;
        hc_ssd_slot_blk(ssd.get(), slot, &seq, nullptr);
        RC_ASSERT(hc_ssd_is_dirty(ssd.get(), slot, seq) == it->second.dirty);
      }
    }
    // every drop not yet durable is named, so the driver can persist it
    for (const auto& [blk, where] : dropped) {
      std::set<uint64_t> secs;
      hc_ssd_pending_sectors(ssd.get(), blk, blk + 1,
                             [](void* o, uint64_t sec) {
                               static_cast<std::set<uint64_t>*>(o)->insert(sec);
                             },
                             &secs);
      RC_ASSERT(secs.count(where.first) == 1u);
    }
  }
};

TEST(SsdProperty, TheIndexAgreesWithTheModelAndSurvivesAReload) {
  rc::check([](void) {
    World w;
    const auto n = *rc::gen::inRange(1, 200);
    for (int i = 0; i < n; i++) {
      const auto op = *rc::gen::inRange(0, 8);
      const uint64_t blk = *rc::gen::inRange<uint64_t>(0, kBlocks);
      switch (op) {
      case 0: w.Demote(blk); break;
      case 1: w.Journal(blk); break;
      case 2: w.WriteBack(blk); break;
      case 3: w.Invalidate(blk); break;
      case 4: w.WriteSector(*rc::gen::inRange<uint64_t>(0, w.disk.size())); break;
      case 5: w.BeginWrite(*rc::gen::inRange<uint64_t>(0, w.disk.size())); break;
      case 6: w.EndWrite(*rc::gen::inRange<size_t>(0, 64)); break;
      default: {
        uint64_t end = blk + *rc::gen::inRange<uint64_t>(1, 8);
        for (uint64_t b = blk; b < end && b < kBlocks; b++) w.Invalidate(b);
      }
      }
      w.Check();
    }
    // writes in flight land (in any order), then every changed sector is
    // persisted, and the device is loaded into a new index
    while (!w.writes.empty()) w.EndWrite(*rc::gen::inRange<size_t>(0, 64));
    for (uint64_t s = hc_ssd_next_unwritten(w.ssd.get(), 0); s != HC_SSD_NONE;
         s = hc_ssd_next_unwritten(w.ssd.get(), s + 1)) {
      w.WriteSector(s);
    }
    RC_ASSERT(hc_ssd_pending_count(w.ssd.get()) == 0u);
    SsdPtr b(hc_ssd_new(&w.sb));
    for (uint64_t s = 0; s < w.disk.size(); s++) {
      hc_ssd_load_sector(b.get(), s, w.disk[s].data());
    }
    hc_ssd_load_done(b.get());
    RC_ASSERT(hc_ssd_check(b.get()) == nullptr);
    for (uint64_t blk = 0; blk < kBlocks; blk++) {
      uint32_t crc_a = 0, crc_b = 0;
      uint64_t sa = hc_ssd_lookup(w.ssd.get(), blk, &crc_a);
      uint64_t sb = hc_ssd_lookup(b.get(), blk, &crc_b);
      RC_ASSERT((sa == HC_SSD_NONE) == (sb == HC_SSD_NONE));
      if (sa != HC_SSD_NONE) {
        RC_ASSERT(crc_a == crc_b);
        RC_ASSERT(sa == sb);
      }
    }
    RC_ASSERT(hc_ssd_dirty_blocks(b.get()) == hc_ssd_dirty_blocks(w.ssd.get()));
    RC_ASSERT(hc_ssd_kept_dirty(b.get()) == hc_ssd_kept_dirty(w.ssd.get()));
  });
}

}  // namespace
