// Changing the block graph of a running domain, through QMP passthrough
// (TECHNICAL-NOTES §4):
//   insert:  blockdev-add the filter over the device's current root node,
//            then qom-set the device's `drive` to the filter;
//   change:  blockdev-reopen with the new options (block-size is fixed: a
//            new block size means remove + insert);
//   remove:  switch a write-back filter to write-through first (the driver
//            writes dirty blocks back in reopen), qom-set `drive` back to
//            the child, blockdev-del the filter.
// The guest keeps running throughout.
//
// Thread-safety: stateless apart from the client; callers serialise
// operations on one domain.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "manager/libvirt/block_graph.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/policy/policy.h"

namespace hc::libvirt {

struct LiveDisk {
  std::string qdev;          // QOM path of the device
  std::string root;          // the device's root node now
  bool has_filter = false;   // root is a hostcache node
  std::string filter_child;  // when has_filter: the node under it
  nlohmann::json stats;      // when has_filter: its driver-specific statistics
};

class LiveFilter {
 public:
  explicit LiveFilter(LibvirtClient& lv) : lv_(lv) {}

  // Finds the device with id `alias` and what is under it.
  Result<LiveDisk> Inspect(const std::string& uuid, const std::string& alias);

  Status Insert(const std::string& uuid, const LiveDisk& disk, const policy::Rules& rules,
                const std::string& node_name);
  Status Reopen(const std::string& uuid, const std::string& node_name, const std::string& child,
                const policy::Rules& rules);
  Status Remove(const std::string& uuid, const LiveDisk& disk);

  // Runs one QMP command; returns its "return" member.
  Result<nlohmann::json> Qmp(const std::string& uuid, const std::string& name,
                             const nlohmann::json& args = nullptr);

 private:
  LibvirtClient& lv_;  // not owned; outlives this
};

// Differences between a filter's reported settings (driver-specific
// statistics) and the rules, as phrases ("mode is write-around, policy says
// write-through").  Empty when they agree.
std::vector<std::string> CompareSettings(const nlohmann::json& stats, const policy::Rules& rules);

}  // namespace hc::libvirt
