// The persistent definition of a VM with its filters (recipe A of
// docs/LIBVIRT.md): rewritten from the VM's assignments, each filter with
// its SSD tier; the emulator set to the project's QEMU (checked first
// against its domain capabilities); read back, and never written again
// when libvirt did not keep it (that would loop through the Defined
// event).
//
// Ownership: borrows libvirt, the QEMU tools, the driver check, the SSD
// tiers and the event log; they must outlive it.
// Thread-safety: the caller holds the VM's lock; different VMs may be
// written concurrently.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "manager/core/driver_check.h"
#include "manager/core/event_log.h"
#include "manager/core/ssd_tiers.h"
#include "manager/libvirt/domain_xml.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/libvirt/qemu_tools.h"
#include "manager/store/store.h"

namespace hc::core {

class Definition {
 public:
  // `emulator`: QEMU with the driver ("" = leave <emulator>).
  Definition(libvirt::LibvirtClient& lv, libvirt::QemuTools& tools, DriverCheck& driver,
             SsdTiers& tiers, EventLog& log, std::string emulator)
      : lv_(lv), tools_(tools), driver_(driver), tiers_(tiers), log_(log),
        emulator_(std::move(emulator)) {}
  Definition(const Definition&) = delete;
  Definition& operator=(const Definition&) = delete;

  // Rewrites the persistent definition of `dom` from the assignments `as`
  // (with their policies' `rules`, by target), each filter with the SSD
  // tier of `ssd` (by target; absent = none).  `live`: the running VM's
  // XML, read, when it runs (backing chains are taken from it).  Returns,
  // per target, why the filter is not in it ("" = it is).
  Result<std::map<std::string, std::string>> Apply(
      const libvirt::DomainRef& dom, const TierVm& vm, const std::vector<store::Assignment>& as,
      const std::map<std::string, policy::Rules>& rules,
      const std::optional<libvirt::DomainInfo>& live, const std::map<std::string, SsdPlan>& ssd);

 private:
  struct Plan;  // the filters to write and why others are missing
  // The filter of assignment `a` in the definition `info`, or why not.
  void PlanDisk(const TierVm& vm, const store::Assignment& a, const policy::Rules& r,
                const std::map<std::string, SsdPlan>& ssd, Plan& plan);
  // Defines `updated` and reads it back; records what libvirt did not keep.
  Status Define(const libvirt::DomainRef& dom, const std::vector<store::Assignment>& as,
                const std::string& updated,
                const std::map<std::string, libvirt::InstalledFilter>& after,
                std::map<std::string, std::string>& missing);
  // Marks every assignment without a reason as dropped by libvirt.
  static void NotKept(const std::vector<store::Assignment>& as,
                      std::map<std::string, std::string>& missing);
  // Events for disks that left the definition, and the definition's update.
  void Report(const libvirt::DomainRef& dom, const std::vector<store::Assignment>& as,
              const std::string& xml, const libvirt::DomainInfo& info,
              const std::map<std::string, libvirt::InstalledFilter>& after,
              const std::string& emulator_set);

  libvirt::LibvirtClient& lv_;
  libvirt::QemuTools& tools_;
  DriverCheck& driver_;
  SsdTiers& tiers_;
  EventLog& log_;
  const std::string emulator_;
  std::mutex mu_;
  // uuid -> a definition libvirt accepted but did not keep our filters in;
  // not written again (this would loop through the "defined" event).
  std::map<std::string, std::string> rejected_xml_;  // guarded by mu_
};

}  // namespace hc::core
