#include "manager/stats/summary.h"

#include <algorithm>

namespace hc::stats {

namespace {

uint64_t Counter(const nlohmann::json& c, const char* name) {
  auto it = c.find(name);
  if (it == c.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  double v = it->get<double>();
  return v > 0 ? static_cast<uint64_t>(v) : 0;
}

}  // namespace

IoTotals SumIo(const std::vector<DiskSnapshot>& disks) {
  IoTotals t;
  double hit_ns = 0, miss_ns = 0;
  for (const auto& d : disks) {
    const auto& c = d.counters;
    uint64_t hits = Counter(c, "read-hits"), misses = Counter(c, "read-misses");
    t.disks++;
    t.read_hits += hits;
    t.read_misses += misses;
    hit_ns += static_cast<double>(Counter(c, "hit-latency-avg-ns")) * static_cast<double>(hits);
    miss_ns += static_cast<double>(Counter(c, "miss-latency-avg-ns")) * static_cast<double>(misses);
    t.hit_latency_p99_ns = std::max(t.hit_latency_p99_ns, Counter(c, "hit-latency-p99-ns"));
    t.miss_latency_p99_ns = std::max(t.miss_latency_p99_ns, Counter(c, "miss-latency-p99-ns"));
    t.ram_used += Counter(c, "ram-used");
    t.ssd_used += Counter(c, "ssd-used");
    t.dirty_bytes += Counter(c, "dirty-bytes");
  }
  uint64_t reads = t.read_hits + t.read_misses;
  if (reads > 0) t.hit_ratio = static_cast<double>(t.read_hits) / static_cast<double>(reads);
  if (t.read_hits > 0) t.hit_latency_avg_ns = hit_ns / static_cast<double>(t.read_hits);
  if (t.read_misses > 0) t.miss_latency_avg_ns = miss_ns / static_cast<double>(t.read_misses);
  return t;
}

}  // namespace hc::stats
