// Host-wide figures from the newest sample of each cached disk, for the
// API's /summary (the dashboard's overview).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "manager/stats/collector.h"

namespace hc::stats {

struct IoTotals {
  size_t disks = 0;                      // disks with a sample
  uint64_t read_hits = 0, read_misses = 0;
  std::optional<double> hit_ratio;       // hits / reads; none before the first read
  // Average latency of a hit and of a miss over every disk, each disk's
  // average weighted by its number of hits (misses); none without any.
  std::optional<double> hit_latency_avg_ns, miss_latency_avg_ns;
  // The highest p99 any disk reports (0 without any).
  uint64_t hit_latency_p99_ns = 0, miss_latency_p99_ns = 0;
  uint64_t ram_used = 0;     // bytes of RAM the caches hold (ram-used)
  uint64_t ssd_used = 0;     // bytes of SSD tier in use (ssd-used)
  uint64_t dirty_bytes = 0;  // written data the origins do not have yet
};

// Every counter is cumulative since its filter was opened, so the ratio
// and the latencies are too.  Counters a driver does not report count as 0.
IoTotals SumIo(const std::vector<DiskSnapshot>& disks);

}  // namespace hc::stats
