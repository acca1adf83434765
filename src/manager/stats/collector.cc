#include "manager/stats/collector.h"

#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/libvirt/block_graph.h"

namespace hc::stats {

using nlohmann::json;

void StatsCollector::CollectOnce() {
  auto all = store_.ListAssignments();
  if (!all) {
    spdlog::warn("statistics: {}", all.error().message);
    return;
  }
  std::map<std::string, std::vector<store::Assignment>> by_vm;
  for (auto& a : *all) by_vm[a.vm_uuid].push_back(std::move(a));
  {
    // Forget samples of disks no longer assigned.
    std::lock_guard lock(mu_);
    for (auto it = latest_.begin(); it != latest_.end();) {
      bool keep = false;
      auto vm = by_vm.find(it->second.vm_uuid);
      if (vm != by_vm.end()) {
        for (const auto& a : vm->second) keep |= a.target == it->second.target;
      }
      it = keep ? std::next(it) : latest_.erase(it);
    }
  }
  if (by_vm.empty()) return;
  auto doms = lv_.ListDomains();
  if (!doms) return;  // libvirtd away: nothing to collect from
  std::set<std::string> active;
  for (const auto& d : *doms) {
    if (d.active) active.insert(d.uuid);
  }
  {
    // A VM that stopped holds no cache: its last sample is not current.
    std::lock_guard lock(mu_);
    std::erase_if(latest_, [&](const auto& kv) { return !active.count(kv.second.vm_uuid); });
  }
  for (auto& [uuid, disks] : by_vm) {
    if (!active.count(uuid)) continue;
    std::string name = disks.front().vm_name;
    {
      std::lock_guard lock(mu_);
      if (in_flight_.count(uuid)) {
        vm_state_[name].skipped++;
        continue;
      }
      in_flight_.insert(uuid);
    }
    exec_([this, uuid = uuid, name, disks = std::move(disks)]() mutable {
      try {
        CollectVm(uuid, name, std::move(disks));
      } catch (const std::exception& e) {
        Failed(name, std::string("unexpected error: ") + e.what());
      }
      {
        std::lock_guard lock(mu_);
        in_flight_.erase(uuid);
      }
      cv_.notify_all();
    });
  }
}

void StatsCollector::CollectVm(const std::string& uuid, const std::string& name,
                               std::vector<store::Assignment> disks) {
  auto reply = lv_.QemuMonitorCommand(
      uuid, libvirt::QmpCommand("query-blockstats", json{{"query-nodes", true}}));
  if (!reply) {
    Failed(name, reply.error().message);
    return;
  }
  json ret = json::parse(*reply, nullptr, false);
  if (!ret.is_array()) {
    Failed(name, "QEMU's reply to query-blockstats is not a list");
    return;
  }
  auto stats = libvirt::ParseNodeStats(ret);
  const int64_t now = clock_.NowMs();
  for (const auto& a : disks) {
    auto it = stats.find(a.node_name);
    if (it == stats.end() || JsonString(it->second, "driver") != "hostcache") continue;
    json counters = it->second;
    counters.erase("driver");
    if (auto s = store_.AppendStats(uuid, a.target, store::StatSample{now, counters}); !s) {
      spdlog::warn("statistics of {}/{}: {}", name, a.target, s.error().message);
    }
    Warming(uuid, name, a.target, counters, now);
    std::lock_guard lock(mu_);
    latest_[uuid + "/" + a.target] = DiskSnapshot{uuid, name, a.target, a.policy, now, counters};
  }
  std::lock_guard lock(mu_);
  vm_state_[name].last_error.clear();
}

void StatsCollector::Warming(const std::string& uuid, const std::string& name,
                             const std::string& target, const json& counters, int64_t now) {
  const std::string state = JsonString(counters, "warm-up-state");
  const std::string key = uuid + "/" + target;
  int64_t since = 0;
  {
    std::lock_guard lock(mu_);
    if (state == "received" || state == "running") {
      warming_since_.emplace(key, now);
      return;
    }
    auto it = warming_since_.find(key);
    if (it == warming_since_.end()) return;
    since = it->second;
    warming_since_.erase(it);
  }
  if (state != "done") return;  // (a new QEMU without a warm-up: nothing to say)
  const double secs = static_cast<double>(now - since) / 1000.0;
  const std::string msg =
      "warm-up after the live migration done: " +
      std::to_string(JsonUint(counters, "warm-up-done")) + " of " +
      std::to_string(JsonUint(counters, "warm-up-blocks")) + " blocks warmed, " +
      HumanSize(JsonUint(counters, "warm-up-bytes-received")) +
      " received in the migration stream; it ran for " + HumanSeconds(secs) +
      " or less after the statistics first showed it (they are read every collection "
      "interval)";
  spdlog::info("{}/{}: {}", name, target, msg);
  auto r = store_.AppendEvent(store::Event{0, now, "info", name, target, "warmed", msg});
  if (!r) spdlog::error("cannot record event: {}", r.error().message);
}

void StatsCollector::Failed(const std::string& name, const std::string& why) {
  std::lock_guard lock(mu_);
  auto& st = vm_state_[name];
  st.errors++;
  if (st.last_error != why) spdlog::warn("statistics of VM {}: {}", name, why);
  st.last_error = why;
}

void StatsCollector::Start(int interval_s) {
  thread_ = std::thread([this, interval_s] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      try {
        CollectOnce();
      } catch (const std::exception& e) {
        spdlog::error("statistics: unexpected error: {}; collecting again in {} s", e.what(),
                      interval_s);
      }
      lock.lock();
      cv_.wait_for(lock, std::chrono::seconds(interval_s), [&] { return stop_; });
    }
  });
}

void StatsCollector::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StatsCollector::Drain() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return in_flight_.empty(); });
}

std::vector<DiskSnapshot> StatsCollector::Latest() {
  std::lock_guard lock(mu_);
  std::vector<DiskSnapshot> out;
  for (const auto& [_, s] : latest_) out.push_back(s);
  return out;
}

std::map<std::string, VmCollectorState> StatsCollector::VmStates() {
  std::lock_guard lock(mu_);
  return vm_state_;
}

}  // namespace hc::stats
