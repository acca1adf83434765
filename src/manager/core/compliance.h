// The compliance pass over one VM (docs/MANAGER.md, "Compliance"): makes
// the VM's persistent definition and its running QEMU match its
// assignments, then verifies the running filters from QEMU's block graph
// and records each disk's compliance with the reason, for a person.
//
// One pass (Apply) goes: load the assignments and their rules, plan the SSD
// tiers (SsdTiers::Plan), rewrite the definition (Definition::Apply), then
// per disk settle what needs no running QEMU (lost or stale tier, options
// the driver refuses, VM shut off) or repair and verify the running filter
// (insert, replace, reopen), and finally empty the clean tiers the running
// VM does not use and record the tiers the driver has just formatted.
//
// Ownership: borrows everything it is given; they must outlive it.
// Thread-safety: the caller holds the VM's lock (VmLocks) for the VM it
// checks; different VMs may be checked concurrently.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "manager/core/definition.h"
#include "manager/core/driver_check.h"
#include "manager/core/event_log.h"
#include "manager/core/ssd_tiers.h"
#include "manager/libvirt/live_filter.h"
#include "manager/store/store.h"

namespace hc::core {

// "write-back, 256 MiB RAM, 64 KiB blocks": a policy's rules for messages.
std::string DescribeRules(const policy::Rules& r);

// How a live filter's SSD tier differs from the wanted one `want` (nullptr:
// none) with rules `r` ("" = it does not).
std::string SsdDifference(const libvirt::LiveDisk& ins, const policy::SsdSpec* want,
                          const policy::Rules& r);

class ComplianceCheck {
 public:
  ComplianceCheck(store::Store& store, libvirt::LibvirtClient& lv, libvirt::LiveFilter& live,
                  EventLog& log, DriverCheck& driver, SsdTiers& tiers, Definition& definition,
                  const Clock& clock)
      : store_(store), lv_(lv), live_(live), log_(log), driver_(driver), tiers_(tiers),
        definition_(definition), clock_(clock) {}
  ComplianceCheck(const ComplianceCheck&) = delete;
  ComplianceCheck& operator=(const ComplianceCheck&) = delete;

  // Makes the VM's definition and running QEMU match its assignments and
  // records each one's compliance.  Fails only when the persistent
  // definition could not be written (or libvirt is unreachable:
  // kUnavailable).  `reapply`: the disk whose policy was just
  // (re)assigned: a running filter whose SSD tier failed is replaced,
  // which attaches it again.
  Status Apply(const libvirt::DomainRef& dom, const TierVm& vm, const std::string& reapply = "");

  // Records the compliance of `a` (checked now), with an event when it
  // changed.
  void SetState(store::Assignment a, store::Compliance state, const std::string& reason);

 private:
  struct Pass;  // one Apply: the VM, its assignments, rules, tiers, definition's verdicts
  struct Disk;  // one running disk within a pass

  // The assignments of the VM with their rules, its live XML when it runs.
  Status Load(Pass& p);
  // Handles the disk when nothing needs the running QEMU (lost or stale
  // tier, options the driver refuses, VM shut off); false: go on live.
  bool Settle(Pass& p, const store::Assignment& a);
  // Repairs and verifies the running filter of `a`.  kUnavailable only
  // when libvirt went away.
  Status CheckRunning(Pass& p, const store::Assignment& a);
  // Brings the running filter to the policy (insert, replace or reopen).
  void Repair(Pass& p, Disk& d);
  // The filter inserted over `under`, its SSD tier file first made the
  // policy's size; a clean tier is emptied first (the VM ran without it).
  Status Insert(Pass& p, Disk& d, const libvirt::LiveDisk& under);
  // The filter removed and put back over `under`.
  Status Replace(Pass& p, Disk& d, const std::string& under);
  // Records what `s` did (an event) or its error (d.op_error).
  void Note(Pass& p, Disk& d, const Status& s, const std::string& what,
            const std::string& why = "");
  // Reads the graph again and records the disk's compliance.
  void Verify(Pass& p, Disk& d);
  // Empties the disk's clean tier (SsdTiers::Empty), one event per disk
  // and pass.
  Result<bool> EmptyTier(Pass& p, const store::Assignment& a, SsdPlan& plan, uint64_t size,
                         const std::string& when);
  // Clean tiers the running VM does not have open are emptied.
  void EmptyUnused(Pass& p);
  // Tiers the running filters have just formatted are recorded, and the
  // definition opens them with ssd-create off from now on.
  void RecordFormatted(Pass& p);

  store::Store& store_;
  libvirt::LibvirtClient& lv_;
  libvirt::LiveFilter& live_;
  EventLog& log_;
  DriverCheck& driver_;
  SsdTiers& tiers_;
  Definition& definition_;
  const Clock& clock_;
};

}  // namespace hc::core
