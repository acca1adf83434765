// QEMU's block graph as QMP reports it, and the QMP commands that change it.
//
// Parsers take the "return" member of a QMP reply, which comes from QEMU:
// whatever its shape, they never throw (a field of an unexpected type is
// taken as missing).  Pure functions; thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace hc::libvirt {

// One entry of query-block: a device and the root node of its medium.
struct BlockDevice {
  std::string qdev;       // "/machine/peripheral/ua-disk0/virtio-backend"
  std::string node_name;  // root node ("libvirt-1-format", "hc-vda"); "" when no medium
};

Result<std::vector<BlockDevice>> ParseQueryBlock(const nlohmann::json& ret);

// The device whose QOM path belongs to the device with id `alias`.
const BlockDevice* FindDeviceByAlias(const std::vector<BlockDevice>& devs,
                                     const std::string& alias);

// x-debug-query-block-graph: node-name -> (child role -> child node-name).
using BlockGraph = std::map<std::string, std::map<std::string, std::string>>;
Result<BlockGraph> ParseBlockGraph(const nlohmann::json& ret);

// x-debug-query-block-graph: block-driver node-name -> how many parents it
// has (devices' block backends and other nodes).
std::map<std::string, int> ParentCounts(const nlohmann::json& ret);

// query-blockstats {"query-nodes": true}: node-name -> driver-specific
// statistics, for the nodes whose driver reports some.
std::map<std::string, nlohmann::json> ParseNodeStats(const nlohmann::json& ret);

// A QMP reply text as QEMU's monitor sends it -> its "return" member as JSON
// text ("{}" when it has none); a reply with "error" is kFailedPrecondition
// with QEMU's description, an unreadable one kInternal.
Result<std::string> QmpReturn(const std::string& reply);

// A QMP command text: {"execute": name, "arguments": args}.
std::string QmpCommand(const std::string& name, const nlohmann::json& args = nullptr);

}  // namespace hc::libvirt
