#include "manager/libvirt/block_graph.h"

#include "common/json_fields.h"

namespace hc::libvirt {

using nlohmann::json;

Result<std::vector<BlockDevice>> ParseQueryBlock(const json& ret) {
  if (!ret.is_array()) return Fail(ErrorCode::kInternal, "query-block did not return a list");
  std::vector<BlockDevice> out;
  for (const auto& e : ret) {
    if (!e.is_object()) continue;
    BlockDevice d;
    d.qdev = JsonString(e, "qdev");
    if (const json* ins = JsonField(e, "inserted")) d.node_name = JsonString(*ins, "node-name");
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

namespace {

// x-debug-query-block-graph's block-driver nodes (id -> name) and its
// edges; false when the reply is not of that shape.
bool GraphParts(const json& ret, std::map<int64_t, std::string>* names, const json** edges) {
  const json* nodes = JsonField(ret, "nodes");
  *edges = JsonField(ret, "edges");
  if (!nodes || !*edges || !nodes->is_array() || !(*edges)->is_array()) return false;
  for (const auto& n : *nodes) {
    if (JsonString(n, "type") != "block-driver") continue;
    (*names)[JsonInt(n, "id", -1)] = JsonString(n, "name");
  }
  return true;
}

}  // namespace

Result<BlockGraph> ParseBlockGraph(const json& ret) {
  std::map<int64_t, std::string> names;
  const json* edges = nullptr;
  if (!GraphParts(ret, &names, &edges)) {
    return Fail(ErrorCode::kInternal, "x-debug-query-block-graph returned no nodes/edges");
  }
  BlockGraph g;
  for (const auto& [_, name] : names) g[name];
  for (const auto& e : *edges) {
    auto p = names.find(JsonInt(e, "parent", -1));
    auto c = names.find(JsonInt(e, "child", -1));
    if (p == names.end() || c == names.end()) continue;
    g[p->second][JsonString(e, "name")] = c->second;
  }
  return g;
}

std::map<std::string, int> ParentCounts(const json& ret) {
  std::map<std::string, int> out;
  std::map<int64_t, std::string> names;
  const json* edges = nullptr;
  if (!GraphParts(ret, &names, &edges)) return out;
  for (const auto& [_, name] : names) out[name];
  for (const auto& e : *edges) {
    auto c = names.find(JsonInt(e, "child", -1));
    if (c != names.end()) out[c->second]++;
  }
  return out;
}

std::map<std::string, json> ParseNodeStats(const json& ret) {
  std::map<std::string, json> out;
  if (!ret.is_array()) return out;
  for (const auto& s : ret) {
    const json* name = JsonField(s, "node-name");
    const json* ds = JsonField(s, "driver-specific");
    if (!name || !name->is_string() || !ds || !ds->is_object()) continue;
    out[name->get<std::string>()] = *ds;
  }
  return out;
}

Result<std::string> QmpReturn(const std::string& reply) {
  json j = json::parse(reply, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Fail(ErrorCode::kInternal, "unreadable QMP reply from QEMU");
  }
  if (const json* err = JsonField(j, "error")) {
    return Fail(ErrorCode::kFailedPrecondition,
                "QEMU: " + JsonString(*err, "desc", "error without description"));
  }
  const json* ret = JsonField(j, "return");
  return ret ? ret->dump() : std::string("{}");
}

std::string QmpCommand(const std::string& name, const json& args) {
  json cmd{{"execute", name}};
  if (!args.is_null()) cmd["arguments"] = args;
  // (Names QEMU reported are valid UTF-8; anything else would be replaced,
  // never thrown over.)
  return cmd.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace hc::libvirt
