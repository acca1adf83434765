// Adopter: a VM that arrives with hostcache assignments in its metadata
// (metadata.h), by a live migration nobody told hostcached about (plain
// `virsh migrate`, oVirt, OpenStack) or found at start-up, has its disks
// adopted on this host: each carried disk without an assignment here gets
// the policy of the same name (Manager::Assign: budget, SSD tier file,
// the filter verified in QEMU's graph or put in, compliance recorded;
// statistics follow from the assignment).  When this host has no policy
// of that name, the disk keeps the rules it came with (its filter is left
// as it is) and an event says so, as does Unmanaged() (the API reports it
// as the disk's compliance).
//
// Thread-safety: every method is thread-safe; AdoptVm/AdoptAll block on
// libvirt (reconciler thread).  Borrows the manager and the client.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "manager/core/manager.h"
#include "manager/libvirt/libvirt_client.h"
#include "migration/metadata.h"

namespace hc::migration {

// A carried disk this host does not manage (its policy is missing here).
struct UnmanagedDisk {
  CarriedDisk carried;
  std::string reason;  // for a person: what is missing and what to do
};

class Adopter {
 public:
  Adopter(core::Manager& manager, libvirt::LibvirtClient& lv) : manager_(manager), lv_(lv) {}

  // Adopts the carried disks of one VM that have no assignment here.
  void AdoptVm(const std::string& uuid, const std::string& name);
  // AdoptVm for every VM libvirt knows (start-up, reconnection).
  void AdoptAll();

  // The disk's record when it came with a policy this host lacks.
  std::optional<UnmanagedDisk> Unmanaged(const std::string& uuid, const std::string& target);

 private:
  // Logs (level, target, action, message) unless the same was logged for
  // this VM already (periodic passes repeat the same findings).
  void LogOnce(const std::string& level, const std::string& vm, const std::string& target,
               const std::string& message);

  core::Manager& manager_;       // not owned
  libvirt::LibvirtClient& lv_;   // not owned
  std::mutex mu_;
  std::set<std::string> logged_;  // guarded by mu_
  // guarded by mu_: uuid -> target -> the disk
  std::map<std::string, std::map<std::string, UnmanagedDisk>> unmanaged_;
};

}  // namespace hc::migration
