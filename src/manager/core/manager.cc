#include "manager/core/manager.h"

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "migration/metadata.h"

namespace hc::core {

using libvirt::DiskInfo;
using libvirt::DomainInfo;
using libvirt::DomainRef;
using libvirt::FindDisk;
using nlohmann::json;
using store::Assignment;
using store::Compliance;

namespace {

// A disk known from its assignment only (its VM or the disk is gone).
DiskView AssignedDisk(const Assignment& a) {
  DiskInfo d;
  d.target = a.target;
  return DiskView{std::move(d), a};
}

std::string DiskList(const DomainInfo& info) {
  std::vector<std::string> t;
  for (const auto& d : info.disks) t.push_back(d.target);
  return t.empty() ? "none" : Join(t, ", ");
}

}  // namespace

Manager::Manager(store::Store& store, libvirt::LibvirtClient& lv, libvirt::QemuTools& tools,
                 const Clock& clock, ManagerConfig config, store::PolicyCatalogue* catalogue,
                 VmLocks* locks, const MigrationGate* migrating)
    : store_(store),
      local_catalogue_(store),
      catalogue_(catalogue ? catalogue : &local_catalogue_),
      lv_(lv),
      tools_(tools),
      live_(lv),
      clock_(clock),
      config_(std::move(config)),
      own_locks_(locks ? nullptr : std::make_unique<VmLocks>()),
      locks_(locks ? *locks : *own_locks_),
      migrating_(migrating ? *migrating : MigrationGate::None()),
      log_(store, clock),
      driver_(tools),
      tiers_(store, log_, clock, config_.ssd_roots, [this] { return QemuOwner(); }),
      definition_(lv, tools, driver_, tiers_, log_, config_.emulator),
      compliance_(store, lv, live_, log_, driver_, tiers_, definition_, clock) {}

void Manager::Log(const std::string& level, const std::string& vm, const std::string& target,
                  const std::string& action, const std::string& message) {
  log_.Log(level, vm, target, action, message);
}

const libvirt::ProcessOwner* Manager::QemuOwner() {
  std::lock_guard lock(owner_mu_);
  if (!qemu_owner_) {
    auto o = lv_.QemuProcessOwner();
    if (!o) return nullptr;  // asked again next time
    qemu_owner_ = *o;
  }
  return &*qemu_owner_;
}

std::optional<bool> Manager::OpenInRunningVm(const DomainRef& dom, const std::string& path) {
  if (!dom.active) return false;
  auto nodes = live_.Qmp(dom.uuid, "query-named-block-nodes");
  if (!nodes || !nodes->is_array()) return std::nullopt;
  for (const auto& n : *nodes) {
    if (JsonString(n, "file") == path) return true;
  }
  return false;
}

TierVm Manager::VmOf(const DomainRef& dom) {
  return TierVm{dom.uuid, dom.name, dom.active, dom.persistent,
                [this, dom](const std::string& path) { return OpenInRunningVm(dom, path); }};
}

Status Manager::ApplyVm(const DomainRef& dom, const std::string& reapply) {
  return compliance_.Apply(dom, VmOf(dom), reapply);
}

Status Manager::CheckJournalKept(const DomainRef& dom, const std::string& target,
                                 const policy::Rules* next, const std::string& then) {
  if (dom.active || !dom.persistent) return {};  // a running QEMU has the tier open
  auto xml = lv_.GetXml(dom.uuid, libvirt::kXmlInactive);
  if (!xml) return tl::unexpected(xml.error());
  auto installed = libvirt::ParseInstalledFilters(*xml);
  return tiers_.CheckJournalKept(VmOf(dom), installed ? &*installed : nullptr, target, next, then);
}

// ---- policies ---------------------------------------------------------------

Result<std::vector<policy::Policy>> Manager::ListPolicies() { return catalogue_->List(); }

Result<policy::Policy> Manager::GetPolicy(const std::string& name) {
  return catalogue_->Get(name);
}

Result<std::vector<Assignment>> Manager::PolicyUsers(const std::string& name) {
  auto all = store_.ListAssignments();
  if (!all) return tl::unexpected(all.error());
  std::vector<Assignment> out;
  for (auto& a : *all) {
    if (a.policy == name) out.push_back(std::move(a));
  }
  return out;
}

Result<policy::Policy> Manager::CheckSsdDir(policy::Policy p) const {
  if (p.rules.ssd_dir.empty()) return p;
  auto dir = config_.ssd_roots.Canonical(p.rules.ssd_dir);
  if (!dir) return tl::unexpected(dir.error());
  p.rules.ssd_dir = *dir;
  return p;
}

Status Manager::CreatePolicy(const policy::Policy& in) {
  if (auto s = policy::Validate(in); !s) return s;
  auto p = CheckSsdDir(in);
  if (!p) return tl::unexpected(p.error());
  if (auto s = catalogue_->Create(*p, clock_.NowMs()); !s) return s;
  log_.Log("info", "", "", "policy-create",
      "policy '" + p->name + "' created (" + DescribeRules(p->rules) + ")");
  return {};
}

Result<std::vector<Assignment>> Manager::UpdatePolicy(const policy::Policy& in) {
  if (auto s = policy::Validate(in); !s) return tl::unexpected(s.error());
  auto checked = CheckSsdDir(in);
  if (!checked) return tl::unexpected(checked.error());
  const policy::Policy& p = *checked;
  std::lock_guard plock(policy_mu_);
  auto old = store_.GetPolicy(p.name);
  if (!old) return tl::unexpected(old.error());
  if (auto before = PolicyUsers(p.name)) {
    // Not while a shut-off VM's tier may hold data the change would lose.
    for (const auto& a : *before) {
      auto dom = lv_.LookupDomain(a.vm_uuid);
      if (!dom) continue;  // checked again (and held) when applied
      if (auto s = CheckJournalKept(*dom, a.target, &p.rules, "change the policy"); !s) {
        return tl::unexpected(s.error());
      }
    }
  }
  {
    std::lock_guard block(budget_mu_);
    auto with = AssignedUsage(store_, &p);
    if (!with) return tl::unexpected(with.error());
    if (auto s = FitsPolicy(*with, p.name, Limits()); !s) return tl::unexpected(s.error());
    if (auto s = catalogue_->Update(p, clock_.NowMs()); !s) return tl::unexpected(s.error());
  }
  auto users = PolicyUsers(p.name);
  if (!users) return tl::unexpected(users.error());
  log_.Log("info", "", "", "policy-update",
      "policy '" + p.name + "' changed to " + DescribeRules(p.rules) + "; re-applying it to " +
          std::to_string(users->size()) + " disk(s)");
  std::set<std::string> vms;
  for (const auto& a : *users) vms.insert(a.vm_uuid);
  for (const auto& uuid : vms) {
    CheckVm(uuid);
    if (auto d = lv_.LookupDomain(uuid)) migration::RecordAssignments(*this, lv_, *d);
  }
  return PolicyUsers(p.name);
}

Status Manager::DeletePolicy(const std::string& name) {
  auto users = PolicyUsers(name);
  if (!users) return tl::unexpected(users.error());
  if (!users->empty()) {
    std::vector<std::string> where;
    for (const auto& a : *users) where.push_back(a.vm_name + "/" + a.target);
    return Fail(ErrorCode::kConflict, "policy '" + name + "' is assigned to " + Join(where, ", ") +
                                          "; unassign it from those disks first");
  }
  if (auto s = catalogue_->Delete(name); !s) return s;
  log_.Log("info", "", "", "policy-delete", "policy '" + name + "' deleted");
  return {};
}

// ---- budget -------------------------------------------------------------------

BudgetView Manager::Budget() {
  BudgetView b{config_.ram_budget, 0, config_.ssd_budget, 0};
  if (auto u = AssignedUsage(store_)) {
    b.ram_used = u->ram;
    b.ssd_used = u->ssd;
  }
  return b;
}

// ---- VMs ------------------------------------------------------------------------

Result<std::vector<Assignment>> Manager::AssignmentsOf(const std::string& uuid) {
  auto all = store_.ListAssignments();
  if (!all) return tl::unexpected(all.error());
  std::vector<Assignment> out;
  for (auto& a : *all) {
    if (a.vm_uuid == uuid) out.push_back(std::move(a));
  }
  return out;
}

Result<std::vector<VmView>> Manager::ListVms() {
  auto doms = lv_.ListDomains();
  if (!doms) return tl::unexpected(doms.error());
  auto all = store_.ListAssignments();
  if (!all) return tl::unexpected(all.error());
  std::vector<VmView> out;
  std::set<std::string> seen;
  for (const auto& d : *doms) {
    VmView v{d.uuid, d.name, true, d.active, d.persistent, {}};
    for (const auto& a : *all) {
      if (a.vm_uuid == d.uuid) v.disks.push_back(AssignedDisk(a));
    }
    seen.insert(d.uuid);
    out.push_back(std::move(v));
  }
  std::map<std::string, VmView> orphans;
  for (const auto& a : *all) {
    if (seen.count(a.vm_uuid)) continue;
    auto& v = orphans[a.vm_uuid];
    v.uuid = a.vm_uuid;
    v.name = a.vm_name;
    v.exists = false;
    v.disks.push_back(AssignedDisk(a));
  }
  for (auto& [_, v] : orphans) out.push_back(std::move(v));
  std::sort(out.begin(), out.end(),
            [](const VmView& a, const VmView& b) { return a.name < b.name; });
  return out;
}

Result<VmView> Manager::GetVm(const std::string& name_or_uuid) {
  auto dom = lv_.LookupDomain(name_or_uuid);
  auto all = store_.ListAssignments();
  if (!all) return tl::unexpected(all.error());
  if (!dom) {
    if (dom.error().code != ErrorCode::kNotFound) return tl::unexpected(dom.error());
    VmView v;
    v.exists = false;
    for (const auto& a : *all) {
      if (a.vm_uuid == name_or_uuid || a.vm_name == name_or_uuid) {
        v.uuid = a.vm_uuid;
        v.name = a.vm_name;
        v.disks.push_back(AssignedDisk(a));
      }
    }
    if (v.disks.empty()) return tl::unexpected(dom.error());
    return v;
  }
  auto xml = lv_.GetXml(dom->uuid, dom->active ? libvirt::kXmlLive : libvirt::kXmlInactive);
  if (!xml) return tl::unexpected(xml.error());
  auto info = libvirt::ParseDomain(*xml);
  if (!info) return tl::unexpected(info.error());
  VmView v{dom->uuid, dom->name, true, dom->active, dom->persistent, {}};
  std::set<std::string> shown;
  for (const auto& d : info->disks) {
    DiskView dv{d, std::nullopt};
    for (const auto& a : *all) {
      if (a.vm_uuid == dom->uuid && a.target == d.target) dv.assignment = a;
    }
    shown.insert(d.target);
    v.disks.push_back(std::move(dv));
  }
  for (const auto& a : *all) {
    if (a.vm_uuid == dom->uuid && !shown.count(a.target)) {
      v.disks.push_back(AssignedDisk(a));
    }
  }
  return v;
}

Result<Assignment> Manager::FindAssignment(const std::string& vm, const std::string& target) {
  std::string uuid;
  auto dom = lv_.LookupDomain(vm);
  if (dom) {
    uuid = dom->uuid;
  } else if (dom.error().code != ErrorCode::kNotFound) {
    return tl::unexpected(dom.error());
  }
  auto all = store_.ListAssignments();
  if (!all) return tl::unexpected(all.error());
  for (const auto& a : *all) {
    bool vm_match = uuid.empty() ? (a.vm_uuid == vm || a.vm_name == vm) : a.vm_uuid == uuid;
    if (vm_match && a.target == target) return a;
  }
  if (!dom) return tl::unexpected(dom.error());
  return Fail(ErrorCode::kNotFound,
              "disk " + target + " of VM '" + dom->name + "' has no policy assigned");
}

// ---- assignment -------------------------------------------------------------------

Result<Assignment> Manager::Assign(const std::string& vm, const std::string& target,
                                   const std::string& policy_name) {
  if (!libvirt::ValidTarget(target)) {
    return Fail(ErrorCode::kInvalidArgument,
                "'" + target + "' is not a disk target; use the name in the disk's <target "
                "dev=...>, such as vda or sdb");
  }
  auto pol = store_.GetPolicy(policy_name);
  if (!pol) {
    if (pol.error().code == ErrorCode::kNotFound) {
      return Fail(ErrorCode::kInvalidArgument,
                  "there is no policy named '" + policy_name + "'; GET /api/v1/policies lists them");
    }
    return tl::unexpected(pol.error());
  }
  auto dom = lv_.LookupDomain(vm);
  if (!dom) return tl::unexpected(dom.error());
  auto vlock = locks_.Lock(dom->uuid);
  // (Under the VM's lock: the migrating mark changes only under it.)
  if (auto s = NotMigrating(dom->uuid, dom->name); !s) return tl::unexpected(s.error());
  if (auto s = CheckAssignable(*dom, target); !s) return tl::unexpected(s.error());
  auto existing = store_.GetAssignment(dom->uuid, target);
  if (!existing) return tl::unexpected(existing.error());
  if (*existing) {
    if (auto s = CheckJournalKept(*dom, target, &pol->rules,
                                  "assign policy '" + policy_name + "'");
        !s) {
      return tl::unexpected(s.error());
    }
  }
  if (auto s = StoreAssignment(*dom, target, *pol, *existing); !s) {
    return tl::unexpected(s.error());
  }
  log_.Log("info", dom->name, target, "assign",
           "policy '" + policy_name + "' assigned" +
               (*existing ? " (was '" + (*existing)->policy + "')" : std::string()) + ": " +
               DescribeRules(pol->rules));
  if (auto s = ApplyVm(*dom, target); !s) {
    if (*existing) {
      (void)store_.PutAssignment(**existing);
    } else {
      (void)store_.DeleteAssignment(dom->uuid, target);
    }
    log_.Log("error", dom->name, target, "assign",
             "assignment of policy '" + policy_name + "' undone: " + s.error().message);
    return tl::unexpected(s.error());
  }
  migration::RecordAssignments(*this, lv_, *dom);  // travels with the VM
  auto now = store_.GetAssignment(dom->uuid, target);
  if (!now) return tl::unexpected(now.error());
  if (!*now) return Fail(ErrorCode::kInternal, "assignment vanished while being applied");
  return **now;
}

Status Manager::CheckAssignable(const DomainRef& dom, const std::string& target) {
  auto xml = lv_.GetXml(dom.uuid, dom.persistent ? libvirt::kXmlInactive : libvirt::kXmlLive);
  if (!xml) return tl::unexpected(xml.error());
  auto info = libvirt::ParseDomain(*xml);
  if (!info) return tl::unexpected(info.error());
  const DiskInfo* disk = FindDisk(*info, target);
  if (!disk) {
    return Fail(ErrorCode::kNotFound, "VM '" + dom.name + "' has no disk " + target +
                                          "; its disks are " + DiskList(*info));
  }
  if (disk->device != "disk") {
    return Fail(ErrorCode::kInvalidArgument,
                target + " of VM '" + dom.name + "' is a " + disk->device +
                    "; only disks (device='disk') can be cached");
  }
  if (disk->empty()) {
    return Fail(ErrorCode::kInvalidArgument, target + " of VM '" + dom.name + "' has no medium");
  }
  return {};
}

Status Manager::StoreAssignment(const DomainRef& dom, const std::string& target,
                                const policy::Policy& pol,
                                const std::optional<Assignment>& existing) {
  auto tier = store_.GetSsdTier(dom.uuid, target);
  if (!tier) return tl::unexpected(tier.error());
  std::lock_guard block(budget_mu_);
  auto others = AssignedUsage(store_, nullptr, dom.uuid, target);
  if (!others) return tl::unexpected(others.error());
  if (auto s = FitsDisk(*others, pol.rules, Limits(), dom.name + "/" + target); !s) return s;
  const std::string node = std::string(libvirt::kNodePrefix) + target;
  auto spec = MakeSsdSpec(pol.rules, dom.uuid, target, node);
  // The SSD tier file must be possible before anything refers to it (an
  // existing one, from an earlier assignment, is reused; a recorded one is
  // never made again here: if it is lost, the check says so).
  if (pol.rules.ssd_size > 0 && !(*tier && (*tier)->path == spec.filename)) {
    if (auto s = PrepareSsdFile(spec.filename, pol.rules.ssd_size, false, config_.ssd_roots,
                                QemuOwner());
        !s) {
      return Fail(s.error().code, "policy '" + pol.name + "' cannot be assigned: " +
                                      s.error().message + "; fix ssd-dir or choose another policy");
    }
  }
  Assignment a{dom.uuid, dom.name, target, pol.name, node, Compliance::kUnknown,
               "being applied", clock_.NowMs(), 0};
  if (existing) {
    a.state = existing->state;
    a.reason = existing->reason;
  }
  return store_.PutAssignment(a);
}

Result<std::optional<DomainInfo>> Manager::LiveInfo(const DomainRef& dom) {
  if (!dom.active) return std::optional<DomainInfo>();
  auto lx = lv_.GetXml(dom.uuid, libvirt::kXmlLive);
  if (!lx) return tl::unexpected(lx.error());
  auto li = libvirt::ParseDomain(*lx);
  if (!li) return tl::unexpected(li.error());
  return std::optional<DomainInfo>(std::move(*li));
}

Status Manager::Unassign(const std::string& vm, const std::string& target) {
  auto dom = lv_.LookupDomain(vm);
  if (!dom) {
    if (dom.error().code != ErrorCode::kNotFound) return tl::unexpected(dom.error());
    return ForgetAssignment(vm, target);
  }
  auto vlock = locks_.Lock(dom->uuid);
  if (auto s = NotMigrating(dom->uuid, dom->name); !s) return tl::unexpected(s.error());
  auto a = store_.GetAssignment(dom->uuid, target);
  if (!a) return tl::unexpected(a.error());
  if (!*a) {
    return Fail(ErrorCode::kNotFound,
                "disk " + target + " of VM '" + dom->name + "' has no policy assigned");
  }
  // Unassigning removes the filter from the definition: not while its SSD
  // tier may hold data only the filter's recovery writes back.
  if (auto s = CheckJournalKept(*dom, target, nullptr, "unassign"); !s) return s;
  auto live = LiveInfo(*dom);
  if (!live) return tl::unexpected(live.error());
  // 1. The definition, so the next start is uncached.
  if (dom->persistent) {
    if (auto s = RewriteWithout(*dom, target, *live); !s) return s;
  }
  // 2. The running VM: write back and remove the filter.
  if (*live) {
    if (auto s = RemoveLive(*dom, **live, **a); !s) return s;
  }
  if (auto s = store_.DeleteAssignment(dom->uuid, target); !s) return s;
  (void)store_.DeleteStats(dom->uuid, target);
  log_.Log("info", dom->name, target, "unassign", "policy '" + (*a)->policy + "' unassigned");
  migration::RecordAssignments(*this, lv_, *dom);  // travels with the VM
  ReleaseTier(*dom, live->has_value(), **a);
  return {};
}

Status Manager::ForgetAssignment(const std::string& vm, const std::string& target) {
  // The VM is gone: forget its assignment, under the VM's lock (a check of
  // the VM in progress would otherwise store it again).
  auto found = FindAssignment(vm, target);
  if (!found) return tl::unexpected(found.error());
  auto vlock = locks_.Lock(found->vm_uuid);
  auto a = store_.GetAssignment(found->vm_uuid, target);
  if (!a) return tl::unexpected(a.error());
  if (!*a) return Fail(ErrorCode::kNotFound, "disk " + target + " has no policy assigned");
  if (auto s = store_.DeleteAssignment((*a)->vm_uuid, target); !s) return s;
  (void)store_.DeleteStats((*a)->vm_uuid, target);
  log_.Log("info", (*a)->vm_name, target, "unassign",
           "assignment of policy '" + (*a)->policy + "' forgotten; the VM no longer exists");
  tiers_.ForgetFile(**a);
  return {};
}

Status Manager::RewriteWithout(const DomainRef& dom, const std::string& target,
                               const std::optional<DomainInfo>& live) {
  auto all = AssignmentsOf(dom.uuid);
  if (!all) return tl::unexpected(all.error());
  std::vector<Assignment> rest;
  std::map<std::string, policy::Rules> rules;
  for (const auto& x : *all) {
    if (x.target == target) continue;
    auto p = store_.GetPolicy(x.policy);
    if (!p) return tl::unexpected(p.error());
    rules[x.target] = p->rules;
    rest.push_back(x);
  }
  const TierVm vm = VmOf(dom);
  std::map<std::string, SsdPlan> ssd;
  for (const auto& x : rest) ssd[x.target] = tiers_.Plan(vm, x, rules[x.target], false);
  auto r = definition_.Apply(dom, vm, rest, rules, live, ssd);
  if (!r) return tl::unexpected(r.error());
  return {};
}

Status Manager::RemoveLive(const DomainRef& dom, const DomainInfo& live, const Assignment& a) {
  const std::string origin_id = dom.uuid + "/" + a.target;
  const DiskInfo* ld = FindDisk(live, a.target);
  if (!ld) {
    auto used = live_.HasParent(dom.uuid, a.node_name);
    if (!used || *used) return {};
    // The disk was hot-unplugged and its filter is still open.
    auto removed = live_.RemoveOrphan(dom.uuid, a.node_name, origin_id);
    if (!removed) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the filter of the detached disk could not be removed from the running VM: " +
                      removed.error().message + "; the assignment is kept, try again");
    }
    log_.Log("info", dom.name, a.target, "remove-live",
             "removed the filter of the detached disk and the nodes under it (" +
                 Join(*removed, ", ") + ")");
    return {};
  }
  auto ins = live_.Inspect(dom.uuid, ld->alias);
  if (!ins && ins.error().code == ErrorCode::kUnavailable) return tl::unexpected(ins.error());
  if (!ins || !ins->has_filter || ins->root != a.node_name) return {};
  if (auto s = live_.Remove(dom.uuid, *ins, origin_id); !s) {
    log_.Log("error", dom.name, a.target, "remove-live",
             "could not remove the filter from the running VM: " + s.error().message);
    compliance_.SetState(a, Compliance::kError,
                         "unassign failed: the filter could not be removed from the running VM (" +
                             s.error().message + "); the definition no longer has it");
    return Fail(ErrorCode::kFailedPrecondition,
                "the filter could not be removed from the running VM: " + s.error().message +
                    "; the assignment is kept, try again");
  }
  log_.Log("info", dom.name, a.target, "remove-live",
           "filter " + a.node_name + " written back and removed from the running VM");
  return {};
}

// Once the filter is gone from the running VM and the definition, its SSD
// tier file (clean copies only) goes too; never while QEMU has it.
void Manager::ReleaseTier(const DomainRef& dom, bool active, const Assignment& a) {
  bool attached = false;
  if (active) {
    auto still = live_.HasParent(dom.uuid, a.node_name);
    attached = still || still.error().code != ErrorCode::kNotFound;
  }
  if (!attached) {
    tiers_.ForgetFile(a);
    return;
  }
  (void)store_.DeleteSsdTier(dom.uuid, a.target);
  log_.Log("warning", dom.name, a.target, "ssd",
           "the SSD tier file is kept: the running VM may still have filter " + a.node_name +
               " open; delete it after the VM stops");
}

// ---- SSD tiers ---------------------------------------------------------------------

Result<std::optional<store::SsdTier>> Manager::SsdTierOf(const Assignment& a) {
  return tiers_.Record(a.vm_uuid, a.target);
}

Result<Assignment> Manager::ForgetSsdTier(const std::string& vm, const std::string& target) {
  auto a = FindAssignment(vm, target);
  if (!a) return tl::unexpected(a.error());
  {
    auto vlock = locks_.Lock(a->vm_uuid);
    if (auto s = NotMigrating(a->vm_uuid, a->vm_name); !s) return tl::unexpected(s.error());
    auto dom = lv_.LookupDomain(a->vm_uuid);
    std::optional<TierVm> tvm;
    if (dom) tvm = VmOf(*dom);
    if (auto s = tiers_.Forget(tvm ? &*tvm : nullptr, *a); !s) return tl::unexpected(s.error());
  }
  CheckVm(a->vm_uuid);
  auto now = store_.GetAssignment(a->vm_uuid, target);
  if (!now) return tl::unexpected(now.error());
  if (!*now) return Fail(ErrorCode::kNotFound, "disk " + target + " has no policy assigned");
  return **now;
}

// ---- checking ------------------------------------------------------------------------

void Manager::CheckVm(const std::string& uuid) {
  // Around a migration's switch-over the VM's nodes are inactive: it is
  // checked when the migration ends (migration::Coordinator).
  if (Migrating(uuid)) return;
  auto vlock = locks_.Lock(uuid);
  if (Migrating(uuid)) return;  // it began while this check waited for the VM
  auto as = AssignmentsOf(uuid);
  if (!as || as->empty()) return;
  auto dom = lv_.LookupDomain(uuid);
  if (!dom) {
    if (dom.error().code == ErrorCode::kNotFound) {
      for (const auto& a : *as) {
        compliance_.SetState(a, Compliance::kError,
                 "libvirt no longer has this VM (undefined or deleted outside hostcached); "
                 "unassign the policy to forget it");
      }
    } else if (dom.error().code != ErrorCode::kUnavailable) {
      spdlog::error("checking VM {}: {}", uuid, dom.error().message);
    }
    return;
  }
  Status s;
  try {
    s = ApplyVm(*dom);
  } catch (const std::exception& e) {
    // A reply or a definition of a shape nothing expected: reported on the
    // VM's disks; the next check tries again.
    s = Fail(ErrorCode::kInternal,
             std::string("checking the disk failed unexpectedly (") + e.what() +
                 "); see hostcached's log; the next check tries again");
    log_.Log("error", dom->name, "", "check", s.error().message);
  }
  if (!s) {
    if (s.error().code == ErrorCode::kUnavailable) return;
    // kFailedPrecondition: the VM's definition cannot take the filter as it
    // is (its emulator would lack what the VM needs), nothing broke.
    Compliance state = s.error().code == ErrorCode::kFailedPrecondition
                           ? Compliance::kNotCompliant
                           : Compliance::kError;
    for (const auto& a : *as) compliance_.SetState(a, state, s.error().message);
  }
}

void Manager::CheckAll() {
  auto all = store_.ListAssignments();
  if (!all) {
    spdlog::error("compliance check: {}", all.error().message);
    return;
  }
  std::set<std::string> vms;
  for (const auto& a : *all) vms.insert(a.vm_uuid);
  for (const auto& uuid : vms) {
    if (Migrating(uuid)) continue;  // checked when its migration ends
    CheckVm(uuid);
  }
}

Status Manager::NotMigrating(const std::string& uuid, const std::string& name) {
  if (!Migrating(uuid)) return {};
  return Fail(ErrorCode::kFailedPrecondition,
              "VM '" + name + "' is being live-migrated; try again when it has finished");
}

void Manager::OnDeviceRemoved(const std::string& uuid, const std::string& name,
                              const std::string& alias) {
  {
    auto vlock = locks_.Lock(uuid);
    auto as = AssignmentsOf(uuid);
    if (!as || as->empty()) return;
    for (const auto& a : *as) {
      // The unplugged disk's filter is the one nothing uses any more.
      auto used = live_.HasParent(uuid, a.node_name);
      if (!used || *used) continue;
      auto removed = live_.RemoveOrphan(uuid, a.node_name, uuid + "/" + a.target);
      if (!removed) {
        log_.Log("error", name, a.target, "hot-unplug",
            "device " + alias + " was detached from the running VM, but its filter " +
                a.node_name + " could not be removed: " + removed.error().message);
        continue;
      }
      log_.Log("info", name, a.target, "hot-unplug",
          "disk " + a.target + " (device " + alias +
              ") was detached from the running VM; removed its filter and the nodes libvirt "
              "left open under it (" + Join(*removed, ", ") +
              "); the assignment stays until the policy is unassigned");
    }
  }
  CheckVm(uuid);
}

void Manager::OnLifecycle(const std::string& uuid, const std::string& name,
                          libvirt::Lifecycle ev, const std::string& detail) {
  if (ev == libvirt::Lifecycle::kUndefined) {
    auto as = AssignmentsOf(uuid);
    if (as && !as->empty()) {
      std::vector<std::string> ts;
      for (const auto& a : *as) ts.push_back(a.target);
      log_.Log("warning", name, "", "undefine",
          "the VM's definition was removed from libvirt; the assignments of " + Join(ts, ", ") +
              " are kept (and reported) until their policies are unassigned, which also "
              "deletes their SSD tier files");
    }
  }
  switch (ev) {
    case libvirt::Lifecycle::kStarted:
    case libvirt::Lifecycle::kStopped:
    case libvirt::Lifecycle::kDefined:
    case libvirt::Lifecycle::kUndefined:
    case libvirt::Lifecycle::kMigratedAway:
    case libvirt::Lifecycle::kMigrationResumed:
      spdlog::debug("lifecycle event for {} ({}): checking its disks", name, uuid);
      CheckVm(uuid);
      break;
    case libvirt::Lifecycle::kDeviceRemoved:
      OnDeviceRemoved(uuid, name, detail);
      break;
    default:
      break;
  }
}

}  // namespace hc::core
