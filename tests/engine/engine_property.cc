// Property test of the hostcache engine against a reference model.
//
// The model is an origin: block -> version.  Random programs interleave
// what the driver does: fills (begin, read the origin at some point, end and
// install if allowed), writes (begin, apply to the origin at some point, end
// and install if allowed, as write-through does), lookups, invalidations and
// resizes.  After every step:
//   - every cached block whose range has no write in flight holds exactly
//     the origin's version (a cache that raced must never serve stale data);
//   - the engine's internal invariants hold and it never exceeds capacity.

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <vector>

#include "hc-engine.h"

namespace {

constexpr uint32_t kBlock = 512;
constexpr uint64_t kBlocks = 48;  // origin size in blocks

enum Kind {
  kLookup, kFillBegin, kFillRead, kFillEnd, kWriteBegin, kWriteApply,
  kWriteEnd, kInvalidate, kResize, kNumKinds
};

struct Cmd {
  int kind;
  uint64_t blk;
  uint64_t len;
  uint32_t pick;
};

struct Pending {
  HcOp op;
  bool is_fill;
  bool done_io = false;                // fill read / write applied
  std::vector<uint64_t> data;          // versions read or to write
  std::vector<bool> admit;             // fills: admission decisions
};

struct Model {
  std::vector<uint64_t> origin = std::vector<uint64_t>(kBlocks, 0);
  uint64_t next_version = 1;
};

uint64_t Version(const void* p) {
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

void Store(void* p, uint64_t v) {
  memset(p, 0xee, kBlock);
  memcpy(p, &v, sizeof(v));
}

void CheckInvariants(HcEngine* e, const Model& m,
                     const std::list<Pending>& pending) {
  const char* why = hc_engine_check(e);
  RC_ASSERT(why == nullptr);
  RC_ASSERT(hc_engine_blocks(e) <= hc_engine_capacity(e));
  for (uint64_t b = 0; b < kBlocks; b++) {
    bool writing = false;
    for (const auto& p : pending) {
      writing |= !p.is_fill && b >= p.op.first && b < p.op.end;
    }
    const void* d = hc_lookup(e, b, false);
    if (d && !writing) {
      RC_ASSERT(Version(d) == m.origin[b]);
    }
  }
}

Pending* Pick(std::list<Pending>& pending, bool fill, uint32_t pick,
              bool need_io) {
  std::vector<Pending*> c;
  for (auto& p : pending) {
    if (p.is_fill == fill && p.done_io == need_io) c.push_back(&p);
  }
  return c.empty() ? nullptr : c[pick % c.size()];
}

void Run(const HcConfig& cfg, const std::vector<Cmd>& prog) {
  char err[256];
  std::unique_ptr<HcEngine, void (*)(HcEngine*)> e(
      hc_engine_new(&cfg, err, sizeof(err)), hc_engine_free);
  RC_ASSERT(bool(e.get() != nullptr));
  Model m;
  std::list<Pending> pending;

  auto end_op = [&](Pending* p) {
    bool valid = hc_op_end(e.get(), &p->op);
    for (uint64_t i = 0; valid && i < p->data.size(); i++) {
      if (p->is_fill && !p->admit[i]) continue;
      void* slot = hc_insert(e.get(), p->op.first + i);
      if (slot) Store(slot, p->data[i]);
    }
    pending.remove_if([p](const Pending& x) { return &x == p; });
  };

  for (const Cmd& c : prog) {
    uint64_t first = c.blk % kBlocks;
    uint64_t end = std::min(kBlocks, first + 1 + c.len % 6);
    switch (c.kind) {
      case kLookup: {
        const void* d = hc_lookup(e.get(), first, c.pick & 1);
        (void)d;  // correctness is checked by CheckInvariants
        break;
      }
      case kFillBegin: {
        if (pending.size() > 8) break;
        pending.emplace_back();
        Pending& p = pending.back();
        p.is_fill = true;
        for (uint64_t b = first; b < end; b++) {
          p.admit.push_back(hc_admit_miss(e.get(), b));
        }
        hc_op_fill_begin(e.get(), &p.op, first, end);
        break;
      }
      case kFillRead:
        if (Pending* p = Pick(pending, true, c.pick, false)) {
          for (uint64_t b = p->op.first; b < p->op.end; b++) {
            p->data.push_back(m.origin[b]);
          }
          p->done_io = true;
        }
        break;
      case kFillEnd:
        if (Pending* p = Pick(pending, true, c.pick, true)) end_op(p);
        break;
      case kWriteBegin: {
        if (pending.size() > 8) break;
        pending.emplace_back();
        Pending& p = pending.back();
        p.is_fill = false;
        uint64_t v = m.next_version++;
        p.data.assign(end - first, v);
        hc_op_write_begin(e.get(), &p.op, first, end);
        break;
      }
      case kWriteApply:
        if (Pending* p = Pick(pending, false, c.pick, false)) {
          for (uint64_t i = 0; i < p->data.size(); i++) {
            m.origin[p->op.first + i] = p->data[i];
          }
          p->done_io = true;
        }
        break;
      case kWriteEnd:
        if (Pending* p = Pick(pending, false, c.pick, true)) end_op(p);
        break;
      case kInvalidate:
        hc_invalidate(e.get(), first, end);
        break;
      case kResize: {
        HcConfig n = cfg;
        n.ram_size = uint64_t(1 + c.pick % 40) * kBlock;
        n.admit_after = 1 + (c.pick >> 8) % 3;
        RC_ASSERT(hc_engine_reconfigure(e.get(), &n, err, sizeof(err)) == 0);
        break;
      }
    }
    CheckInvariants(e.get(), m, pending);
  }
  // Drain: finish every op, then everything cached must equal the origin.
  while (!pending.empty()) {
    Pending* p = &pending.front();
    if (!p->done_io) {
      for (uint64_t i = 0; i < p->op.end - p->op.first; i++) {
        if (p->is_fill) {
          p->data.push_back(m.origin[p->op.first + i]);
        } else {
          m.origin[p->op.first + i] = p->data[i];
        }
      }
      p->done_io = true;
    }
    end_op(p);
  }
  CheckInvariants(e.get(), m, pending);
}

rc::Gen<Cmd> GenCmd() {
  return rc::gen::build<Cmd>(
      rc::gen::set(&Cmd::kind, rc::gen::inRange(0, int(kNumKinds))),
      rc::gen::set(&Cmd::blk, rc::gen::inRange<uint64_t>(0, kBlocks)),
      rc::gen::set(&Cmd::len, rc::gen::inRange<uint64_t>(0, 8)),
      rc::gen::set(&Cmd::pick, rc::gen::arbitrary<uint32_t>()));
}

RC_GTEST_PROP(EngineModel, CachedDataAlwaysMatchesTheOrigin, ()) {
  HcConfig cfg{};
  cfg.block_size = kBlock;
  cfg.ram_size = uint64_t(*rc::gen::inRange(1, 40)) * kBlock;
  cfg.admit_after = *rc::gen::inRange(1, 4);
  cfg.seq_cutoff = 0;
  cfg.policy = *rc::gen::element(HC_POLICY_SLRU, HC_POLICY_LRU);
  auto prog = *rc::gen::container<std::vector<Cmd>>(GenCmd());
  Run(cfg, prog);
}

// Lookups, inserts and invalidations alone against a map: the cache holds a
// subset of what was inserted and not invalidated, with the right data.
RC_GTEST_PROP(EngineModel, CacheIsASubsetOfInsertedData, ()) {
  HcConfig cfg{};
  cfg.block_size = kBlock;
  cfg.ram_size = uint64_t(*rc::gen::inRange(1, 64)) * kBlock;
  cfg.admit_after = 1;
  cfg.policy = HC_POLICY_SLRU;
  std::unique_ptr<HcEngine, void (*)(HcEngine*)> e(
      hc_engine_new(&cfg, nullptr, 0), hc_engine_free);
  std::map<uint64_t, uint64_t> live;
  auto ops = *rc::gen::container<std::vector<std::pair<int, uint64_t>>>(
      rc::gen::pair(rc::gen::inRange(0, 3), rc::gen::inRange<uint64_t>(0, 200)));
  uint64_t v = 1;
  for (auto [k, b] : ops) {
    if (k == 0) {
      void* s = hc_insert(e.get(), b);
      RC_ASSERT(bool(s != nullptr));
      Store(s, v);
      live[b] = v++;
    } else if (k == 1) {
      const void* d = hc_lookup(e.get(), b, true);
      if (d) {
        RC_ASSERT(live.count(b) == 1);
        RC_ASSERT(Version(d) == live[b]);
      }
    } else {
      hc_invalidate(e.get(), b, b + 3);
      for (uint64_t x = b; x < b + 3; x++) live.erase(x);
      for (uint64_t x = b; x < b + 3; x++) {
        RC_ASSERT(!hc_contains(e.get(), x));
      }
    }
    RC_ASSERT(hc_engine_check(e.get()) == nullptr);
  }
}

// Write-back: random interleavings of dirtying writes, destages that succeed
// or fail (and may be in flight while the block is rewritten), clean inserts
// that force evictions, and flush queries.  Properties:
//   - dirty blocks are never evicted and always read back their last write;
//   - hc_dirty_pending_upto(F) false => the origin holds, for every block,
//     its last write with seq <= F or a newer one (the flush promise);
//   - the engine's invariants hold throughout.
RC_GTEST_PROP(EngineModel, WriteBackFlushPromise, ()) {
  HcConfig cfg{};
  cfg.block_size = kBlock;
  cfg.ram_size = uint64_t(*rc::gen::inRange(2, 24)) * kBlock;
  cfg.admit_after = 1;
  cfg.policy = HC_POLICY_SLRU;
  std::unique_ptr<HcEngine, void (*)(HcEngine*)> e(
      hc_engine_new(&cfg, nullptr, 0), hc_engine_free);
  struct InFlight {
    HcDestage d;
    uint64_t value;
  };
  std::list<InFlight> flight;
  std::map<uint64_t, uint64_t> ram;      // last written value per block
  std::map<uint64_t, uint64_t> origin;   // value on the origin
  std::map<uint64_t, std::vector<std::pair<uint64_t, uint64_t>>> writes;
  uint64_t value = 1;
  auto ops = *rc::gen::container<std::vector<std::pair<int, uint64_t>>>(
      rc::gen::pair(rc::gen::inRange(0, 6), rc::gen::inRange<uint64_t>(0, 16)));
  for (auto [k, b] : ops) {
    switch (k) {
      case 0:
      case 1: {  // write-back write of block b
        void* slot = hc_write_dirty(e.get(), b, 0);
        if (!slot) break;  // every slot dirty: the driver destages first
        Store(slot, value);
        ram[b] = value;
        writes[b].push_back({hc_write_seq(e.get()), value});
        value++;
        break;
      }
      case 2: {  // destage begins
        flight.emplace_back();
        const void* d = hc_destage_begin(e.get(), &flight.back().d, UINT64_MAX);
        if (!d) {
          flight.pop_back();
        } else {
          flight.back().value = Version(d);
          RC_ASSERT(Version(d) == ram[flight.back().d.blk]);
        }
        break;
      }
      case 3: {  // destage ends, ok or failed
        if (flight.empty()) break;
        auto it = flight.begin();
        std::advance(it, b % flight.size());
        bool ok = (b & 3) != 0;
        if (ok) origin[it->d.blk] = it->value;
        hc_destage_end(e.get(), &it->d, ok);
        flight.erase(it);
        break;
      }
      case 4: {  // a clean block read in (may evict clean ones only)
        uint64_t blk = 100 + b;
        if (!hc_contains(e.get(), blk)) {
          void* slot = hc_insert(e.get(), blk);
          if (slot) Store(slot, 0);
        }
        break;
      }
      case 5: {  // flush promise check at the current seq
        uint64_t f = hc_write_seq(e.get());
        if (!hc_dirty_pending_upto(e.get(), f)) {
          for (auto& [blk, ws] : writes) {
            RC_ASSERT(origin.count(blk) == 1);
            RC_ASSERT(origin[blk] >= ws.back().second);
          }
        }
        break;
      }
    }
    RC_ASSERT(hc_engine_check(e.get()) == nullptr);
    for (auto& [blk, v] : ram) {
      if (hc_is_dirty(e.get(), blk)) {
        const void* d = hc_lookup(e.get(), blk, false);
        RC_ASSERT(bool(d != nullptr));
        RC_ASSERT(Version(d) == v);
      }
    }
  }
  // Drain: destage everything; afterwards nothing is pending and the
  // origin holds every block's last write.
  for (auto& f : flight) {
    origin[f.d.blk] = f.value;
    hc_destage_end(e.get(), &f.d, true);
  }
  for (int guard = 0; guard < 10000; guard++) {
    HcDestage d;
    const void* p = hc_destage_begin(e.get(), &d, UINT64_MAX);
    if (!p) break;
    origin[d.blk] = Version(p);
    hc_destage_end(e.get(), &d, true);
  }
  RC_ASSERT(!hc_dirty_pending_upto(e.get(), hc_write_seq(e.get())));
  RC_ASSERT(hc_dirty_blocks(e.get()) == 0u);
  for (auto& [blk, v] : ram) RC_ASSERT(origin[blk] == v);
}

}  // namespace
