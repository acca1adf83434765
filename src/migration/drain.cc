// Draining write-back filters before a live migration (Migrator::Migrate).
//
// The driver writes every dirty block back when QEMU inactivates the
// source's nodes at switch-over, while the guest is stopped: the downtime
// grows with the dirty amount.  Before the migration starts, each
// write-back filter of the VM is reopened with max-dirty-age-ms 1 (all other
// options as its policy says, the ssd child and origin-id by name as the
// reopen needs them), so its destager writes back whatever is dirty at once
// while the guest keeps running; the filters' dirty-bytes are polled until
// each is at most drain_threshold or the timeout passed, then the migration
// starts (pre-copy and switch-over find little left).  The filters keep the
// drain's value until the VM leaves; after a failed migration they get the
// policy's value back (RestoreDrained).
#include <algorithm>

#include "common/json_fields.h"
#include "common/util.h"
#include "migration/migrator.h"
#include "manager/libvirt/block_graph.h"

namespace hc::migration {

using nlohmann::json;

namespace {

std::string Secs(int64_t ms) { return HumanSeconds(static_cast<double>(ms) / 1000.0); }

uint64_t DirtyBytes(const json& stats) {
  auto it = stats.find("dirty-bytes");
  if (it == stats.end() || !it->is_number_unsigned()) return 0;
  return it->get<uint64_t>();
}

}  // namespace

std::vector<Migrator::DrainedDisk> Migrator::StartDrain(const libvirt::DomainRef& dom,
                                                        const std::vector<store::Assignment>& as) {
  std::vector<DrainedDisk> drained;
  auto vlock = manager_.vm_locks().Lock(dom.uuid);
  std::optional<libvirt::DomainInfo> live;
  for (const auto& a : as) {
    auto p = store_.GetPolicy(a.policy);
    if (!p || p->rules.mode != policy::CacheMode::kWriteBack) continue;
    if (!live) {
      auto x = lv_.GetXml(dom.uuid, libvirt::kXmlLive);
      if (!x) return drained;
      auto info = libvirt::ParseDomain(*x);
      if (!info) return drained;
      live = *info;
    }
    auto d = std::find_if(live->disks.begin(), live->disks.end(),
                          [&](const libvirt::DiskInfo& d) { return d.target == a.target; });
    if (d == live->disks.end()) continue;
    auto skip = [&](const std::string& why) {
      Log("warning", dom.name, a.target, "migrate-drain",
          "not drained before the migration (" + why +
              "); its dirty data is written back at switch-over");
    };
    auto ins = live_.Inspect(dom.uuid, d->alias);
    if (!ins) {
      skip("cannot read QEMU's block graph: " + ins.error().message);
      continue;
    }
    if (!ins->has_filter || ins->root != a.node_name) continue;  // nothing of ours to drain
    if (JsonString(ins->stats, "mode") != "write-back") continue;  // (e.g. the SSD tier failed)
    DrainedDisk dd{a.target, a.node_name, ins->filter_child, ins->ssd_child, p->rules,
                   DirtyBytes(ins->stats), 0};
    dd.after = dd.before;
    policy::Rules r = p->rules;
    r.max_dirty_age_ms = 1;
    policy::SsdSpec ssd{"", ins->ssd_child, dom.uuid + "/" + a.target};
    if (auto s = live_.Reopen(dom.uuid, a.node_name, ins->filter_child, r,
                              ins->ssd_child.empty() ? nullptr : &ssd);
        !s) {
      skip("reopening it with max-dirty-age-ms 1 failed: " + s.error().message);
      continue;
    }
    drained.push_back(std::move(dd));
  }
  return drained;
}

std::vector<Migrator::DrainedDisk> Migrator::DrainWriteBack(const libvirt::DomainRef& dom,
                                                          int64_t timeout_ms) {
  if (timeout_ms <= 0) return {};
  auto as = manager_.AssignmentsOf(dom.uuid);
  if (!as) return {};
  const int64_t t0 = clock_.NowMs();
  std::vector<DrainedDisk> drained = StartDrain(dom, *as);
  if (drained.empty()) return drained;
  std::string which;
  for (const auto& d : drained) {
    which += (which.empty() ? "" : ", ") + d.target + " (" + HumanSize(d.before) + ")";
  }
  Log("info", dom.name, "", "migrate-drain",
      "writing back the dirty data of " + which +
          " before the migration starts (max-dirty-age-ms 1 while the guest runs; until each "
          "has at most " + HumanSize(config_.drain_threshold) + " dirty, for at most " +
          Secs(timeout_ms) + ")");
  const int64_t deadline = t0 + timeout_ms;
  bool done = false;
  std::string problem;
  for (;;) {
    auto st = live_.Qmp(dom.uuid, "query-blockstats", json{{"query-nodes", true}});
    if (!st) {
      problem = "reading the statistics failed: " + st.error().message;
      break;
    }
    auto stats = libvirt::ParseNodeStats(*st);
    done = true;
    for (auto& d : drained) {
      auto it = stats.find(d.node);
      if (it != stats.end()) d.after = DirtyBytes(it->second);
      done = done && d.after <= config_.drain_threshold;
    }
    const int64_t now = clock_.NowMs();
    if (done || now >= deadline) break;
    clock_.SleepMs(std::min(config_.drain_poll_ms, deadline - now));
  }
  const std::string took = Secs(clock_.NowMs() - t0);
  for (const auto& d : drained) {
    const std::string fig = HumanSize(d.before) + " dirty before, " + HumanSize(d.after) +
                            " after, in " + took;
    if (d.after <= config_.drain_threshold) {
      Log("info", dom.name, d.target, "migrate-drain",
          "dirty data written back before the migration: " + fig);
    } else {
      Log("warning", dom.name, d.target, "migrate-drain",
          "dirty data not fully written back before the migration (" +
              (problem.empty() ? "the drain timeout of " + Secs(timeout_ms) + " passed"
                               : problem) +
              "): " + fig + "; the rest is written back at switch-over");
    }
  }
  return drained;
}

void Migrator::RestoreDrained(const libvirt::DomainRef& dom,
                             const std::vector<DrainedDisk>& drained) {
  if (drained.empty()) return;
  auto vlock = manager_.vm_locks().Lock(dom.uuid);
  for (const auto& d : drained) {
    policy::SsdSpec ssd{"", d.ssd_child, dom.uuid + "/" + d.target};
    auto s = live_.Reopen(dom.uuid, d.node, d.child, d.rules,
                          d.ssd_child.empty() ? nullptr : &ssd);
    if (s) {
      Log("info", dom.name, d.target, "migrate-drain",
          "the migration did not happen: filter " + d.node + " has the policy's max-dirty-age-ms " +
              std::to_string(d.rules.max_dirty_age_ms) + " again");
    } else {
      Log("error", dom.name, d.target, "migrate-drain",
          "the migration did not happen, and giving filter " + d.node +
              " the policy's max-dirty-age-ms back failed (" + s.error().message +
              "); the next check re-asserts it");
    }
  }
}

}  // namespace hc::migration
