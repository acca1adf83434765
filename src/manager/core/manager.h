// Manager: the policy engine.  It owns the rules of what hostcached does:
// storing policies, assigning them to VM disks within the host's cache
// budget, putting the filter into the running VM and its persistent
// definition, and checking compliance.  The HTTP API, the reconciler thread
// and the statistics collector call it.
//
// Concurrency: every public method is thread-safe and may block on libvirt
// and QEMU (call it from worker threads, never from the HTTP I/O thread).
// Operations on one VM are serialised by a per-VM mutex; the budget check
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
#include "manager/core/peers.h"
#include "manager/core/ssd_files.h"
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
  // Before a live migration it drives, the dirty data of write-back disks
  // is written back during pre-copy (see Migrate): for at most this long
  // (0: not at all; the driver writes it back at switch-over), until each
  // disk has at most drain_threshold dirty bytes, polled every
  // drain_poll_ms.
  int64_t drain_timeout_ms = 30000;
  uint64_t drain_threshold = 1 << 20;
  int64_t drain_poll_ms = 200;
  // The hosts Migrate may send VMs to (by name).
  Peers peers;
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
  // either way (a catalogue keeps its copy there).
  Manager(store::Store& store, libvirt::LibvirtClient& lv, libvirt::QemuTools& tools,
          const Clock& clock, ManagerConfig config, store::PolicyCatalogue* catalogue = nullptr);
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
  // While a VM migrates (set by the migration coordinator), checks and API
  // changes leave it alone: its nodes are inactive around switch-over (and
  // on the destination until it resumes).  Forgotten after an hour.  The
  // mark changes under the VM's lock, and every operation on the VM tests
  // it under that lock (so SetMigrating waits for one in progress; callers
  // must not hold the VM's lock).
  void SetMigrating(const std::string& uuid, bool migrating);
  bool Migrating(const std::string& uuid);
  // kFailedPrecondition, with a message naming VM `name`, while it migrates.
  Status NotMigrating(const std::string& uuid, const std::string& name);

  // The domain XML to pass as the destination XML of a live migration of a
  // running VM (virsh migrate --xml, VIR_MIGRATE_PARAM_DEST_XML): its
  // migratable live XML with the filters of its assignments added (recipe
  // A, node names as the destination will number them; the SSD tier at the
  // same path, which must exist there).  A filter inserted live is only in
  // the persistent definition, not in the live XML libvirt would send.
  Result<std::string> MigrationXml(const std::string& vm);

  // Migrates a running VM live to another libvirtd with MigrationXml() as
  // its destination XML (the filters of its cached disks start there with
  // it).  `req.destination` names a configured peer (config.peers; else
  // kInvalidArgument saying how to configure one), whose libvirt URI is
  // used; `req.migrate_uri` must be "" or tcp://HOST[:PORT] of the peer's
  // migration host (Peers::MigrateUri).  First the write-back disks are drained while the guest runs: each
  // filter is reopened with max-dirty-age-ms 1 (its other options as the
  // policy says) and its dirty-bytes polled until at most
  // drain_threshold, or `drain_timeout_ms` passed (-1: the configured
  // one; 0: no drain), so the switch-over has little left to write back.
  // The migration XML carries the policy's own value.  When the migration
  // fails, the drained filters get the policy's max-dirty-age-ms back.
  // Blocks for the drain and the migration; the VM is marked migrating
  // from the start (checks, which would re-assert the policy's value,
  // leave it alone), not locked.  Returns the seconds the migration took
  // (without the drain).
  Result<double> Migrate(const std::string& vm, libvirt::MigrateRequest req,
                         int64_t drain_timeout_ms = -1);

  // The assignments of one VM (by UUID).
  Result<std::vector<store::Assignment>> AssignmentsOf(const std::string& uuid);

  // Appends to the event log (and the daemon log).
  void Log(const std::string& level, const std::string& vm, const std::string& target,
           const std::string& action, const std::string& message);

 private:
  std::mutex& VmMutex(const std::string& uuid);
  // MigrationXml of `dom`; the caller holds VmMutex(dom.uuid).
  Result<std::string> MigrationXmlLocked(const libvirt::DomainRef& dom);
  // Makes the VM's definition and running QEMU match its assignments and
  // records each one's compliance.  Caller holds VmMutex(dom.uuid).  Fails
  // only when the persistent definition could not be written.
  // `reapply`: the disk whose policy was just (re)assigned: a running
  // filter whose SSD tier failed is replaced, which attaches it again.
  Status ApplyVm(const libvirt::DomainRef& dom, const std::string& reapply = "");
  // The SSD tier a disk gets: its file prepared (created when missing;
  // resized only when `may_replace`, i.e. no QEMU has it open) and its
  // record brought up to date (PrepareTier).
  struct SsdPlan {
    std::optional<policy::SsdSpec> spec;  // the tier to attach; none when no tier or unusable
    std::string problem;                  // why the policy's tier is not attached ("" = fine)
    // The recorded tier is lost (why, for a person): the file is not made
    // again; `spec` names it with ssd-create off, so the VM cannot start
    // without it until it is restored or forgotten (ForgetSsdTier).
    std::string lost;
    // The tier's journal may be older than the disk (why, for a person):
    // its file was not closed cleanly, and the running VM was found without
    // the filter (the record keeps that, SsdTier::stale).  `spec` is none:
    // neither the running VM nor the definition gets the filter until the
    // operator gives the tier up (ForgetSsdTier).
    std::string stale;
  };
  SsdPlan PlanSsd(const libvirt::DomainRef& dom, const store::Assignment& a,
                  const policy::Rules& r, bool may_replace);
  // Prepares the tier file `spec` of disk `target` (PrepareSsdFile) unless
  // the recorded tier is lost (then `*lost` says why and nothing is made),
  // and records it: a file the driver formatted for the disk is recorded
  // as formatted.  A record of another file moves to this one once that
  // file holds nothing the disk lacks (deleting it); while it may (state
  // kOpen), the record stays with it.  Returns whether the driver may
  // format the file (ssd-create).
  Result<bool> PrepareTier(const libvirt::DomainRef& dom, const std::string& target,
                           const policy::SsdSpec& spec, uint64_t size, bool may_replace,
                           std::string* lost);
  // Whether the running VM's QEMU has `path` open (a node of it names the
  // file); nullopt when it cannot be asked.
  std::optional<bool> OpenInRunningVm(const libvirt::DomainRef& dom, const std::string& path);
  // Whether the disk's recorded tier `t` is stale: marked so, or its file
  // not closed cleanly while the running VM does not have it open (then it
  // is marked).  Returns why, for a person ("" = it is not).
  std::string StaleTier(const libvirt::DomainRef& dom, store::SsdTier t);
  // Deletes a tier file of the disk (RemoveSsdFile) and, when it is the
  // recorded one, its record.
  Status RemoveTierFile(const std::string& uuid, const std::string& target,
                        const std::string& path);
  // kFailedPrecondition (409) when the VM is shut off, the definition's
  // filter of `target` has an SSD tier not closed cleanly (HeldFilter), and
  // `next` (nullptr: unassigning) would lose what it may hold (JournalRisk).
  // `then`: what the caller can do after the VM ran ("unassign").
  Status CheckJournalKept(const libvirt::DomainRef& dom, const std::string& target,
                          const policy::Rules* next, const std::string& then);
  // Rewrites the persistent definition from the assignments (already
  // loaded), each filter with the SSD tier of `ssd` (by target; absent =
  // none).  Returns, per target, why the filter is not in it ("" = it is).
  Result<std::map<std::string, std::string>> ApplyPersistent(
      const libvirt::DomainRef& dom, const std::vector<store::Assignment>& as,
      const std::map<std::string, policy::Rules>& rules,
      const std::optional<libvirt::DomainInfo>& live,
      const std::map<std::string, SsdPlan>& ssd);
  // Who QEMU runs as (libvirt's DAC label; asked once), nullptr unknown.
  // The pointer stays valid for the manager's life.
  const libvirt::ProcessOwner* QemuOwner();
  // The definition's filter of `target` when it must stay as it is: the VM
  // is shut off and the filter's SSD tier file was not closed cleanly (it
  // may hold written data only the driver's recovery writes back).
  std::optional<nlohmann::json> HeldFilter(
      const libvirt::DomainRef& dom,
      const std::map<std::string, libvirt::InstalledFilter>* installed,
      const std::string& target);
  // A write-back filter drained before a migration (src/manager/core/drain.cc).
  struct DrainedDisk {
    std::string target, node, child, ssd_child;
    policy::Rules rules;  // the policy's, as the filter ran before the drain
    uint64_t before = 0, after = 0;  // dirty-bytes
  };
  std::vector<DrainedDisk> DrainWriteBack(const libvirt::DomainRef& dom, int64_t timeout_ms);
  void RestoreDrained(const libvirt::DomainRef& dom, const std::vector<DrainedDisk>& drained);
  // Marks the VM migrating unless it already is; false when it was.  The
  // caller holds VmMutex(uuid).
  bool BeginMigrating(const std::string& uuid);
  // Deletes the SSD tier file of an unassigned disk (its filter is gone)
  // and its record.
  void ForgetSsdFile(const store::Assignment& a);
  // After the VM left by live migration (its filters wrote everything back
  // and dropped their tiers' content at the hand-over), its tiers here hold
  // nothing: their records go, and their files unless still in use.
  void ReleaseMigratedTiers(const std::string& uuid, const std::string& name);
  void SetState(store::Assignment a, store::Compliance state, const std::string& reason);
  Status CheckBudget(const std::string& uuid, const std::string& target,
                     const policy::Rules& rules, const std::string& vm_name);
  Status CheckBudgetForPolicy(const policy::Policy& p);
  Status CheckOptionsCached(const policy::Rules& r);
  // `p` with its ssd-dir made canonical; kInvalidArgument when it is not
  // under an SSD root.
  Result<policy::Policy> CheckSsdDir(policy::Policy p) const;

  store::Store& store_;
  store::LocalCatalogue local_catalogue_;
  store::PolicyCatalogue* catalogue_;  // local_catalogue_ or the one given
  libvirt::LibvirtClient& lv_;
  libvirt::QemuTools& tools_;
  libvirt::LiveFilter live_;
  const Clock& clock_;
  const ManagerConfig config_;

  std::mutex map_mu_;
  std::map<std::string, std::unique_ptr<std::mutex>> vm_mu_;  // guarded by map_mu_
  std::mutex budget_mu_;  // held across a budget check and the write it allows
  std::mutex policy_mu_;  // serialises policy edits with the re-application
  std::mutex define_mu_;
  // uuid -> a definition libvirt accepted but did not keep our filters in;
  // not written again (this would loop through the "defined" event).
  std::map<std::string, std::string> rejected_xml_;  // guarded by define_mu_
  std::mutex owner_mu_;
  std::optional<libvirt::ProcessOwner> qemu_owner_;  // guarded by owner_mu_; set once
  std::mutex migrating_mu_;
  // uuid -> when its migration was seen to start; guarded by migrating_mu_.
  std::map<std::string, int64_t> migrating_;
  static constexpr int64_t kMigrationHoldMs = 3600 * 1000;
  std::mutex options_mu_;
  std::map<std::string, Status> options_cache_;  // rules JSON -> driver verdict
};

}  // namespace hc::core
