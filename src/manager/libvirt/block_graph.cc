#include "manager/libvirt/block_graph.h"

namespace hc::libvirt {

using nlohmann::json;

Result<std::vector<BlockDevice>> ParseQueryBlock(const json& ret) {
  if (!ret.is_array()) return Fail(ErrorCode::kInternal, "query-block did not return a list");
  std::vector<BlockDevice> out;
  for (const auto& e : ret) {
    if (!e.is_object()) continue;
    BlockDevice d;
    d.qdev = e.value("qdev", "");
    if (e.contains("inserted") && e["inserted"].is_object()) {
      d.node_name = e["inserted"].value("node-name", "");
    }
    out.push_back(std::move(d));
  }
  return out;
}

const BlockDevice* FindDeviceByAlias(const std::vector<BlockDevice>& devs,
                                     const std::string& alias) {
  if (alias.empty()) return nullptr;
  const std::string base = "/machine/peripheral/" + alias;
  for (const auto& d : devs) {
    if (d.qdev == base || d.qdev.rfind(base + "/", 0) == 0) return &d;
  }
  return nullptr;
}

Result<BlockGraph> ParseBlockGraph(const json& ret) {
  if (!ret.is_object() || !ret.contains("nodes") || !ret.contains("edges")) {
    return Fail(ErrorCode::kInternal, "x-debug-query-block-graph returned no nodes/edges");
  }
  std::map<int64_t, std::string> names;
  BlockGraph g;
  for (const auto& n : ret["nodes"]) {
    if (n.value("type", "") != "block-driver") continue;
    names[n.value("id", int64_t{-1})] = n.value("name", "");
    g[n.value("name", "")];
  }
  for (const auto& e : ret["edges"]) {
    auto p = names.find(e.value("parent", int64_t{-1}));
    auto c = names.find(e.value("child", int64_t{-1}));
    if (p == names.end() || c == names.end()) continue;
    g[p->second][e.value("name", "")] = c->second;
  }
  return g;
}

std::map<std::string, int> ParentCounts(const json& ret) {
  std::map<std::string, int> out;
  if (!ret.is_object() || !ret.contains("nodes") || !ret.contains("edges")) return out;
  std::map<int64_t, std::string> names;
  for (const auto& n : ret["nodes"]) {
    if (n.value("type", "") != "block-driver") continue;
    names[n.value("id", int64_t{-1})] = n.value("name", "");
    out[n.value("name", "")];
  }
  for (const auto& e : ret["edges"]) {
    auto c = names.find(e.value("child", int64_t{-1}));
    if (c != names.end()) out[c->second]++;
  }
  return out;
}

std::map<std::string, json> ParseNodeStats(const json& ret) {
  std::map<std::string, json> out;
  if (!ret.is_array()) return out;
  for (const auto& s : ret) {
    if (!s.is_object() || !s.contains("node-name") || !s.contains("driver-specific")) continue;
    out[s["node-name"].get<std::string>()] = s["driver-specific"];
  }
  return out;
}

std::string QmpCommand(const std::string& name, const json& args) {
  json cmd{{"execute", name}};
  if (!args.is_null()) cmd["arguments"] = args;
  return cmd.dump();
}

}  // namespace hc::libvirt
