#include "manager/libvirt/live_filter.h"

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
  if (it != stats.end() && it->second.value("driver", "") == "hostcache") {
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
  }
  return d;
}

Status LiveFilter::Insert(const std::string& uuid, const LiveDisk& disk,
                          const policy::Rules& rules, const std::string& node_name) {
  auto add = Qmp(uuid, "blockdev-add", policy::DriverOptions(rules, node_name, disk.root));
  if (!add) return tl::unexpected(add.error());
  auto set = Qmp(uuid, "qom-set", json{{"path", disk.qdev}, {"property", "drive"},
                                       {"value", node_name}});
  if (!set) {
    // Leave the graph as it was.
    (void)Qmp(uuid, "blockdev-del", json{{"node-name", node_name}});
    return tl::unexpected(set.error());
  }
  return {};
}

Status LiveFilter::Reopen(const std::string& uuid, const std::string& node_name,
                          const std::string& child, const policy::Rules& rules) {
  auto r = Qmp(uuid, "blockdev-reopen",
               json{{"options", json::array({policy::DriverOptions(rules, node_name, child)})}});
  if (!r) return tl::unexpected(r.error());
  return {};
}

Status LiveFilter::Remove(const std::string& uuid, const LiveDisk& disk) {
  if (!disk.has_filter || disk.filter_child.empty()) {
    return Fail(ErrorCode::kFailedPrecondition, "no hostcache filter under " + disk.qdev);
  }
  if (disk.stats.value("mode", "") == "write-back") {
    // Write dirty blocks back before the node goes away.
    policy::Rules clean;
    auto parsed = policy::RulesFromJson(
        json{{"block-size", disk.stats.value("block-size", uint64_t{4096})},
             {"ram-size", disk.stats.value("ram-limit", uint64_t{256} << 20)},
             {"mode", "write-through"}});
    if (parsed) clean = *parsed;
    if (auto s = Reopen(uuid, disk.root, disk.filter_child, clean); !s) {
      return tl::unexpected(Annotate(s.error(), "writing back dirty blocks before removal"));
    }
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
  std::string mode = stats.value("mode", "");
  if (mode != policy::ModeName(rules.mode)) {
    diffs.push_back("mode is " + (mode.empty() ? std::string("unknown") : mode) +
                    ", the policy says " + std::string(policy::ModeName(rules.mode)));
  }
  uint64_t bs = stats.value("block-size", uint64_t{0});
  if (bs != rules.block_size) {
    diffs.push_back("block-size is " + FormatSize(bs) + ", the policy says " +
                    FormatSize(rules.block_size));
  }
  uint64_t ram = stats.value("ram-limit", uint64_t{0});
  if (ram != rules.ram_size) {
    diffs.push_back("ram-size is " + FormatSize(ram) + ", the policy says " +
                    FormatSize(rules.ram_size));
  }
  return diffs;
}

}  // namespace hc::libvirt
