// StatsCollector: reads every cached disk's counters from QEMU
// (query-blockstats through libvirt's monitor passthrough), keeps them as a
// bounded time series in the store and the newest sample in memory for
// /metrics.
//
// One task per VM runs on the executor; a VM whose previous collection has
// not finished is skipped (and counted), so a slow or hung QEMU never holds
// up the others.  A reply of any shape is counted as the VM's error at
// worst; nothing ends the collector's threads.
//
// Thread-safety: all methods are thread-safe.  The store, client, clock and
// executor must outlive the collector; the executor's tasks must finish
// before it is destroyed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/store/store.h"

namespace hc::stats {

struct DiskSnapshot {
  std::string vm_uuid, vm_name, target, policy;
  int64_t time_ms = 0;
  nlohmann::json counters;  // driver-specific statistics of the filter
};

struct VmCollectorState {
  uint64_t errors = 0;   // failed collections
  uint64_t skipped = 0;  // ticks skipped while the previous one still ran
  std::string last_error;
};

class StatsCollector {
 public:
  using Executor = std::function<void(std::function<void()>)>;

  StatsCollector(store::Store& store, libvirt::LibvirtClient& lv, const Clock& clock,
                 Executor exec)
      : store_(store), lv_(lv), clock_(clock), exec_(std::move(exec)) {}
  ~StatsCollector() { Stop(); }

  // One round: a task per running VM with assigned disks.
  void CollectOnce();
  // Collects every `interval_s` on a thread of its own until Stop().
  void Start(int interval_s);
  void Stop();
  // Waits until no collection task is in flight (tests, shutdown).
  void Drain();

  std::vector<DiskSnapshot> Latest();
  std::map<std::string, VmCollectorState> VmStates();  // by VM name

 private:
  void CollectVm(const std::string& uuid, const std::string& name,
                 std::vector<store::Assignment> disks);
  // Follows a disk's warm-up after a live migration (`warm-up-state`):
  // when one seen received or running is done, a `warmed` event says how
  // much and about how long (to within a collection interval).
  void Warming(const std::string& uuid, const std::string& name, const std::string& target,
               const nlohmann::json& counters, int64_t now);
  // Counts a failed collection of VM `name` (logged when the reason changes).
  void Failed(const std::string& name, const std::string& why);

  store::Store& store_;
  libvirt::LibvirtClient& lv_;
  const Clock& clock_;
  Executor exec_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> in_flight_;                  // guarded by mu_
  // "uuid/target" -> when its warm-up was first seen received or running;
  // guarded by mu_.
  std::map<std::string, int64_t> warming_since_;
  std::map<std::string, DiskSnapshot> latest_;       // guarded by mu_; key uuid/target
  std::map<std::string, VmCollectorState> vm_state_;  // guarded by mu_; key VM name
  bool stop_ = false;                                 // guarded by mu_
  std::thread thread_;
};

}  // namespace hc::stats
