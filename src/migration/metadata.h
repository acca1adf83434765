// The assignment that travels with a VM: each cached disk's policy and the
// rules in force when it was assigned, kept in the domain's <metadata> in
// hostcache's own XML namespace (virDomainSetMetadata, live and
// persistent).  libvirt carries the domain XML, metadata included, on every
// migration, so the destination's hostcached can adopt the disks
// (Adopter, adopt.h) with no call to the source's API.
//
//   <hostcache:assignments xmlns:hostcache="https://hostcache.dev/xmlns/assignments/1"
//                          version="1">
//     <hostcache:disk target="vda" policy="wb" node="hc-vda">{"mode":"write-back",...}</hostcache:disk>
//   </hostcache:assignments>
//
// The element's text is the policy's rules as the API writes them
// (policy::RulesToJson).  The metadata is input from another host (or from
// whoever can edit the domain XML): DecodeAssignments checks everything
// (size, names, targets, rules within the driver's limits) and refuses the
// whole document with a message naming the problem.
//
// Plain functions, thread-safe.  WriteAssignmentMetadata may block on
// libvirt (call it from worker threads).
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "manager/core/manager.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/policy/policy.h"
#include "manager/store/store.h"

namespace hc::migration {

inline constexpr const char* kMetadataUri = "https://hostcache.dev/xmlns/assignments/1";
inline constexpr const char* kMetadataPrefix = "hostcache";
// Larger metadata is refused unread (a VM has at most a few dozen disks).
inline constexpr size_t kMaxMetadataBytes = 64 * 1024;
inline constexpr size_t kMaxCarriedDisks = 256;

// One disk's assignment as it travels.
struct CarriedDisk {
  std::string target;  // "vda" (libvirt::ValidTarget)
  std::string policy;  // the policy's name (policy::ValidateName)
  std::string node;    // the filter's node name on the host it came from
  policy::Rules rules;  // the rules in force there (policy::ValidateRules)

  bool operator==(const CarriedDisk&) const = default;
};

// The metadata element (without the namespace declaration libvirt adds:
// virDomainSetMetadata takes the prefix and URI separately).
std::string EncodeAssignments(const std::vector<CarriedDisk>& disks);

// Parses what virDomainGetMetadata returns (with or without a namespace
// prefix).  kInvalidArgument naming the problem for anything not written
// by EncodeAssignments within the limits above.
Result<std::vector<CarriedDisk>> DecodeAssignments(const std::string& xml);

// The VM's assignments on this host as they travel (with their policies'
// rules), by target.
std::vector<CarriedDisk> CurrentAssignments(core::Manager& manager, const std::string& uuid);

// Writes the VM's assignments on this host (with their policies' rules)
// into its metadata; a failure is logged as an event ("metadata") on the
// VM, and the assignment stands.  Called by the manager, under the VM's
// lock, after an assignment or a policy's rules changed.
void RecordAssignments(core::Manager& manager, libvirt::LibvirtClient& lv,
                       const libvirt::DomainRef& dom);

// Writes `disks` into the domain's metadata, live when it runs and
// persistent when it has a definition (an empty list removes the element).
Status WriteAssignmentMetadata(libvirt::LibvirtClient& lv, const libvirt::DomainRef& dom,
                               const std::vector<CarriedDisk>& disks);

// The domain's carried assignments (live when it runs, else its
// definition's); an empty list when it has none.
Result<std::vector<CarriedDisk>> ReadAssignmentMetadata(libvirt::LibvirtClient& lv,
                                                        const libvirt::DomainRef& dom);

}  // namespace hc::migration
