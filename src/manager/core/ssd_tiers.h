// The lifecycle of the disks' SSD tiers (docs/MANAGER.md, "The SSD tier"
// and "The tier's record"): the plan of a disk's tier for one check (its
// file prepared, its record brought up to date, lost and stale tiers
// found), emptying a clean tier whose copies may be stale, what a shut-off
// VM's tier not closed cleanly forbids (journal risk), and giving a tier up
// (unassigning, or the operator's forget).
//
// It knows nothing of libvirt: a VM is a TierVm (its identity, whether it
// runs, and a way to ask whether its QEMU has a file open), so it is tested
// with real tier files and a real store, without libvirt fakes
// (tests/manager/ssd_tiers_test.cc).
//
// Ownership: borrows the store, the event log, the clock and the roots;
// they must outlive it.
// Thread-safety: the caller holds the VM's lock (VmLocks) for the VM whose
// tiers it works on; different VMs may be worked on concurrently.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "manager/core/event_log.h"
#include "manager/core/ssd_files.h"
#include "manager/libvirt/domain_xml.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/policy/policy.h"
#include "manager/store/store.h"

namespace hc::core {

// A VM as the tier lifecycle sees it.
struct TierVm {
  std::string uuid, name;
  bool active = false;      // running
  bool persistent = false;  // has a persistent definition
  // Whether the running QEMU has `path` open (one of its nodes names the
  // file); nullopt when it cannot be asked.  Only called when `active`.
  std::function<std::optional<bool>(const std::string& path)> open;

  std::optional<bool> OpenInQemu(const std::string& path) const {
    if (!active) return false;
    return open ? open(path) : std::nullopt;
  }
};

// The SSD tier a disk gets in one check.
struct SsdPlan {
  std::optional<policy::SsdSpec> spec;  // the tier to attach; none when no tier or unusable
  std::string problem;                  // why the policy's tier is not attached ("" = fine)
  // The recorded tier is lost (why, for a person): the file is not made
  // again; `spec` names it with ssd-create off, so the VM cannot start
  // without it until it is restored or forgotten (SsdTiers::Forget).
  std::string lost;
  // The tier's journal may be older than the disk (why, for a person): its
  // file was not closed cleanly, and the running VM was found without the
  // filter (the record keeps that, SsdTier::stale).  `spec` is none:
  // neither the running VM nor the definition gets the filter until the
  // operator gives the tier up (SsdTiers::Forget).
  std::string stale;
};

// Whether `path` is a tier file hostcached made for this disk (its name).
bool OurSsdFile(const std::string& path, const std::string& uuid, const std::string& target);

// How `next` (nullptr: no filter at all) would lose what the definition's
// filter `held` (its options), whose tier was not closed cleanly, may have
// in its tier ("" = it keeps it: the same tier file, write-back when it
// was, the same block size).  `next_file`: the tier file of `next` ("" none).
std::string JournalRisk(const nlohmann::json& held, const policy::Rules* next,
                        const std::string& next_file);

class SsdTiers {
 public:
  // `qemu_owner`: who QEMU runs as (nullptr: unknown), asked when a file is
  // made; the pointer it returns stays valid while the SsdTiers lives.
  SsdTiers(store::Store& store, EventLog& log, const Clock& clock, const SsdRoots& roots,
           std::function<const libvirt::ProcessOwner*()> qemu_owner)
      : store_(store), log_(log), clock_(clock), roots_(roots), qemu_owner_(std::move(qemu_owner)) {}
  SsdTiers(const SsdTiers&) = delete;
  SsdTiers& operator=(const SsdTiers&) = delete;

  const SsdRoots& roots() const { return roots_; }

  // The tier disk `a` gets with rules `r`: its file prepared (made when
  // missing; resized only when `may_replace`, i.e. no QEMU has it open)
  // and its record brought up to date (Prepare); lost or stale when so.
  SsdPlan Plan(const TierVm& vm, const store::Assignment& a, const policy::Rules& r,
               bool may_replace);

  // Prepares the tier file `spec` of disk `target` (PrepareSsdFile) unless
  // the recorded tier is lost (then `*lost` says why and nothing is made),
  // and records it: a file the driver formatted for the disk is recorded
  // as formatted.  A record of another file moves to this one once that
  // file holds nothing the disk lacks (deleting it); while it may (state
  // kOpen), the record stays with it.  Returns whether the driver may
  // format the file (ssd-create).
  Result<bool> Prepare(const TierVm& vm, const std::string& target, const policy::SsdSpec& spec,
                       uint64_t size, bool may_replace, std::string* lost);

  // Whether the disk's recorded tier `t` is stale: marked so, or its file
  // not closed cleanly while the running VM does not have it open (then it
  // is marked).  Returns why, for a person ("" = it is not).
  std::string Stale(const TierVm& vm, store::SsdTier t);

  // Empties the clean tier `plan.spec` of disk `target`, whose copies may
  // be stale because the guest may have written to the disk while no
  // filter had the tier open: the file is deleted and made blank again with
  // its record (not formatted), for the driver to format afresh.  `when`
  // completes the event's sentence; `event`: log an ssd-emptied event.
  // Sets and returns the tier's ssd-create.
  Result<bool> Empty(const TierVm& vm, const std::string& target, SsdPlan& plan, uint64_t size,
                     const std::string& when, bool event);

  // Deletes a tier file of the disk (RemoveSsdFile) and, when it is the
  // recorded one, its record.
  Status RemoveFile(const std::string& uuid, const std::string& target, const std::string& path);

  // The definition's filter of `target` (its options) when it must stay as
  // it is: the VM is shut off and the filter's SSD tier file was not
  // closed cleanly (it may hold written data only the driver's recovery
  // writes back).  `installed`: the definition's filters (nullptr unknown).
  std::optional<nlohmann::json> Held(
      const TierVm& vm, const std::map<std::string, libvirt::InstalledFilter>* installed,
      const std::string& target);
  // Why the held filter's tier file keeps it, for messages: " was not
  // closed cleanly (...)" or " cannot be read as a tier (...)".
  static std::string HeldState(const std::string& file);

  // kFailedPrecondition (409) when the VM is shut off, the definition's
  // filter of `target` has an SSD tier not closed cleanly (Held), and
  // `next` (nullptr: unassigning) would lose what it may hold
  // (JournalRisk).  `then`: what the caller can do after the VM ran.
  Status CheckJournalKept(const TierVm& vm,
                          const std::map<std::string, libvirt::InstalledFilter>* installed,
                          const std::string& target, const policy::Rules* next,
                          const std::string& then);

  // Deletes the SSD tier file of an unassigned disk (its filter is gone)
  // and its record.
  void ForgetFile(const store::Assignment& a);

  // The operator gives up the disk's recorded tier (ForgetSsdTier of the
  // API): kNotFound when none is recorded; kFailedPrecondition while the
  // file is there and holds the disk's tier.  A stale tier is deleted with
  // its file.  `vm`: the VM (nullptr when libvirt does not know it).
  Status Forget(const TierVm* vm, const store::Assignment& a);

  // The disk's tier record, if any.
  Result<std::optional<store::SsdTier>> Record(const std::string& uuid,
                                               const std::string& target) {
    return store_.GetSsdTier(uuid, target);
  }

 private:
  void Lost(const TierVm& vm, const std::string& target, const std::string& path,
            const std::string& how, std::string* lost);
  // Moves the record `t` of another file to `spec`'s once the old file
  // holds clean copies at most; false: the record stays with the old file.
  Result<bool> MoveRecord(const TierVm& vm, const std::string& target,
                          const policy::SsdSpec& spec, std::optional<store::SsdTier>& t,
                          std::string* lost);

  store::Store& store_;
  EventLog& log_;
  const Clock& clock_;
  const SsdRoots& roots_;
  std::function<const libvirt::ProcessOwner*()> qemu_owner_;
};

}  // namespace hc::core
