// Manager: the facade of the policy engine, for the HTTP API, the
// reconciler thread and the statistics collector: policies, assignments
// within the host's cache budget, views of VMs and disks, and the entry
// points of the compliance checks.  The work is done by its parts:
// budget.h (pure budget arithmetic), ssd_tiers.h (the SSD tier lifecycle),
// definition.h (the persistent definition with its filters), compliance.h
// (the check of one VM), driver_check.h, event_log.h and vm_locks.h.
//
// Concurrency: every public method is thread-safe and may block on libvirt
// and QEMU (call it from worker threads, never from the HTTP I/O thread).
// Operations on one VM are serialised by its lock (VmLocks); the budget check
// and the assignment write are atomic under budget_mu_.
//
// Ownership: Manager borrows the store, libvirt client, QEMU tools and clock;
// they must outlive it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "manager/core/budget.h"
#include "manager/core/compliance.h"
#include "manager/core/definition.h"
#include "manager/core/driver_check.h"
#include "manager/core/event_log.h"
#include "manager/core/migration_gate.h"
#include "manager/core/peers.h"
#include "manager/core/ssd_files.h"
#include "manager/core/ssd_tiers.h"
#include "manager/core/vm_locks.h"
#include "manager/libvirt/domain_xml.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/libvirt/live_filter.h"
#include "manager/libvirt/qemu_tools.h"
#include "manager/policy/policy.h"
#include "manager/store/policy_catalogue.h"
#include "manager/store/store.h"

namespace hc::core {

struct ManagerConfig {
  std::string emulator;             // QEMU with the hostcache driver ("" = leave <emulator>)
  uint64_t ram_budget = 0;          // bytes of host RAM all caches together may use
  uint64_t ssd_budget = 0;          // bytes of SSD all caches together may use
  // Where policies' ssd-dir may lie; tier files are made only there.
  SsdRoots ssd_roots;
};

struct DiskView {
  libvirt::DiskInfo disk;
  std::optional<store::Assignment> assignment;
};

struct VmView {
  std::string uuid;
  std::string name;
  bool exists = true;  // false: libvirt no longer knows it (only assignments are left)
  bool active = false;
  bool persistent = false;
  std::vector<DiskView> disks;
};

struct BudgetView {
  uint64_t ram_budget = 0, ram_used = 0, ssd_budget = 0, ssd_used = 0;
};

class Manager {
 public:
  // `catalogue`: where policies are created, changed and deleted (borrowed;
  // nullptr: the store's own, a single host).  Reads are the store's
  // either way (a catalogue keeps its copy there).  `locks`: the VM locks
  // it shares with the migration module (nullptr: its own); `migrating`:
  // which VMs are being live-migrated (nullptr: none ever is;
  // src/migration's Registry in hostcached).  All borrowed.
  Manager(store::Store& store, libvirt::LibvirtClient& lv, libvirt::QemuTools& tools,
          const Clock& clock, ManagerConfig config, store::PolicyCatalogue* catalogue = nullptr,
          VmLocks* locks = nullptr, const MigrationGate* migrating = nullptr);
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Policies.
  Result<std::vector<policy::Policy>> ListPolicies();
  Result<policy::Policy> GetPolicy(const std::string& name);
  Result<std::vector<store::Assignment>> PolicyUsers(const std::string& name);
  // A policy's ssd-dir must lie under one of config.ssd_roots
  // (kInvalidArgument naming them otherwise); it is stored canonical
  // (SsdRoots::Canonical), so read the policy back for what was stored.
  Status CreatePolicy(const policy::Policy& p);
  // Stores the new rules and re-applies them to every disk that uses the
  // policy; returns those disks' assignments afterwards.
  Result<std::vector<store::Assignment>> UpdatePolicy(const policy::Policy& p);
  Status DeletePolicy(const std::string& name);
  store::PolicyCatalogue& Catalogue() { return *catalogue_; }
  // A policy changed on another host (already in the local copy): logged,
  // and re-applied to this host's disks that use it (core/catalogue_sync.cc).
  void OnCatalogueChange(const store::PolicyChange& change);

  // VMs and disks.
  Result<std::vector<VmView>> ListVms();  // disks without XML details
  Result<VmView> GetVm(const std::string& name_or_uuid);
  Result<store::Assignment> Assign(const std::string& vm, const std::string& target,
                                   const std::string& policy_name);
  Status Unassign(const std::string& vm, const std::string& target);
  // The assignment of a disk (kNotFound when none), by VM name or UUID.
  Result<store::Assignment> FindAssignment(const std::string& vm, const std::string& target);
  // The disk's SSD tier record, if hostcached made a tier for it.
  Result<std::optional<store::SsdTier>> SsdTierOf(const store::Assignment& a);
  // The operator gives up the disk's SSD tier that is lost (its file
  // missing, blank, or holding another disk's tier although the driver had
  // formatted it for this disk): the record goes, with whatever write-back
  // data the tier held, and the disk is checked again, which makes a new
  // blank tier the driver formats when the filter next opens.  kNotFound
  // when no tier is recorded; kFailedPrecondition while the tier file is
  // intact (nothing to give up: a running VM's tier, or one that is
  // there).  A stale tier (SsdPlan::stale: not closed cleanly, and the VM
  // ran without its filter) is given up too, its file deleted.  Returns
  // the assignment after the check.
  Result<store::Assignment> ForgetSsdTier(const std::string& vm, const std::string& target);

  BudgetView Budget();
  const ManagerConfig& config() const { return config_; }
  libvirt::LibvirtClient& libvirt() { return lv_; }
  bool LibvirtConnected() { return lv_.IsAlive(); }

  // Compliance: re-check (and repair what can be repaired) one VM's disks,
  // or every VM with assignments.
  void CheckVm(const std::string& uuid);
  void CheckAll();
  // A lifecycle event from libvirt (called on the reconciler thread).
  // `detail`: the device alias of kDeviceRemoved.
  void OnLifecycle(const std::string& uuid, const std::string& name, libvirt::Lifecycle ev,
                   const std::string& detail = "");
  // A device of a running VM was hot-unplugged: a filter left without its
  // device is removed with the nodes libvirt left open under it, the event
  // log says so, and the VM is checked (its assignment is reported).
  void OnDeviceRemoved(const std::string& uuid, const std::string& name,
                       const std::string& alias);
  // While a VM migrates (the migration module's Registry says so), checks
  // and API changes leave it alone: its nodes are inactive around
  // switch-over (and on the destination until it resumes).  Every
  // operation on the VM tests it under the VM's lock.
  bool Migrating(const std::string& uuid) { return migrating_.Migrating(uuid); }
  // kFailedPrecondition, with a message naming VM `name`, while it migrates.
  Status NotMigrating(const std::string& uuid, const std::string& name);

  // The assignments of one VM (by UUID).
  Result<std::vector<store::Assignment>> AssignmentsOf(const std::string& uuid);

  // The parts the migration module works with (src/migration).
  VmLocks& vm_locks() { return locks_; }
  DriverCheck& driver_check() { return driver_; }
  const SsdRoots& ssd_roots() const { return config_.ssd_roots; }

  // Appends to the event log (and the daemon log).
  void Log(const std::string& level, const std::string& vm, const std::string& target,
           const std::string& action, const std::string& message);

 private:
  // The running or defined VM as the tier lifecycle sees it.
  TierVm VmOf(const libvirt::DomainRef& dom);
  // Whether the running VM's QEMU has `path` open (a node of it names the
  // file); nullopt when it cannot be asked.
  std::optional<bool> OpenInRunningVm(const libvirt::DomainRef& dom, const std::string& path);
  // ComplianceCheck::Apply for `dom`; the caller holds its VM lock.
  Status ApplyVm(const libvirt::DomainRef& dom, const std::string& reapply = "");
  // SsdTiers::CheckJournalKept for a shut-off persistent VM (reads its
  // definition's filters); {} for a running or transient one.
  Status CheckJournalKept(const libvirt::DomainRef& dom, const std::string& target,
                          const policy::Rules* next, const std::string& then);
  // Who QEMU runs as (libvirt's DAC label; asked once), nullptr unknown.
  // The pointer stays valid for the manager's life.
  const libvirt::ProcessOwner* QemuOwner();
  // Assign's steps, the VM locked: the disk `target` of the VM's
  // definition that can be cached, and the assignment stored within budget
  // (its SSD tier file made possible first).
  Status CheckAssignable(const libvirt::DomainRef& dom, const std::string& target);
  Status StoreAssignment(const libvirt::DomainRef& dom, const std::string& target,
                         const policy::Policy& pol,
                         const std::optional<store::Assignment>& existing);
  // Unassign's steps: of a VM libvirt no longer knows; the filter of a
  // running VM written back and removed (kFailedPrecondition keeps the
  // assignment); the SSD tier file given up once no QEMU has it open.
  Status ForgetAssignment(const std::string& vm, const std::string& target);
  Status RemoveLive(const libvirt::DomainRef& dom, const libvirt::DomainInfo& live,
                    const store::Assignment& a);
  void ReleaseTier(const libvirt::DomainRef& dom, bool active, const store::Assignment& a);
  // The rest of the VM's definition rewritten without disk `target`.
  Status RewriteWithout(const libvirt::DomainRef& dom, const std::string& target,
                        const std::optional<libvirt::DomainInfo>& live);
  // The running VM's XML (nullopt when it is shut off).
  Result<std::optional<libvirt::DomainInfo>> LiveInfo(const libvirt::DomainRef& dom);
  // `p` with its ssd-dir made canonical; kInvalidArgument when it is not
  // under an SSD root.
  Result<policy::Policy> CheckSsdDir(policy::Policy p) const;
  BudgetLimits Limits() const { return BudgetLimits{config_.ram_budget, config_.ssd_budget}; }

  store::Store& store_;
  store::LocalCatalogue local_catalogue_;
  store::PolicyCatalogue* catalogue_;  // local_catalogue_ or the one given
  libvirt::LibvirtClient& lv_;
  libvirt::QemuTools& tools_;
  libvirt::LiveFilter live_;
  const Clock& clock_;
  const ManagerConfig config_;
  std::unique_ptr<VmLocks> own_locks_;  // when not given one
  VmLocks& locks_;
  const MigrationGate& migrating_;
  EventLog log_;
  DriverCheck driver_;
  SsdTiers tiers_;
  Definition definition_;
  ComplianceCheck compliance_;

  std::mutex budget_mu_;  // held across a budget check and the write it allows
  std::mutex policy_mu_;  // serialises policy edits with the re-application
  std::mutex owner_mu_;
  std::optional<libvirt::ProcessOwner> qemu_owner_;  // guarded by owner_mu_; set once
};

}  // namespace hc::core
