// Micro-benchmarks of the engine's hot paths (run by `make bench`).

#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "hc-engine.h"

namespace {

HcEngine* Make(uint64_t blocks) {
  HcConfig c{};
  c.block_size = 4096;
  c.ram_size = blocks * 4096;
  c.admit_after = 1;
  c.policy = HC_POLICY_SLRU;
  return hc_engine_new(&c, nullptr, 0);
}

// Hit: lookup + touch of a random cached block (no data copy).
void BM_LookupHit(benchmark::State& st) {
  uint64_t n = st.range(0);
  HcEngine* e = Make(n);
  for (uint64_t b = 0; b < n; b++) memset(hc_insert(e, b), 1, 64);
  std::mt19937_64 rng(1);
  std::vector<uint64_t> keys(1 << 16);
  for (auto& k : keys) k = rng() % n;
  size_t i = 0;
  for (auto _ : st) {
    benchmark::DoNotOptimize(hc_lookup(e, keys[i++ & 0xffff], true));
  }
  hc_engine_free(e);
}
BENCHMARK(BM_LookupHit)->Arg(4096)->Arg(65536)->Arg(1 << 20);

// Miss + insert with eviction (cache full), no data copy.
void BM_InsertEvict(benchmark::State& st) {
  uint64_t n = st.range(0);
  HcEngine* e = Make(n);
  uint64_t b = 0;
  for (; b < n; b++) hc_insert(e, b);
  for (auto _ : st) {
    benchmark::DoNotOptimize(hc_insert(e, b++));
  }
  hc_engine_free(e);
}
BENCHMARK(BM_InsertEvict)->Arg(4096)->Arg(65536);

// Floor for a hit's data movement: copying one 4 KiB block.
void BM_Memcpy4K(benchmark::State& st) {
  std::vector<char> a(4096, 1), b(4096);
  for (auto _ : st) {
    memcpy(b.data(), a.data(), 4096);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_Memcpy4K);

}  // namespace

BENCHMARK_MAIN();
