// Unit tests of the hostcache engine (qemu-block-driver/hc-engine.c).

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hc-engine.h"

namespace {

constexpr uint32_t kBlock = 4096;

struct EngineDeleter {
  void operator()(HcEngine* e) const { hc_engine_free(e); }
};
using EnginePtr = std::unique_ptr<HcEngine, EngineDeleter>;

HcConfig Config(uint64_t blocks, uint32_t admit_after = 1,
                uint64_t seq_cutoff = 0, HcPolicy policy = HC_POLICY_SLRU,
                uint32_t block_size = kBlock) {
  HcConfig c{};
  c.ram_size = blocks * block_size;
  c.block_size = block_size;
  c.admit_after = admit_after;
  c.seq_cutoff = seq_cutoff;
  c.policy = policy;
  return c;
}

EnginePtr Make(const HcConfig& c) {
  char err[256] = "";
  EnginePtr e(hc_engine_new(&c, err, sizeof(err)));
  EXPECT_NE(e, nullptr) << err;
  return e;
}

// Insert blk with its number stamped into the first 8 bytes.
void Put(HcEngine* e, uint64_t blk) {
  void* p = hc_insert(e, blk);
  ASSERT_NE(p, nullptr);
  memset(p, 0, hc_engine_config(e)->block_size);
  memcpy(p, &blk, sizeof(blk));
}

bool Has(HcEngine* e, uint64_t blk) {
  const void* p = hc_lookup(e, blk, true);
  if (!p) return false;
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  EXPECT_EQ(v, blk) << "wrong data for block " << blk;
  return true;
}

void ExpectConsistent(HcEngine* e) {
  const char* why = hc_engine_check(e);
  EXPECT_EQ(why, nullptr) << why;
}

std::string ConfigError(HcConfig c) {
  char err[256] = "";
  EXPECT_EQ(hc_config_check(&c, err, sizeof(err)), -EINVAL);
  EXPECT_EQ(hc_engine_new(&c, nullptr, 0), nullptr);
  return err;
}

TEST(Config, RejectsBadValuesWithAMessage) {
  EXPECT_NE(ConfigError(Config(16, 1, 0, HC_POLICY_SLRU, 3000)).find(
                "power of two"), std::string::npos);
  EXPECT_NE(ConfigError(Config(16, 1, 0, HC_POLICY_SLRU, 256)).find(
                "block-size"), std::string::npos);
  EXPECT_NE(ConfigError(Config(1, 1, 0, HC_POLICY_SLRU, 4u << 20)).find(
                "block-size"), std::string::npos);
  HcConfig zero = Config(16);
  zero.ram_size = 0;
  EXPECT_NE(ConfigError(zero).find("ram-size"), std::string::npos);
  EXPECT_NE(ConfigError(Config(16, 0)).find("admit-after"),
            std::string::npos);
  HcConfig huge = Config(1, 1, 0, HC_POLICY_SLRU, 512);
  huge.ram_size = 1ull << 42;  // 2^33 slots of 512 bytes
  EXPECT_NE(ConfigError(huge).find("larger block-size"), std::string::npos);
}

TEST(Config, AcceptsEdges) {
  for (uint32_t bs = HC_MIN_BLOCK_SIZE; bs <= HC_MAX_BLOCK_SIZE; bs <<= 1) {
    auto e = Make(Config(3, 1, 0, HC_POLICY_SLRU, bs));
    ASSERT_NE(e, nullptr);
    Put(e.get(), 7);
    EXPECT_TRUE(Has(e.get(), 7));
    ExpectConsistent(e.get());
  }
}

TEST(Engine, InsertLookupInvalidate) {
  auto e = Make(Config(64));
  EXPECT_EQ(hc_lookup(e.get(), 5, true), nullptr);
  Put(e.get(), 5);
  Put(e.get(), 1ull << 50);
  EXPECT_TRUE(Has(e.get(), 5));
  EXPECT_TRUE(Has(e.get(), 1ull << 50));
  EXPECT_EQ(hc_engine_blocks(e.get()), 2u);
  EXPECT_EQ(hc_invalidate(e.get(), 0, 6), 1u);
  EXPECT_FALSE(Has(e.get(), 5));
  EXPECT_EQ(hc_engine_stats(e.get())->invalidations, 1u);
  hc_invalidate_all(e.get());
  EXPECT_EQ(hc_engine_blocks(e.get()), 0u);
  ExpectConsistent(e.get());
}

TEST(Engine, NeverHoldsMoreThanCapacityAndAllocatesLazily) {
  auto e = Make(Config(1024));  // 4 MiB of data at most
  EXPECT_EQ(hc_engine_data_bytes_allocated(e.get()), 0u);
  Put(e.get(), 1);
  EXPECT_LE(hc_engine_data_bytes_allocated(e.get()), 4u << 20);
  EXPECT_GT(hc_engine_data_bytes_allocated(e.get()), 0u);
  for (uint64_t b = 0; b < 10000; b++) Put(e.get(), b * 7);
  EXPECT_EQ(hc_engine_blocks(e.get()), 1024u);
  EXPECT_EQ(hc_engine_stats(e.get())->evictions, 10001u - 1024u);
  EXPECT_LE(hc_engine_data_bytes_allocated(e.get()), 1024u * kBlock);
  ExpectConsistent(e.get());
}

TEST(Engine, MetadataUnderOnePercentAt4K) {
  for (uint64_t blocks : {1000ull, 65536ull, 262144ull}) {
    auto e = Make(Config(blocks, 2));  // with the admission sketch
    double ratio = double(hc_engine_metadata_bytes(e.get())) /
                   double(blocks * kBlock);
    RecordProperty("metadata_ratio_" + std::to_string(blocks),
                   std::to_string(ratio));
    EXPECT_LT(ratio, 0.01) << blocks << " blocks";
  }
}

// Hot set of H blocks re-read between scans of never-repeated blocks.
double HotHitRatio(HcPolicy policy) {
  const uint64_t cap = 1000, hot = 500;
  auto e = Make(Config(cap, 1, 0, policy));
  std::mt19937_64 rng(42);
  uint64_t cold = 1'000'000, hits = 0, reads = 0;
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 2000; i++) {
      uint64_t b = rng() % hot;
      reads++;
      if (hc_lookup(e.get(), b, true)) {
        hits++;
      } else {
        Put(e.get(), b);
      }
    }
    for (int i = 0; i < 3000; i++) {  // a scan 3x the cache
      uint64_t b = cold++;
      if (!hc_lookup(e.get(), b, true)) Put(e.get(), b);
    }
  }
  ExpectConsistent(e.get());
  return double(hits) / double(reads);
}

TEST(Eviction, SlruKeepsTheHotSetThroughScansWhereLruLosesIt) {
  double slru = HotHitRatio(HC_POLICY_SLRU);
  double lru = HotHitRatio(HC_POLICY_LRU);
  RecordProperty("slru_hot_hit_ratio", std::to_string(slru));
  RecordProperty("lru_hot_hit_ratio", std::to_string(lru));
  EXPECT_GT(slru, 0.9);
  EXPECT_LT(lru, 0.8);
}

TEST(Eviction, ProtectedHitsSurviveProbationChurn) {
  auto e = Make(Config(10));  // protected max 8
  Put(e.get(), 1);
  EXPECT_TRUE(Has(e.get(), 1));  // promoted
  for (uint64_t b = 100; b < 200; b++) Put(e.get(), b);
  EXPECT_TRUE(Has(e.get(), 1));
  ExpectConsistent(e.get());
}

TEST(Admission, AdmitsOnTheNthMiss) {
  auto e = Make(Config(100, 3));
  EXPECT_FALSE(hc_admit_miss(e.get(), 9));
  EXPECT_FALSE(hc_admit_miss(e.get(), 9));
  EXPECT_TRUE(hc_admit_miss(e.get(), 9));
  EXPECT_EQ(hc_engine_stats(e.get())->admissions_refused, 2u);
  auto always = Make(Config(100, 1));
  EXPECT_TRUE(hc_admit_miss(always.get(), 9));
}

TEST(Admission, CountsAgeSoOldMissesAreForgotten) {
  auto e = Make(Config(64, 2));
  EXPECT_FALSE(hc_admit_miss(e.get(), 5));
  // Misses of another block drive the sketch through two halvings.
  for (int i = 0; i < 4 * 32; i++) hc_admit_miss(e.get(), 1000);
  EXPECT_FALSE(hc_admit_miss(e.get(), 5));
  EXPECT_TRUE(hc_admit_miss(e.get(), 5));
}

TEST(Admission, FewFalseAdmissionsUnderManyDistinctMisses) {
  const uint64_t slots = 4096;
  auto e = Make(Config(slots, 2));
  std::mt19937_64 rng(3);
  int false_admits = 0;
  for (uint64_t i = 0; i < 20 * slots; i++) {
    false_admits += hc_admit_miss(e.get(), rng());  // each key seen once
  }
  EXPECT_LT(false_admits, int(20 * slots * 3 / 100)) << "over 3% admitted";
}

TEST(Sequential, LongStreamsBypassAndRandomDoesNot) {
  auto e = Make(Config(100, 1, 64 * 1024));
  uint64_t off = 1 << 20;
  int bypassed = 0;
  for (int i = 0; i < 32; i++, off += 4096) {
    bypassed += hc_seq_check(e.get(), off, 4096);
  }
  EXPECT_EQ(bypassed, 32 - 16);  // > 64 KiB after 16 requests
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000; i++) {
    EXPECT_FALSE(hc_seq_check(e.get(), (rng() % 100000) * 4096 + 7, 4096));
  }
  EXPECT_TRUE(hc_seq_check(e.get(), 0, 1 << 20));  // one large request
  EXPECT_EQ(hc_engine_stats(e.get())->seq_bypasses, 17u);
  auto off0 = Make(Config(100, 1, 0));
  EXPECT_FALSE(hc_seq_check(off0.get(), 0, 1 << 30));
}

TEST(Sequential, InterleavedStreamsAreEachDetected) {
  auto e = Make(Config(100, 1, 16 * 1024));
  int bypassed = 0;
  for (int i = 0; i < 8; i++) {
    for (uint64_t s = 0; s < 4; s++) {
      bypassed += hc_seq_check(e.get(), (s << 30) + i * 4096, 4096);
    }
  }
  EXPECT_EQ(bypassed, 4 * 4);
}

TEST(Races, FillOverlappingAWriteIsStale) {
  auto e = Make(Config(100));
  HcOp fill, write;
  hc_op_fill_begin(e.get(), &fill, 10, 12);
  hc_op_write_begin(e.get(), &write, 11, 12);
  EXPECT_TRUE(hc_op_end(e.get(), &write));
  EXPECT_FALSE(hc_op_end(e.get(), &fill));
  EXPECT_EQ(hc_engine_stats(e.get())->stale_fills, 1u);
}

TEST(Races, FillStartedDuringAWriteIsStale) {
  auto e = Make(Config(100));
  HcOp fill, write;
  hc_op_write_begin(e.get(), &write, 11, 12);
  hc_op_fill_begin(e.get(), &fill, 10, 12);
  EXPECT_FALSE(hc_op_end(e.get(), &fill));
  EXPECT_TRUE(hc_op_end(e.get(), &write));
}

TEST(Races, FillStartedDuringAWriteAndEndingAfterIsStale) {
  auto e = Make(Config(100));
  HcOp fill, write;
  hc_op_write_begin(e.get(), &write, 11, 12);
  hc_op_fill_begin(e.get(), &fill, 11, 12);
  EXPECT_TRUE(hc_op_end(e.get(), &write));
  EXPECT_FALSE(hc_op_end(e.get(), &fill));
}

TEST(Races, DisjointOpsAreNotStale) {
  auto e = Make(Config(100));
  HcOp fill, write, fill2;
  hc_op_fill_begin(e.get(), &fill, 10, 12);
  hc_op_write_begin(e.get(), &write, 12, 20);
  hc_op_fill_begin(e.get(), &fill2, 0, 10);
  EXPECT_TRUE(hc_op_end(e.get(), &fill));
  EXPECT_TRUE(hc_op_end(e.get(), &write));
  EXPECT_TRUE(hc_op_end(e.get(), &fill2));
}

TEST(Races, OverlappingWritesAreBothStale) {
  auto e = Make(Config(100));
  HcOp w1, w2, w3;
  hc_op_write_begin(e.get(), &w1, 0, 4);
  hc_op_write_begin(e.get(), &w2, 3, 5);
  EXPECT_FALSE(hc_op_end(e.get(), &w1));
  hc_op_write_begin(e.get(), &w3, 0, 1);  // after w1 ended: independent
  EXPECT_FALSE(hc_op_end(e.get(), &w2));
  EXPECT_TRUE(hc_op_end(e.get(), &w3));
}

TEST(Races, WriteBeginDropsCachedBlocks) {
  auto e = Make(Config(100));
  for (uint64_t b = 0; b < 10; b++) Put(e.get(), b);
  HcOp w;
  hc_op_write_begin(e.get(), &w, 3, 6);
  EXPECT_FALSE(Has(e.get(), 3));
  EXPECT_FALSE(Has(e.get(), 5));
  EXPECT_TRUE(Has(e.get(), 6));
  hc_op_end(e.get(), &w);
}

TEST(Reconfigure, ShrinkKeepsTheHottestAndGrowKeepsEverything) {
  auto e = Make(Config(100));
  for (uint64_t b = 0; b < 100; b++) Put(e.get(), b);
  for (uint64_t b = 90; b < 100; b++) EXPECT_TRUE(Has(e.get(), b));
  HcConfig small = Config(20);
  char err[256];
  ASSERT_EQ(hc_engine_reconfigure(e.get(), &small, err, sizeof(err)), 0)
      << err;
  ExpectConsistent(e.get());
  EXPECT_EQ(hc_engine_capacity(e.get()), 20u);
  EXPECT_EQ(hc_engine_blocks(e.get()), 20u);
  for (uint64_t b = 90; b < 100; b++) EXPECT_TRUE(Has(e.get(), b)) << b;
  EXPECT_LE(hc_engine_data_bytes_allocated(e.get()), 2u << 20);
  HcConfig big = Config(5000, 2, 1 << 20);
  ASSERT_EQ(hc_engine_reconfigure(e.get(), &big, err, sizeof(err)), 0);
  ExpectConsistent(e.get());
  for (uint64_t b = 90; b < 100; b++) EXPECT_TRUE(Has(e.get(), b)) << b;
  for (uint64_t b = 1000; b < 6000; b++) Put(e.get(), b);
  EXPECT_EQ(hc_engine_blocks(e.get()), 5000u);
  EXPECT_EQ(hc_engine_config(e.get())->admit_after, 2u);
  ExpectConsistent(e.get());
}

TEST(Reconfigure, BlockSizeCannotChangeAndNothingChanges) {
  auto e = Make(Config(100));
  Put(e.get(), 1);
  HcConfig other = Config(50, 1, 0, HC_POLICY_SLRU, 8192);
  char err[256] = "";
  EXPECT_EQ(hc_engine_reconfigure(e.get(), &other, err, sizeof(err)),
            -EINVAL);
  EXPECT_NE(std::string(err).find("block-size"), std::string::npos);
  EXPECT_EQ(hc_engine_capacity(e.get()), 100u);
  EXPECT_TRUE(Has(e.get(), 1));
}

TEST(Export, HotBlocksComeHottestFirst) {
  auto e = Make(Config(100));
  for (uint64_t b = 0; b < 10; b++) Put(e.get(), b);
  EXPECT_TRUE(Has(e.get(), 3));  // protected
  EXPECT_TRUE(Has(e.get(), 7));  // protected, hotter
  std::vector<uint64_t> out(100);
  size_t n = hc_engine_hot_blocks(e.get(), out.data(), out.size());
  ASSERT_EQ(n, 10u);
  EXPECT_EQ(out[0], 7u);
  EXPECT_EQ(out[1], 3u);
  EXPECT_EQ(out[2], 9u);  // newest probation block
  EXPECT_EQ(hc_engine_hot_blocks(e.get(), out.data(), 1), 1u);
}

TEST(Export, WarmInsertKeepsHeatOrderAndNeverEvicts) {
  auto e = Make(Config(8));
  Put(e.get(), 100);  // already cached: warm-up leaves it alone
  EXPECT_EQ(hc_insert_warm(e.get(), 100), nullptr);
  // a hot list, hottest first, as a migration source sends it
  for (uint64_t b = 1; b <= 10; b++) {
    void* p = hc_insert_warm(e.get(), b);
    if (b <= 7) {
      ASSERT_NE(p, nullptr) << b;
      memset(p, 0, kBlock);
      memcpy(p, &b, sizeof(b));
    } else {
      EXPECT_EQ(p, nullptr) << "block " << b << " evicted something";
    }
  }
  ExpectConsistent(e.get());
  EXPECT_EQ(hc_engine_blocks(e.get()), 8u);
  std::vector<uint64_t> out(8);
  ASSERT_EQ(hc_engine_hot_blocks(e.get(), out.data(), out.size()), 8u);
  EXPECT_EQ(out, (std::vector<uint64_t>{100, 1, 2, 3, 4, 5, 6, 7}));
  // the next ordinary insert evicts the coldest warmed block, not the hottest
  Put(e.get(), 200);
  EXPECT_FALSE(hc_contains(e.get(), 7));
  EXPECT_TRUE(Has(e.get(), 1));
  // a dirty block is never overwritten by warm-up data
  ASSERT_NE(hc_write_dirty(e.get(), 300, 1), nullptr);
  EXPECT_EQ(hc_insert_warm(e.get(), 300), nullptr);
  ExpectConsistent(e.get());
}

TEST(Latency, QuantilesAreWithinABucket) {
  HcLatency l{};
  EXPECT_EQ(hc_latency_quantile(&l, 0.5), 0u);
  for (uint64_t i = 1; i <= 1000; i++) hc_latency_record(&l, i * 1000);
  EXPECT_EQ(hc_latency_avg(&l), 500500u);
  double p50 = double(hc_latency_quantile(&l, 0.5));
  double p99 = double(hc_latency_quantile(&l, 0.99));
  EXPECT_NEAR(p50, 500000, 500000 * 0.13);
  EXPECT_NEAR(p99, 990000, 990000 * 0.13);
  hc_latency_record(&l, 0);
  hc_latency_record(&l, UINT64_MAX / 2);
  EXPECT_GT(hc_latency_quantile(&l, 1.0), 0u);
}

TEST(WriteBack, DestageOneBlockOutOfOrderKeepsFlushesWaiting) {
  auto e = Make(Config(16));
  for (uint64_t b = 0; b < 4; b++) ASSERT_NE(hc_write_dirty(e.get(), b, 0), nullptr);
  uint64_t f = hc_write_seq(e.get());
  HcDestage d;
  ASSERT_NE(hc_destage_begin_blk(e.get(), &d, 2), nullptr);
  EXPECT_EQ(hc_destage_begin_blk(e.get(), &d, 2), nullptr);  // in flight
  EXPECT_TRUE(hc_dirty_pending_upto(e.get(), 0));  // conservative
  hc_destage_end(e.get(), &d, true);
  EXPECT_FALSE(hc_is_dirty(e.get(), 2));
  EXPECT_EQ(hc_dirty_blocks(e.get()), 3u);
  // the queue skips block 2's old record and destages the other three
  int n = 0;
  while (hc_destage_begin(e.get(), &d, UINT64_MAX)) {
    EXPECT_NE(d.blk, 2u);
    hc_destage_end(e.get(), &d, true);
    n++;
  }
  EXPECT_EQ(n, 3);
  EXPECT_FALSE(hc_dirty_pending_upto(e.get(), f));
  EXPECT_EQ(hc_engine_check(e.get()), nullptr);
}

TEST(Latency, P99OfFewSamplesIsTheLargest) {
  HcLatency l{};
  hc_latency_record(&l, 7000000);
  hc_latency_record(&l, 2000);
  hc_latency_record(&l, 2000);
  EXPECT_GE(hc_latency_quantile(&l, 0.99), hc_latency_avg(&l));
  EXPECT_NEAR(double(hc_latency_quantile(&l, 0.99)), 7e6, 7e6 * 0.13);
  EXPECT_NEAR(double(hc_latency_quantile(&l, 0.5)), 2000, 2000 * 0.13);
}

TEST(WriteBack, FailedDestagesGoBackInSeqOrder) {
  // Two destages fail in the order they were issued: a flush waiting for
  // the older write must still see it pending (found in review).
  auto e = Make(Config(16));
  ASSERT_NE(hc_write_dirty(e.get(), 1, 0), nullptr);
  uint64_t f = hc_write_seq(e.get());
  ASSERT_NE(hc_write_dirty(e.get(), 2, 0), nullptr);
  HcDestage d1, d2;
  ASSERT_NE(hc_destage_begin(e.get(), &d1, UINT64_MAX), nullptr);
  ASSERT_NE(hc_destage_begin(e.get(), &d2, UINT64_MAX), nullptr);
  EXPECT_EQ(d1.blk, 1u);
  hc_destage_end(e.get(), &d1, false);
  hc_destage_end(e.get(), &d2, false);
  EXPECT_TRUE(hc_dirty_pending_upto(e.get(), f));
  HcDestage d;
  ASSERT_NE(hc_destage_begin(e.get(), &d, f), nullptr);
  EXPECT_EQ(d.blk, 1u);  // the older one first
  hc_destage_end(e.get(), &d, true);
  EXPECT_FALSE(hc_dirty_pending_upto(e.get(), f));
  EXPECT_TRUE(hc_dirty_pending_upto(e.get(), f + 1));
  EXPECT_EQ(hc_engine_check(e.get()), nullptr);
}

}  // namespace
