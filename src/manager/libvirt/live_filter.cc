#include "manager/libvirt/live_filter.h"

#include <algorithm>

#include "common/json_fields.h"
#include "common/util.h"

namespace hc::libvirt {

using nlohmann::json;

Result<json> LiveFilter::Qmp(const std::string& uuid, const std::string& name, const json& args) {
  auto reply = lv_.QemuMonitorCommand(uuid, QmpCommand(name, args));
  if (!reply) return tl::unexpected(Annotate(reply.error(), name));
  json j = json::parse(*reply, nullptr, false);
  if (j.is_discarded()) return Fail(ErrorCode::kInternal, name + ": unreadable QMP reply");
  return j;
}

Result<LiveDisk> LiveFilter::Inspect(const std::string& uuid, const std::string& alias) {
  auto blk = Qmp(uuid, "query-block");
  if (!blk) return tl::unexpected(blk.error());
  auto devs = ParseQueryBlock(*blk);
  if (!devs) return tl::unexpected(devs.error());
  const BlockDevice* dev = FindDeviceByAlias(*devs, alias);
  if (!dev) {
    return Fail(ErrorCode::kNotFound, "QEMU has no block device with id '" + alias + "'");
  }
  if (dev->node_name.empty()) {
    return Fail(ErrorCode::kFailedPrecondition, "device '" + alias + "' has no medium");
  }
  LiveDisk d;
  d.qdev = dev->qdev;
  d.root = dev->node_name;
  auto st = Qmp(uuid, "query-blockstats", json{{"query-nodes", true}});
  if (!st) return tl::unexpected(st.error());
  auto stats = ParseNodeStats(*st);
  auto it = stats.find(d.root);
  if (it != stats.end() && JsonString(it->second, "driver") == "hostcache") {
    d.has_filter = true;
    d.stats = it->second;
    auto g = Qmp(uuid, "x-debug-query-block-graph");
    if (!g) return tl::unexpected(g.error());
    auto graph = ParseBlockGraph(*g);
    if (!graph) return tl::unexpected(graph.error());
    auto node = graph->find(d.root);
    if (node != graph->end() && node->second.count("file")) {
      d.filter_child = node->second.at("file");
    }
    if (node != graph->end() && node->second.count("ssd")) {
      d.ssd_child = node->second.at("ssd");
      auto named = Qmp(uuid, "query-named-block-nodes");
      if (!named) return tl::unexpected(named.error());
      if (named->is_array()) {
        for (const auto& n : *named) {
          if (JsonString(n, "node-name") == d.ssd_child) d.ssd_file = JsonString(n, "file");
        }
      }
    }
  }
  return d;
}

Status LiveFilter::Insert(const std::string& uuid, const LiveDisk& disk,
                          const policy::Rules& rules, const std::string& node_name,
                          const policy::SsdSpec* ssd) {
  // A write-back node takes WRITE on its file child for itself, which the
  // device (still on that child) does not share: add it as write-through,
  // switch the device over, then reopen it as write-back.
  const bool write_back = rules.mode == policy::CacheMode::kWriteBack;
  policy::Rules first = rules;
  if (write_back) first.mode = policy::CacheMode::kWriteThrough;
  auto add = Qmp(uuid, "blockdev-add", policy::DriverOptions(first, node_name, disk.root, ssd));
  if (!add) return tl::unexpected(add.error());
  auto set = Qmp(uuid, "qom-set", json{{"path", disk.qdev}, {"property", "drive"},
                                       {"value", node_name}});
  if (!set) {
    // Leave the graph as it was.
    (void)Qmp(uuid, "blockdev-del", json{{"node-name", node_name}});
    return tl::unexpected(set.error());
  }
  if (write_back) {
    if (auto s = Reopen(uuid, node_name, disk.root, rules, ssd); !s) {
      return tl::unexpected(
          Annotate(s.error(), "switching the inserted filter to write-back (it caches as "
                              "write-through)"));
    }
  }
  return {};
}

Status LiveFilter::Reopen(const std::string& uuid, const std::string& node_name,
                          const std::string& child, const policy::Rules& rules,
                          const policy::SsdSpec* ssd) {
  auto r = Qmp(uuid, "blockdev-reopen",
               json{{"options", json::array({policy::DriverOptions(rules, node_name, child, ssd,
                                                                   true)})}});
  if (!r) return tl::unexpected(r.error());
  return {};
}

namespace {

// Reopens a write-back node as write-through: the driver writes every dirty
// block back in the reopen, so nothing is left to lose when it goes away.
Status CleanBeforeRemoval(LiveFilter& lf, const std::string& uuid, const std::string& node,
                          const std::string& child, const json& stats,
                          const std::string& ssd_child, const std::string& origin_id) {
  if (JsonString(stats, "mode") != "write-back") return {};
  policy::Rules clean;
  auto parsed = policy::RulesFromJson(
      json{{"block-size", JsonUint(stats, "block-size", 4096)},
           {"ram-size", JsonUint(stats, "ram-limit", uint64_t{256} << 20)},
           {"mode", "write-through"}});
  if (parsed) clean = *parsed;
  policy::SsdSpec ssd{"", ssd_child, origin_id};
  if (auto s = lf.Reopen(uuid, node, child, clean, ssd_child.empty() ? nullptr : &ssd); !s) {
    return tl::unexpected(Annotate(s.error(), "writing back dirty blocks before removal"));
  }
  return {};
}

}  // namespace

Result<bool> LiveFilter::HasParent(const std::string& uuid, const std::string& node_name) {
  auto g = Qmp(uuid, "x-debug-query-block-graph");
  if (!g) return tl::unexpected(g.error());
  auto parents = ParentCounts(*g);
  auto it = parents.find(node_name);
  if (it == parents.end()) {
    return Fail(ErrorCode::kNotFound, "QEMU has no node " + node_name);
  }
  return it->second > 0;
}

Result<std::vector<std::string>> LiveFilter::RemoveOrphan(const std::string& uuid,
                                                          const std::string& node_name,
                                                          const std::string& origin_id) {
  auto g = Qmp(uuid, "x-debug-query-block-graph");
  if (!g) return tl::unexpected(g.error());
  auto graph = ParseBlockGraph(*g);
  if (!graph) return tl::unexpected(graph.error());
  auto parents = ParentCounts(*g);
  auto node = graph->find(node_name);
  if (node == graph->end()) return Fail(ErrorCode::kNotFound, "QEMU has no node " + node_name);
  if (parents[node_name] > 0) {
    return Fail(ErrorCode::kFailedPrecondition, node_name + " is still in use");
  }
  const std::string child = node->second.count("file") ? node->second.at("file") : "";
  const std::string ssd = node->second.count("ssd") ? node->second.at("ssd") : "";
  auto st = Qmp(uuid, "query-blockstats", json{{"query-nodes", true}});
  if (st) {
    auto stats = ParseNodeStats(*st);
    if (stats.count(node_name) && !child.empty()) {
      if (auto s = CleanBeforeRemoval(*this, uuid, node_name, child, stats[node_name], ssd,
                                      origin_id);
          !s) {
        return tl::unexpected(s.error());
      }
    }
  }
  auto del = Qmp(uuid, "blockdev-del", json{{"node-name", node_name}});
  if (!del) return tl::unexpected(del.error());
  std::vector<std::string> removed{node_name};
  // libvirt's nodes of the disk, top-down: each is deleted once nothing
  // uses it any more (its parent went first).
  std::vector<std::string> todo;
  if (!child.empty()) todo.push_back(child);
  while (!todo.empty()) {
    std::string n = todo.front();
    todo.erase(todo.begin());
    if (n.rfind("libvirt-", 0) != 0) continue;
    if (std::find(removed.begin(), removed.end(), n) != removed.end()) continue;
    auto it = graph->find(n);
    if (!Qmp(uuid, "blockdev-del", json{{"node-name", n}})) continue;  // still used
    removed.push_back(n);
    if (it != graph->end()) {
      for (const auto& [role, c] : it->second) todo.push_back(c);
    }
  }
  return removed;
}

Status LiveFilter::Remove(const std::string& uuid, const LiveDisk& disk,
                          const std::string& origin_id) {
  if (!disk.has_filter || disk.filter_child.empty()) {
    return Fail(ErrorCode::kFailedPrecondition, "no hostcache filter under " + disk.qdev);
  }
  if (auto s = CleanBeforeRemoval(*this, uuid, disk.root, disk.filter_child, disk.stats,
                                  disk.ssd_child, origin_id);
      !s) {
    return s;
  }
  auto set = Qmp(uuid, "qom-set", json{{"path", disk.qdev}, {"property", "drive"},
                                       {"value", disk.filter_child}});
  if (!set) return tl::unexpected(set.error());
  auto del = Qmp(uuid, "blockdev-del", json{{"node-name", disk.root}});
  if (!del) return tl::unexpected(del.error());
  return {};
}

std::vector<std::string> CompareSettings(const json& stats, const policy::Rules& rules) {
  std::vector<std::string> diffs;
  std::string mode = JsonString(stats, "mode");
  if (mode != policy::ModeName(rules.mode)) {
    diffs.push_back("mode is " + (mode.empty() ? std::string("unknown") : mode) +
                    ", the policy says " + std::string(policy::ModeName(rules.mode)));
  }
  uint64_t bs = JsonUint(stats, "block-size");
  if (bs != rules.block_size) {
    diffs.push_back("block-size is " + FormatSize(bs) + ", the policy says " +
                    FormatSize(rules.block_size));
  }
  uint64_t ram = JsonUint(stats, "ram-limit");
  if (ram != rules.ram_size) {
    diffs.push_back("ram-size is " + FormatSize(ram) + ", the policy says " +
                    FormatSize(rules.ram_size));
  }
  // Options the driver may report under their own names.
  struct Num {
    const char* name;
    uint64_t want;
    bool size;
  } nums[] = {{"admit-after", rules.admit_after, false},
              {"seq-cutoff", rules.seq_cutoff, true},
              {"max-dirty-age-ms", rules.max_dirty_age_ms, false}};
  for (const auto& n : nums) {
    const json* f = JsonField(stats, n.name);
    if (!f || !f->is_number_integer()) continue;
    uint64_t got = JsonUint(stats, n.name);
    if (got != n.want) {
      diffs.push_back(std::string(n.name) + " is " +
                      (n.size ? FormatSize(got) : std::to_string(got)) + ", the policy says " +
                      (n.size ? FormatSize(n.want) : std::to_string(n.want)));
    }
  }
  if (const json* f = JsonField(stats, "max-dirty"); f && f->is_number_integer()) {
    // The policy's 0 means the driver's default, ram-size/2 but one block
    // at least.
    uint64_t want = rules.max_dirty != 0 ? rules.max_dirty
                                         : std::max(rules.ram_size / 2, rules.block_size);
    uint64_t got = JsonUint(stats, "max-dirty");
    if (got != want) {
      diffs.push_back("max-dirty is " + FormatSize(got) + ", the policy says " +
                      FormatSize(want));
    }
  }
  // The SSD tier: the driver reports ssd-* counters only with one.
  bool has_ssd = JsonField(stats, "ssd-size") != nullptr;
  if (rules.ssd_size > 0 && !has_ssd) {
    diffs.push_back("the filter has no SSD tier, the policy asks for " +
                    FormatSize(rules.ssd_size) + " in " + rules.ssd_dir);
  } else if (rules.ssd_size == 0 && has_ssd) {
    diffs.push_back("the filter has an SSD tier, the policy has none");
  } else if (has_ssd && rules.mode != policy::CacheMode::kPassThrough &&
             !JsonField(stats, "ssd-failed") && !JsonBool(stats, "ssd-active", true)) {
    diffs.push_back("the SSD tier is switched off after an SSD I/O error (ssd-errors " +
                    std::to_string(JsonUint(stats, "ssd-errors")) +
                    "); only the RAM tier caches");
  }
  return diffs;
}

std::string SsdFailure(const json& stats) {
  if (!JsonBool(stats, "ssd-failed", false)) return "";
  return "the SSD tier failed with an I/O error; writes go through to the origin; check the "
         "device, then re-apply the policy (assign it to the disk again; ssd-errors " +
         std::to_string(JsonUint(stats, "ssd-errors")) + ")";
}

std::vector<std::string> UnreportedOptions(const json& stats) {
  std::vector<std::string> out;
  for (const char* n : {"admit-after", "seq-cutoff", "max-dirty", "max-dirty-age-ms"}) {
    if (!JsonField(stats, n)) out.push_back(n);
  }
  return out;
}

}  // namespace hc::libvirt
