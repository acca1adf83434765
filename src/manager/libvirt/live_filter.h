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
  std::string ssd_child;     // when has_filter: the node of its `ssd` child ("" none)
  std::string ssd_file;      // that node's file name (query-named-block-nodes)
};

class LiveFilter {
 public:
  explicit LiveFilter(LibvirtClient& lv) : lv_(lv) {}

  // Finds the device with id `alias` and what is under it.
  Result<LiveDisk> Inspect(const std::string& uuid, const std::string& alias);

  // `ssd`: the SSD tier to attach (a file node added inline), or nullptr.
  Status Insert(const std::string& uuid, const LiveDisk& disk, const policy::Rules& rules,
                const std::string& node_name, const policy::SsdSpec* ssd = nullptr);
  // `ssd` must name the node's current ssd child (it cannot change live).
  Status Reopen(const std::string& uuid, const std::string& node_name, const std::string& child,
                const policy::Rules& rules, const policy::SsdSpec* ssd = nullptr);
  // `origin_id`: the node's origin-id, needed by the write-back reopen of a
  // node with an SSD tier (an option that cannot return to its default).
  Status Remove(const std::string& uuid, const LiveDisk& disk, const std::string& origin_id = "");
  // Deletes a filter node that lost its device (a hot-unplugged disk) and
  // then the nodes under it that libvirt left open (named libvirt-*, no
  // other parent).  Returns the nodes deleted, the filter first.
  Result<std::vector<std::string>> RemoveOrphan(const std::string& uuid,
                                                const std::string& node_name,
                                                const std::string& origin_id);
  // Whether node `node_name` exists and whether anything (a device or
  // another node) uses it.  kNotFound when there is no such node.
  Result<bool> HasParent(const std::string& uuid, const std::string& node_name);

  // Runs one QMP command; returns its "return" member.
  Result<nlohmann::json> Qmp(const std::string& uuid, const std::string& name,
                             const nlohmann::json& args = nullptr);

 private:
  LibvirtClient& lv_;  // not owned; outlives this
};

// Differences between a filter's reported settings (driver-specific
// statistics) and the rules, as phrases ("mode is write-around, the policy
// says write-through").  Empty when they agree.  Compared: mode, block-size,
// ram-size, whether there is an SSD tier; and admit-after, seq-cutoff,
// max-dirty, max-dirty-age-ms when the driver reports them (older builds
// do not: see UnreportedOptions).  A tier switched off (ssd-active false)
// only from a driver that does not report ssd-failed (see SsdFailure).
std::vector<std::string> CompareSettings(const nlohmann::json& stats, const policy::Rules& rules);

// Why the filter's SSD tier is out of use for good ("" = it is not, or the
// driver does not say): ssd-failed, an I/O error of the tier.  Nothing a
// reopen repairs; a new filter attaches the tier again.
std::string SsdFailure(const nlohmann::json& stats);

// The options of the rules that the statistics do not report, so a check
// cannot see them (it re-asserts them with blockdev-reopen instead).
std::vector<std::string> UnreportedOptions(const nlohmann::json& stats);

}  // namespace hc::libvirt
