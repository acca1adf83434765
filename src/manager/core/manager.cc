#include "manager/core/manager.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "manager/libvirt/domain_caps.h"
#include "migration/metadata.h"

namespace hc::core {

using libvirt::DiskInfo;
using libvirt::DomainInfo;
using libvirt::DomainRef;
using nlohmann::json;
using store::Assignment;
using store::Compliance;

namespace {

std::string Describe(const policy::Rules& r) {
  return std::string(policy::ModeName(r.mode)) + ", " + FormatSize(r.ram_size) + " RAM, " +
         FormatSize(r.block_size) + " blocks";
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// A disk known from its assignment only (its VM or the disk is gone).
DiskView AssignedDisk(const Assignment& a) {
  DiskInfo d;
  d.target = a.target;
  return DiskView{std::move(d), a};
}

const DiskInfo* FindDisk(const DomainInfo& info, const std::string& target) {
  for (const auto& d : info.disks) {
    if (d.target == target) return &d;
  }
  return nullptr;
}

std::string DiskList(const DomainInfo& info) {
  std::vector<std::string> t;
  for (const auto& d : info.disks) t.push_back(d.target);
  return t.empty() ? "none" : Join(t, ", ");
}

// What the stored assignments take of the budgets.
struct Usage {
  uint64_t ram = 0, ssd = 0;  // bytes, each disk at its policy's sizes
  int disks = 0;              // assignments counted
  int users = 0;              // of them, those of `changed`'s policy
};

// Sums the assignments' cache sizes, those of `changed`'s policy at
// `changed`'s rules (nullptr: as stored), without the disk
// `skip_uuid`/`skip_target` (none when empty).
Result<Usage> AssignedUsage(store::Store& store, const policy::Policy* changed = nullptr,
                            const std::string& skip_uuid = "",
                            const std::string& skip_target = "") {
  auto all = store.ListAssignments();
  auto pols = store.ListPolicies();
  if (!all) return tl::unexpected(all.error());
  if (!pols) return tl::unexpected(pols.error());
  std::map<std::string, policy::Rules> rules;
  for (const auto& p : *pols) rules[p.name] = p.rules;
  if (changed) rules[changed->name] = changed->rules;
  Usage u;
  for (const auto& a : *all) {
    if (a.vm_uuid == skip_uuid && a.target == skip_target) continue;
    u.ram += rules[a.policy].ram_size;
    u.ssd += rules[a.policy].ssd_size;
    u.disks++;
    u.users += changed && a.policy == changed->name;
  }
  return u;
}

// Whether `path` is a tier file hostcached made for this disk.
bool OurSsdFile(const std::string& path, const std::string& uuid, const std::string& target) {
  const std::string tail = "/" + uuid + "-" + target + kSsdSuffix;
  return path.size() > tail.size() &&
         path.compare(path.size() - tail.size(), tail.size(), tail) == 0;
}

// Whether a tier file the driver had formatted for `origin_id` is gone:
// missing, blank, or formatted for another origin ("" = it is there, or
// cannot be read).
// How an operator gives up a disk's SSD tier (CLI and API).
std::string ForgetHint(const std::string& vm, const std::string& target) {
  return "'hostcachectl disk forget-tier " + vm + " " + target + "' (POST /api/v1/vms/" + vm +
         "/disks/" + target + "/ssd-tier/forget)";
}

// Why the definition's filter keeps the tier file `file` (HeldFilter), for
// messages: it was not closed cleanly, or it cannot be read as a tier.
std::string HeldTierState(const std::string& file) {
  const SsdFileInfo f = ReadSsdFile(file);
  if (f.unreadable) {
    return " cannot be read as a tier (" + f.problem +
           "; a damaged tier, or something put in its place: restore the file, or move it "
           "away if it holds no tier)";
  }
  return " was not closed cleanly (the VM or the host stopped abruptly)";
}

std::string TierGone(const SsdFileInfo& f, const std::string& origin_id) {
  if (f.state == SsdFileState::kMissing) return "is missing";
  if (f.state == SsdFileState::kBlank) return "is blank (no superblock of the driver)";
  if (!f.unreadable && f.origin_id != origin_id) {
    return "holds the SSD tier of another origin ('" + f.origin_id + "')";
  }
  return "";
}

// The tier file of a filter's options, given inline ("" none).
std::string SsdFileOf(const json& options) {
  const json* ssd = JsonField(options, "ssd");
  return ssd ? JsonString(*ssd, "filename") : "";
}

// How `next` (nullptr: no filter at all) would lose what the definition's
// filter `held`, whose tier was not closed cleanly, may have in its tier
// ("" = it keeps it: the same tier file, write-back when it was, the same
// block size).  `next_file`: the tier file of `next` ("" none).
std::string JournalRisk(const json& held, const policy::Rules* next, const std::string& next_file) {
  if (!next) return "unassigning removes its filter from the definition";
  const std::string file = SsdFileOf(held);
  if (next_file.empty()) return "the policy would run the disk without this SSD tier";
  if (next_file != file) return "the policy would move the disk's SSD tier to " + next_file;
  const std::string mode = JsonString(held, "mode");
  if (mode == "write-back" && next->mode != policy::CacheMode::kWriteBack) {
    return "the policy would run the disk " + std::string(policy::ModeName(next->mode)) +
           ", not write-back";
  }
  const uint64_t bs = JsonUint(held, "block-size");
  if (bs != 0 && bs != next->block_size) {
    return "the policy would change block-size from " + FormatSize(bs) + " to " +
           FormatSize(next->block_size) + ", which the tier's journal cannot be read with";
  }
  return "";
}

}  // namespace

Manager::Manager(store::Store& store, libvirt::LibvirtClient& lv, libvirt::QemuTools& tools,
                 const Clock& clock, ManagerConfig config, store::PolicyCatalogue* catalogue)
    : store_(store),
      local_catalogue_(store),
      catalogue_(catalogue ? catalogue : &local_catalogue_),
      lv_(lv), tools_(tools), live_(lv), clock_(clock), config_(std::move(config)) {}

std::mutex& Manager::VmMutex(const std::string& uuid) {
  std::lock_guard lock(map_mu_);
  auto& m = vm_mu_[uuid];
  if (!m) m = std::make_unique<std::mutex>();
  return *m;
}

void Manager::Log(const std::string& level, const std::string& vm, const std::string& target,
                  const std::string& action, const std::string& message) {
  std::string where = vm.empty() ? "" : (target.empty() ? vm : vm + "/" + target) + ": ";
  if (level == "error") {
    spdlog::error("{}{}", where, message);
  } else if (level == "warning") {
    spdlog::warn("{}{}", where, message);
  } else {
    spdlog::info("{}{}", where, message);
  }
  auto r = store_.AppendEvent(store::Event{0, clock_.NowMs(), level, vm, target, action, message});
  if (!r) spdlog::error("cannot record event: {}", r.error().message);
}

Status Manager::CheckOptionsCached(const policy::Rules& r) {
  std::string key = policy::RulesToJson(r).dump();
  {
    std::lock_guard lock(options_mu_);
    auto it = options_cache_.find(key);
    if (it != options_cache_.end()) return it->second;
  }
  Status s = tools_.CheckOptions(r);
  // Only remember definite answers (not "qemu-img could not run").
  if (s || s.error().code == ErrorCode::kInvalidArgument) {
    std::lock_guard lock(options_mu_);
    options_cache_[key] = s;
  }
  return s;
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
  Log("info", "", "", "policy-create",
      "policy '" + p->name + "' created (" + Describe(p->rules) + ")");
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
    if (auto s = CheckBudgetForPolicy(p); !s) return tl::unexpected(s.error());
    if (auto s = catalogue_->Update(p, clock_.NowMs()); !s) return tl::unexpected(s.error());
  }
  auto users = PolicyUsers(p.name);
  if (!users) return tl::unexpected(users.error());
  Log("info", "", "", "policy-update",
      "policy '" + p.name + "' changed to " + Describe(p.rules) + "; re-applying it to " +
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
  Log("info", "", "", "policy-delete", "policy '" + name + "' deleted");
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

Status Manager::CheckBudget(const std::string& uuid, const std::string& target,
                            const policy::Rules& r, const std::string& vm_name) {
  auto u = AssignedUsage(store_, nullptr, uuid, target);
  if (!u) return tl::unexpected(u.error());
  const std::string what = vm_name + "/" + target;
  if (u->ram + r.ram_size > config_.ram_budget) {
    return Fail(ErrorCode::kConflict,
                "not enough cache RAM: " + what + " would need " + HumanSize(r.ram_size) +
                    ", but " + HumanSize(u->ram) + " of the host's " +
                    HumanSize(config_.ram_budget) + " RAM budget is already assigned to " +
                    std::to_string(u->disks) +
                    " disk(s); choose a policy with a smaller ram-size, unassign other disks, "
                    "or raise ram-budget in the hostcached configuration");
  }
  if (r.ssd_size > 0 && u->ssd + r.ssd_size > config_.ssd_budget) {
    return Fail(ErrorCode::kConflict,
                "not enough SSD cache space: " + what + " would need " + HumanSize(r.ssd_size) +
                    ", but " + HumanSize(u->ssd) + " of the host's " +
                    HumanSize(config_.ssd_budget) +
                    " SSD budget is already assigned; choose a policy with a smaller ssd-size "
                    "or raise ssd-budget in the hostcached configuration");
  }
  return {};
}

Status Manager::CheckBudgetForPolicy(const policy::Policy& p) {
  auto u = AssignedUsage(store_, &p);
  if (!u) return tl::unexpected(u.error());
  if (u->users > 0 && u->ram > config_.ram_budget) {
    return Fail(ErrorCode::kConflict,
                "with these rules the " + std::to_string(u->users) + " disk(s) using policy '" +
                    p.name + "' would bring the assigned cache RAM to " + HumanSize(u->ram) +
                    ", over the host's " + HumanSize(config_.ram_budget) +
                    " RAM budget; nothing was changed");
  }
  if (u->users > 0 && u->ssd > config_.ssd_budget) {
    return Fail(ErrorCode::kConflict,
                "with these rules the disks using policy '" + p.name +
                    "' would bring the assigned SSD cache space to " + HumanSize(u->ssd) +
                    ", over the host's " + HumanSize(config_.ssd_budget) +
                    " SSD budget; nothing was changed");
  }
  return {};
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
  std::lock_guard vlock(VmMutex(dom->uuid));
  // (Under the VM's lock: the migrating mark changes only under it.)
  if (auto s = NotMigrating(dom->uuid, dom->name); !s) return tl::unexpected(s.error());
  auto xml = lv_.GetXml(dom->uuid, dom->persistent ? libvirt::kXmlInactive : libvirt::kXmlLive);
  if (!xml) return tl::unexpected(xml.error());
  auto info = libvirt::ParseDomain(*xml);
  if (!info) return tl::unexpected(info.error());
  const DiskInfo* disk = FindDisk(*info, target);
  if (!disk) {
    return Fail(ErrorCode::kNotFound, "VM '" + dom->name + "' has no disk " + target +
                                          "; its disks are " + DiskList(*info));
  }
  if (disk->device != "disk") {
    return Fail(ErrorCode::kInvalidArgument,
                target + " of VM '" + dom->name + "' is a " + disk->device +
                    "; only disks (device='disk') can be cached");
  }
  if (disk->empty()) {
    return Fail(ErrorCode::kInvalidArgument, target + " of VM '" + dom->name + "' has no medium");
  }
  auto existing = store_.GetAssignment(dom->uuid, target);
  if (!existing) return tl::unexpected(existing.error());
  if (*existing) {
    if (auto s = CheckJournalKept(*dom, target, &pol->rules,
                                  "assign policy '" + policy_name + "'");
        !s) {
      return tl::unexpected(s.error());
    }
  }
  auto tier = store_.GetSsdTier(dom->uuid, target);
  if (!tier) return tl::unexpected(tier.error());
  {
    std::lock_guard block(budget_mu_);
    if (auto s = CheckBudget(dom->uuid, target, pol->rules, dom->name); !s) {
      return tl::unexpected(s.error());
    }
    const std::string node = std::string(libvirt::kNodePrefix) + target;
    auto spec = MakeSsdSpec(pol->rules, dom->uuid, target, node);
    // The SSD tier file must be possible before anything refers to it (an
    // existing one, from an earlier assignment, is reused; a recorded one
    // is never made again here: if it is lost, the check says so).
    if (pol->rules.ssd_size > 0 && !(*tier && (*tier)->path == spec.filename)) {
      if (auto s = PrepareSsdFile(spec.filename, pol->rules.ssd_size, false,
                                  config_.ssd_roots, QemuOwner()); !s) {
        return tl::unexpected(Error{s.error().code, "policy '" + policy_name +
                                                        "' cannot be assigned: " +
                                                        s.error().message +
                                                        "; fix ssd-dir or choose another policy"});
      }
    }
    Assignment a{dom->uuid, dom->name, target, policy_name,
                 std::string(libvirt::kNodePrefix) + target, Compliance::kUnknown,
                 "being applied", clock_.NowMs(), 0};
    if (*existing) {
      a.state = (*existing)->state;
      a.reason = (*existing)->reason;
    }
    if (auto s = store_.PutAssignment(a); !s) return tl::unexpected(s.error());
  }
  Log("info", dom->name, target, "assign",
      "policy '" + policy_name + "' assigned" +
          (*existing ? " (was '" + (*existing)->policy + "')" : std::string()) + ": " +
          Describe(pol->rules));
  if (auto s = ApplyVm(*dom, target); !s) {
    if (*existing) {
      (void)store_.PutAssignment(**existing);
    } else {
      (void)store_.DeleteAssignment(dom->uuid, target);
    }
    Log("error", dom->name, target, "assign",
        "assignment of policy '" + policy_name + "' undone: " + s.error().message);
    return tl::unexpected(s.error());
  }
  migration::RecordAssignments(*this, lv_, *dom);  // travels with the VM
  auto now = store_.GetAssignment(dom->uuid, target);
  if (!now) return tl::unexpected(now.error());
  if (!*now) return Fail(ErrorCode::kInternal, "assignment vanished while being applied");
  return **now;
}

Status Manager::Unassign(const std::string& vm, const std::string& target) {
  auto dom = lv_.LookupDomain(vm);
  if (!dom) {
    if (dom.error().code != ErrorCode::kNotFound) return tl::unexpected(dom.error());
    // The VM is gone: forget its assignment, under the VM's lock (a check
    // of the VM in progress would otherwise store it again).
    auto found = FindAssignment(vm, target);
    if (!found) return tl::unexpected(found.error());
    std::lock_guard vlock(VmMutex(found->vm_uuid));
    auto a = store_.GetAssignment(found->vm_uuid, target);
    if (!a) return tl::unexpected(a.error());
    if (!*a) return Fail(ErrorCode::kNotFound, "disk " + target + " has no policy assigned");
    if (auto s = store_.DeleteAssignment((*a)->vm_uuid, target); !s) return s;
    (void)store_.DeleteStats((*a)->vm_uuid, target);
    Log("info", (*a)->vm_name, target, "unassign",
        "assignment of policy '" + (*a)->policy + "' forgotten; the VM no longer exists");
    ForgetSsdFile(**a);
    return {};
  }
  std::lock_guard vlock(VmMutex(dom->uuid));
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
  auto all = AssignmentsOf(dom->uuid);
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
  std::optional<DomainInfo> live;
  if (dom->active) {
    auto lx = lv_.GetXml(dom->uuid, libvirt::kXmlLive);
    if (!lx) return tl::unexpected(lx.error());
    auto li = libvirt::ParseDomain(*lx);
    if (!li) return tl::unexpected(li.error());
    live = *li;
  }
  // 1. The definition, so the next start is uncached.
  if (dom->persistent) {
    std::map<std::string, SsdPlan> ssd;
    for (const auto& x : rest) ssd[x.target] = PlanSsd(*dom, x, rules[x.target], false);
    auto r = ApplyPersistent(*dom, rest, rules, live, ssd);
    if (!r) return tl::unexpected(r.error());
  }
  const std::string origin_id = dom->uuid + "/" + target;
  // 2. The running VM: write back and remove the filter.
  if (live) {
    const DiskInfo* ld = FindDisk(*live, target);
    if (ld) {
      auto ins = live_.Inspect(dom->uuid, ld->alias);
      if (!ins && ins.error().code == ErrorCode::kUnavailable) return tl::unexpected(ins.error());
      if (ins && ins->has_filter && ins->root == (*a)->node_name) {
        if (auto s = live_.Remove(dom->uuid, *ins, origin_id); !s) {
          Log("error", dom->name, target, "remove-live",
              "could not remove the filter from the running VM: " + s.error().message);
          SetState(**a, Compliance::kError,
                   "unassign failed: the filter could not be removed from the running VM (" +
                       s.error().message + "); the definition no longer has it");
          return Fail(ErrorCode::kFailedPrecondition,
                      "the filter could not be removed from the running VM: " +
                          s.error().message + "; the assignment is kept, try again");
        }
        Log("info", dom->name, target, "remove-live",
            "filter " + (*a)->node_name + " written back and removed from the running VM");
      }
    } else if (auto used = live_.HasParent(dom->uuid, (*a)->node_name); used && !*used) {
      // The disk was hot-unplugged and its filter is still open.
      auto removed = live_.RemoveOrphan(dom->uuid, (*a)->node_name, origin_id);
      if (!removed) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "the filter of the detached disk could not be removed from the running VM: " +
                        removed.error().message + "; the assignment is kept, try again");
      }
      Log("info", dom->name, target, "remove-live",
          "removed the filter of the detached disk and the nodes under it (" +
              Join(*removed, ", ") + ")");
    }
  }
  if (auto s = store_.DeleteAssignment(dom->uuid, target); !s) return s;
  (void)store_.DeleteStats(dom->uuid, target);
  Log("info", dom->name, target, "unassign", "policy '" + (*a)->policy + "' unassigned");
  migration::RecordAssignments(*this, lv_, *dom);
  // Once the filter is gone from the running VM and the definition, its
  // SSD tier file (clean copies only) goes too; never while QEMU has it.
  bool attached = false;
  if (live) {
    auto still = live_.HasParent(dom->uuid, (*a)->node_name);
    attached = still || still.error().code != ErrorCode::kNotFound;
  }
  if (!attached) {
    ForgetSsdFile(**a);
  } else {
    (void)store_.DeleteSsdTier(dom->uuid, target);
    Log("warning", dom->name, target, "ssd",
        "the SSD tier file is kept: the running VM may still have filter " + (*a)->node_name +
            " open; delete it after the VM stops");
  }
  return {};
}

Result<std::string> Manager::MigrationXml(const std::string& vm) {
  auto dom = lv_.LookupDomain(vm);
  if (!dom) return tl::unexpected(dom.error());
  std::lock_guard vlock(VmMutex(dom->uuid));
  return MigrationXmlLocked(*dom);
}

Result<std::string> Manager::MigrationXmlLocked(const DomainRef& dom) {
  if (!dom.active) {
    return Fail(ErrorCode::kFailedPrecondition,
                "VM '" + dom.name + "' is not running; an offline migration takes its "
                "definition, which already carries the filters (virsh dumpxml --inactive)");
  }
  auto as = AssignmentsOf(dom.uuid);
  if (!as) return tl::unexpected(as.error());
  // (With its secrets: what the destination starts from is this XML.)
  auto xml = lv_.GetXml(dom.uuid, libvirt::kXmlMigratable | libvirt::kXmlSecure);
  if (!xml) return tl::unexpected(xml.error());
  auto info = libvirt::ParseDomain(*xml);
  if (!info) return tl::unexpected(info.error());
  // The destination numbers libvirt's nodes afresh from this XML.
  auto nodes = libvirt::PredictTopNodes(
      *info, [&](const DiskInfo& d) -> Result<int> { return tools_.ChainLength(d); });
  if (!nodes) return tl::unexpected(nodes.error());
  std::vector<libvirt::FilterSpec> specs;
  for (const auto& a : *as) {
    auto p = store_.GetPolicy(a.policy);
    if (!p) return tl::unexpected(p.error());
    const DiskInfo* d = FindDisk(*info, a.target);
    if (!d || !nodes->count(a.target) || !CheckOptionsCached(p->rules)) continue;
    std::optional<policy::SsdSpec> ssd;
    if (p->rules.ssd_size > 0) {
      // (A destination activates the tier whatever ssd-create says; the
      // value is the one of the definition here.)
      ssd = MakeSsdSpec(p->rules, dom.uuid, a.target, a.node_name);
      auto tier = store_.GetSsdTier(dom.uuid, a.target);
      ssd->create = !(tier && *tier && (*tier)->formatted && (*tier)->path == ssd->filename);
    }
    specs.push_back(libvirt::FilterSpec{
        a.target, a.node_name,
        policy::DriverOptions(p->rules, a.node_name, nodes->at(a.target), ssd ? &*ssd : nullptr)});
  }
  if (specs.empty()) return *xml;  // nothing cached: libvirt's own XML
  return libvirt::ApplyFilters(*xml, specs, config_.emulator);
}

Result<double> Manager::Migrate(const std::string& vm, libvirt::MigrateRequest req,
                                int64_t drain_timeout_ms) {
  // The destination is a configured peer, named: never a URI from the
  // caller (libvirt runs programs for some URIs, as root here).
  const Peer* peer = config_.peers.Find(req.destination);
  if (!peer) {
    return Fail(ErrorCode::kInvalidArgument,
                "'destination' must name a configured peer" +
                    (req.destination.empty() ? std::string()
                                             : ", and '" + req.destination + "' is none") +
                    " (" + config_.peers.Describe() + "); to migrate to another host, " +
                    Peers::HowToConfigure());
  }
  auto migrate_uri = Peers::MigrateUri(*peer, req.migrate_uri);
  if (!migrate_uri) return tl::unexpected(migrate_uri.error());
  const std::string where = "peer '" + peer->name + "' (" + peer->uri + ")";
  req.destination = peer->uri;
  req.migrate_uri = *migrate_uri;
  auto dom = lv_.LookupDomain(vm);
  if (!dom) return tl::unexpected(dom.error());
  {
    // The XML and the mark together, under the VM's lock: an assignment
    // either finished before (and is in the XML) or sees the mark.
    std::lock_guard vlock(VmMutex(dom->uuid));
    // The policy's options, from the store (never the drain's value).
    auto xml = MigrationXmlLocked(*dom);
    if (!xml) return tl::unexpected(xml.error());
    req.dest_xml = *xml;
    // Migrating from here on: a check would re-assert the policy's
    // max-dirty-age-ms over the drain's.
    if (!BeginMigrating(dom->uuid)) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "VM '" + dom->name + "' is already being live-migrated");
    }
  }
  auto as = AssignmentsOf(dom->uuid);
  std::string disks;
  if (as) {
    for (const auto& a : *as) disks += (disks.empty() ? "" : ", ") + a.target;
  }
  Log("info", dom->name, "", "migrate",
      "live migration to " + where + " requested" +
          (disks.empty() ? std::string() : "; the filters of " + disks + " go with the XML"));
  auto drained =
      DrainWriteBack(*dom, drain_timeout_ms < 0 ? config_.drain_timeout_ms : drain_timeout_ms);
  const int64_t t0 = clock_.NowMs();
  if (auto s = lv_.Migrate(dom->uuid, req); !s) {
    Log("error", dom->name, "", "migrate", s.error().message + "; the VM runs on here");
    RestoreDrained(*dom, drained);
    SetMigrating(dom->uuid, false);
    return tl::unexpected(s.error());
  }
  SetMigrating(dom->uuid, false);
  double secs = static_cast<double>(clock_.NowMs() - t0) / 1000.0;
  Log("info", dom->name, "", "migrate",
      "migrated to " + where + " in " + HumanSeconds(secs) +
          (req.undefine_source ? "; its definition here was removed" : ""));
  return secs;
}

// ---- applying and checking --------------------------------------------------------

void Manager::SetState(Assignment a, Compliance state, const std::string& reason) {
  const int64_t now = clock_.NowMs();
  bool changed = a.state != state || a.reason != reason;
  a.checked_ms = now;
  if (changed) {
    a.state = state;
    a.reason = reason;
    a.updated_ms = now;
  }
  if (auto s = store_.PutAssignment(a); !s) {
    spdlog::error("cannot store compliance of {}/{}: {}", a.vm_name, a.target, s.error().message);
    return;
  }
  if (changed) {
    std::string level = state == Compliance::kError          ? "error"
                        : state == Compliance::kNotCompliant ? "warning"
                                                             : "info";
    Log(level, a.vm_name, a.target, "compliance",
        std::string(store::ComplianceName(state)) + ": " + reason);
  }
}

std::optional<nlohmann::json> Manager::HeldFilter(
    const DomainRef& dom, const std::map<std::string, libvirt::InstalledFilter>* installed,
    const std::string& target) {
  if (dom.active || !installed) return std::nullopt;  // a running QEMU has it open anyway
  auto it = installed->find(target);
  if (it == installed->end()) return std::nullopt;
  const json& o = it->second.options;
  const std::string f = SsdFileOf(o);
  if (f.empty() || ReadSsdFileState(f) != SsdFileState::kOpen) return std::nullopt;
  return o;
}

Result<std::map<std::string, std::string>> Manager::ApplyPersistent(
    const DomainRef& dom, const std::vector<Assignment>& as,
    const std::map<std::string, policy::Rules>& rules, const std::optional<DomainInfo>& live,
    const std::map<std::string, SsdPlan>& ssd) {
  // (With its secrets, since it is defined back.)
  auto xml = lv_.GetXml(dom.uuid, libvirt::kXmlInactive | libvirt::kXmlSecure);
  if (!xml) return tl::unexpected(xml.error());
  auto info = libvirt::ParseDomain(*xml);
  if (!info) return tl::unexpected(info.error());
  auto chain_length = [&](const DiskInfo& d) -> Result<int> {
    if (live) {
      const DiskInfo* ld = FindDisk(*live, d.target);
      if (ld && ld->source == d.source && ld->chain_terminated) return 1 + ld->backing_count;
    }
    return tools_.ChainLength(d);
  };
  auto nodes = libvirt::PredictTopNodes(*info, chain_length);
  auto installed = libvirt::ParseInstalledFilters(*xml);
  std::map<std::string, std::string> missing;
  std::vector<libvirt::FilterSpec> specs;
  for (const auto& a : as) {
    const DiskInfo* d = FindDisk(*info, a.target);
    const policy::Rules& r = rules.at(a.target);
    if (!d) {
      missing[a.target] = "the VM's definition has no disk " + a.target +
                          " any more; unassign the policy or add the disk back";
      continue;
    }
    // A tier that was not closed cleanly may hold written data that only
    // the driver's recovery writes back: the definition keeps its filter
    // with that tier until the VM has run with it once.
    // (Changes that keep the tier's journal readable apply; the API
    // refuses the others while the VM is shut off, CheckJournalKept.)
    auto plan = ssd.find(a.target);
    if (plan != ssd.end() && !plan->second.stale.empty()) {
      // Its journal may be older than the disk: no start may open it.
      missing[a.target] = plan->second.stale;
      continue;
    }
    const policy::SsdSpec* tier =
        plan != ssd.end() && plan->second.spec ? &*plan->second.spec : nullptr;
    auto held = HeldFilter(dom, installed ? &*installed : nullptr, a.target);
    std::string risk = held ? JournalRisk(*held, &r, tier ? tier->filename : "") : "";
    if (!risk.empty()) {
      if (nodes && nodes->count(a.target)) (*held)["file"] = nodes->at(a.target);
      missing[a.target] =
          "its SSD tier file " + SsdFileOf(*held) + HeldTierState(SsdFileOf(*held)) +
          " and may hold written "
          "data the disk does not have yet, but " + risk +
          "; the definition keeps the filter as it was until the VM has started once (the "
          "driver writes that data back), then the policy's settings apply";
      specs.push_back(libvirt::FilterSpec{a.target, a.node_name, *held});
      continue;
    }
    if (auto s = CheckOptionsCached(r); !s) {
      missing[a.target] = "QEMU's hostcache driver refuses this policy's settings (" +
                          s.error().message + "); the disk is left uncached";
      continue;
    }
    if (!nodes) {
      missing[a.target] = "cannot tell which node libvirt will give " + a.target +
                          " at the next start: " + nodes.error().message;
      continue;
    }
    specs.push_back(libvirt::FilterSpec{
        a.target, a.node_name, policy::DriverOptions(r, a.node_name, nodes->at(a.target), tier)});
  }
  const std::string emulator = specs.empty() ? "" : config_.emulator;
  auto updated = libvirt::ApplyFilters(*xml, specs, emulator);
  if (!updated) return tl::unexpected(updated.error());
  auto before = libvirt::ParseInstalledFilters(*xml);
  auto after = libvirt::ParseInstalledFilters(*updated);
  if (!before || !after) return Fail(ErrorCode::kInternal, "cannot read back the filters");
  bool same = before->size() == after->size();
  for (const auto& [t, f] : *after) {
    auto it = before->find(t);
    same = same && it != before->end() && it->second.options == f.options &&
           it->second.alias == f.alias;
  }
  bool emulator_change = !emulator.empty() && info->emulator != emulator;
  if (emulator_change) {
    // Not switched to a QEMU that lacks what the VM needs (nothing is
    // written; the caller answers 409, a check reports it).
    if (auto s = libvirt::CheckEmulatorCapabilities(lv_, *updated, emulator); !s) {
      return tl::unexpected(s.error());
    }
  }
  if (!same || emulator_change) {
    {
      std::lock_guard lock(define_mu_);
      auto it = rejected_xml_.find(dom.uuid);
      if (it != rejected_xml_.end() && it->second == *updated) {
        for (const auto& a : as) {
          if (!missing.count(a.target)) {
            missing[a.target] = "libvirt does not keep the filter in the VM's definition "
                                "(its driver ignores <qemu:commandline>?)";
          }
        }
        return missing;
      }
    }
    if (auto s = lv_.DefineXml(*updated); !s) {
      return tl::unexpected(Annotate(s.error(), "updating the definition of VM '" + dom.name + "'"));
    }
    // Read it back: libvirt must have kept what we wrote.
    auto back = lv_.GetXml(dom.uuid, libvirt::kXmlInactive);
    auto kept = back ? libvirt::ParseInstalledFilters(*back) : decltype(after)();
    bool ok = kept && kept->size() == after->size();
    if (ok) {
      for (const auto& [t, f] : *after) {
        auto it = kept->find(t);
        ok = ok && it != kept->end() && it->second.options == f.options;
      }
    }
    if (!ok) {
      std::lock_guard lock(define_mu_);
      rejected_xml_[dom.uuid] = *updated;
      for (const auto& a : as) {
        if (!missing.count(a.target)) {
          missing[a.target] = "libvirt does not keep the filter in the VM's definition "
                              "(its driver ignores <qemu:commandline>?)";
        }
      }
    } else {
      std::lock_guard lock(define_mu_);
      rejected_xml_.erase(dom.uuid);
    }
    if (auto had = libvirt::ParseFilterNodeNames(*xml)) {
      for (const auto& a : as) {
        if (!FindDisk(*info, a.target) &&
            std::find(had->begin(), had->end(), a.node_name) != had->end()) {
          Log("warning", dom.name, a.target, "unplug",
              "disk " + a.target + " left the VM's definition (detached?): its filter's "
              "<qemu:commandline> and <qemu:override> entries were removed so the VM can start");
        }
      }
    }
    std::vector<std::string> ts;
    for (const auto& [t, _] : *after) ts.push_back(t);
    Log("info", dom.name, "", "define",
        "definition updated: filters on " + (ts.empty() ? std::string("no disk") : Join(ts, ", ")) +
            (emulator_change ? "; emulator set to " + emulator : std::string()));
  }
  return missing;
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

Manager::SsdPlan Manager::PlanSsd(const DomainRef& dom, const Assignment& a,
                                  const policy::Rules& r, bool may_replace) {
  SsdPlan p;
  if (r.ssd_size == 0) return p;
  if (!config_.ssd_roots.Locate(r.ssd_dir)) {
    // (A policy stored before the roots were checked: nothing is made,
    // moved or deleted there.)
    p.problem = "policy '" + a.policy + "' has ssd-dir " + r.ssd_dir + ", but " +
                config_.ssd_roots.NotUnder(r.ssd_dir) +
                "; the disk is cached in RAM only until the policy's ssd-dir is changed";
    return p;
  }
  policy::SsdSpec spec = MakeSsdSpec(r, dom.uuid, a.target, a.node_name);
  auto create = PrepareTier(dom, a.target, spec, r.ssd_size, may_replace, &p.lost);
  if (!create) {
    p.problem = create.error().message + "; the disk is cached in RAM only until this is fixed";
    return p;
  }
  spec.create = *create;
  if (p.lost.empty()) {
    auto rec = store_.GetSsdTier(dom.uuid, a.target);
    if (rec && *rec && (*rec)->path == spec.filename) {
      p.stale = StaleTier(dom, **rec);
      if (!p.stale.empty()) return p;
    }
  }
  p.spec = std::move(spec);
  return p;
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

std::string Manager::StaleTier(const DomainRef& dom, store::SsdTier t) {
  const SsdFileInfo f = ReadSsdFile(t.path);
  if (f.state != SsdFileState::kOpen) return "";
  if (!f.unreadable && f.origin_id != t.origin_id) return "";  // another disk's: lost
  if (!t.stale) {
    // Not closed cleanly: in use by this VM's QEMU, or left by a crash.
    // A shut-off VM's next start recovers it through the definition; left
    // by a crash while the VM runs without the filter, the guest may have
    // written to the disk since.  (A live insertion that failed part-way
    // does not leave it so: blockdev-del closes the tier cleanly, and a
    // node that could not be deleted still has it open.)
    if (!dom.active) return "";
    auto open = OpenInRunningVm(dom, t.path);
    if (!open || *open) return "";  // in use (or cannot tell: nothing is inserted then)
    t.stale = true;
    t.updated_ms = clock_.NowMs();
    if (auto s = store_.PutSsdTier(t); !s) {
      spdlog::error("cannot record the stale SSD tier {}: {}", t.path, s.error().message);
    }
  }
  return "the SSD tier file " + t.path + " of " + t.target +
         " was not closed cleanly (the VM or the host stopped abruptly) and may hold a write-back "
         "journal, but VM '" + dom.name + "' then ran without its filter (it was started without "
         "the cache; was its definition edited?), so the guest may have written to the disk "
         "since: writing that journal back now could overwrite newer data. hostcached does not "
         "insert the filter (nor put it in the definition) with this tier, and the disk is not "
         "cached. Give the journal up with " + ForgetHint(dom.name, t.target) +
         ": the file is deleted, and the filter is inserted with a fresh tier";
}

Result<bool> Manager::PrepareTier(const DomainRef& dom, const std::string& target,
                                  const policy::SsdSpec& spec, uint64_t size, bool may_replace,
                                  std::string* lost) {
  auto rec = store_.GetSsdTier(dom.uuid, target);
  if (!rec) return tl::unexpected(rec.error());
  std::optional<store::SsdTier> t = *rec;
  auto gone = [&](const std::string& path, const std::string& how) {
    *lost = "the SSD tier file " + path + " of " + target + " " + how +
            ", but the driver had formatted it for this disk, and it may have held write-back "
            "data that is not on the disk yet. hostcached does not make a new tier in its "
            "place, and the VM's definition opens the tier with ssd-create=off, so the VM does "
            "not start without it. Restore the file if you can; otherwise give that data up "
            "with " + ForgetHint(dom.name, target) + ", and a new tier is made";
  };
  bool keep_record = false;
  if (t && t->path != spec.filename) {
    const SsdFileInfo old = ReadSsdFile(t->path);
    if (t->formatted) {
      if (auto how = TierGone(old, t->origin_id); !how.empty()) {
        gone(t->path, how);
        return false;
      }
    }
    if (old.state == SsdFileState::kOpen) {
      // It may still hold the disk's data (a running filter has it, or the
      // VM stopped abruptly): the record stays with it until the filter
      // that uses it is replaced by one on the new file.
      keep_record = true;
    } else {
      // Clean copies at most: the tier moves to the new file.
      if (old.state != SsdFileState::kMissing && OurSsdFile(t->path, dom.uuid, target)) {
        if (auto s = RemoveSsdFile(t->path, config_.ssd_roots); s) {
          Log("info", dom.name, target, "ssd",
              "SSD tier file " + t->path + " deleted (it held clean copies only; the disk's "
              "tier is " + spec.filename + " now)");
        }
      }
      if (auto s = store_.DeleteSsdTier(dom.uuid, target); !s) return tl::unexpected(s.error());
      t.reset();
    }
  }
  if (t && !keep_record && t->formatted) {
    if (auto how = TierGone(ReadSsdFile(spec.filename), t->origin_id); !how.empty()) {
      gone(spec.filename, how);
      return false;
    }
  }
  if (auto s = PrepareSsdFile(spec.filename, size, may_replace, config_.ssd_roots, QemuOwner());
      !s) {
    return tl::unexpected(s.error());
  }
  const SsdFileInfo now = ReadSsdFile(spec.filename);
  const bool formatted = now.formatted() && (now.unreadable || now.origin_id == spec.origin_id);
  if (!keep_record && (!t || t->formatted != formatted)) {
    const int64_t ms = clock_.NowMs();
    store::SsdTier n{dom.uuid, target, spec.filename, spec.origin_id, formatted,
                     t ? t->created_ms : ms, ms};
    if (auto s = store_.PutSsdTier(n); !s) return tl::unexpected(s.error());
    if (formatted) {
      Log("info", dom.name, target, "ssd",
          "the driver has formatted SSD tier file " + spec.filename +
              " for this disk; the filter opens it with ssd-create=off from now on, so a "
              "missing or replaced tier file stops the VM from starting instead of losing the "
              "write-back data it may hold");
    }
  }
  return !formatted;
}

Status Manager::RemoveTierFile(const std::string& uuid, const std::string& target,
                               const std::string& path) {
  if (auto s = RemoveSsdFile(path, config_.ssd_roots); !s) return s;
  auto rec = store_.GetSsdTier(uuid, target);
  if (rec && *rec && (*rec)->path == path) return store_.DeleteSsdTier(uuid, target);
  return {};
}

Status Manager::CheckJournalKept(const DomainRef& dom, const std::string& target,
                                 const policy::Rules* next, const std::string& then) {
  if (dom.active || !dom.persistent) return {};  // a running QEMU has the tier open
  auto xml = lv_.GetXml(dom.uuid, libvirt::kXmlInactive);
  if (!xml) return tl::unexpected(xml.error());
  auto installed = libvirt::ParseInstalledFilters(*xml);
  auto held = HeldFilter(dom, installed ? &*installed : nullptr, target);
  if (!held) return {};
  const std::string next_file =
      next && next->ssd_size > 0 ? SsdFilePath(next->ssd_dir, dom.uuid, target) : "";
  const std::string risk = JournalRisk(*held, next, next_file);
  if (risk.empty()) return {};
  return Fail(ErrorCode::kFailedPrecondition,
              "the SSD tier file " + SsdFileOf(*held) + " of " + target +
                  HeldTierState(SsdFileOf(*held)) + " and may hold "
                  "written data the disk does not have yet, which only the driver writes back "
                  "when it opens the tier again, and " + risk + "; start VM '" + dom.name +
                  "' once with its current policy so the driver writes that data back, then " +
                  then);
}

void Manager::ForgetSsdFile(const Assignment& a) {
  std::set<std::string> paths;
  auto p = store_.GetPolicy(a.policy);
  if (p && p->rules.ssd_size > 0) paths.insert(SsdFilePath(p->rules.ssd_dir, a.vm_uuid, a.target));
  auto rec = store_.GetSsdTier(a.vm_uuid, a.target);
  if (rec && *rec && OurSsdFile((*rec)->path, a.vm_uuid, a.target)) paths.insert((*rec)->path);
  if (rec && *rec && (*rec)->formatted) {
    if (auto how = TierGone(ReadSsdFile((*rec)->path), (*rec)->origin_id); !how.empty()) {
      Log("warning", a.vm_name, a.target, "ssd-forget",
          "SSD tier " + (*rec)->path + " (which " + how +
              ") is forgotten with the assignment: write-back data it may have held that "
              "was not on the disk yet is lost");
    }
  }
  (void)store_.DeleteSsdTier(a.vm_uuid, a.target);
  if (rec && *rec && (*rec)->stale && OurSsdFile((*rec)->path, a.vm_uuid, a.target) &&
      ReadSsdFileState((*rec)->path) == SsdFileState::kOpen) {
    // Its journal may be older than the disk: nothing may open it again.
    if (RemoveSsdFile((*rec)->path, config_.ssd_roots, true)) {
      Log("warning", a.vm_name, a.target, "ssd-forget",
          "stale SSD tier file " + (*rec)->path + " (not closed cleanly, and the VM ran without "
          "its filter since) deleted with the assignment, its journal unwritten");
    }
  }
  for (const auto& path : paths) {
    if (!SsdFileSize(path)) continue;
    if (auto s = RemoveSsdFile(path, config_.ssd_roots); !s) {
      Log("warning", a.vm_name, a.target, "ssd",
          "the SSD tier file could not be deleted: " + s.error().message);
    } else {
      Log("info", a.vm_name, a.target, "ssd",
          "SSD tier file " + path + " deleted (it held clean copies only; the filter using it "
          "is gone)");
    }
  }
}

void Manager::ReleaseMigratedTiers(const std::string& uuid, const std::string& name) {
  std::lock_guard vlock(VmMutex(uuid));
  auto as = AssignmentsOf(uuid);
  if (!as) return;
  for (const auto& a : *as) {
    auto rec = store_.GetSsdTier(uuid, a.target);
    if (!rec || !*rec) continue;
    const std::string path = (*rec)->path;
    (void)store_.DeleteSsdTier(uuid, a.target);
    if (!SsdFileSize(path) || !OurSsdFile(path, uuid, a.target)) continue;
    if (auto s = RemoveSsdFile(path, config_.ssd_roots); s) {
      Log("info", name, a.target, "ssd",
          "SSD tier file " + path + " deleted: the VM left by live migration, and its filter "
          "wrote everything back and dropped the tier's content as it handed the disk over; "
          "a blank one is made for a migration back");
    }
  }
}

Result<std::optional<store::SsdTier>> Manager::SsdTierOf(const Assignment& a) {
  return store_.GetSsdTier(a.vm_uuid, a.target);
}

Result<Assignment> Manager::ForgetSsdTier(const std::string& vm, const std::string& target) {
  auto a = FindAssignment(vm, target);
  if (!a) return tl::unexpected(a.error());
  {
    std::lock_guard vlock(VmMutex(a->vm_uuid));
    if (auto s = NotMigrating(a->vm_uuid, a->vm_name); !s) return tl::unexpected(s.error());
    auto rec = store_.GetSsdTier(a->vm_uuid, target);
    if (!rec) return tl::unexpected(rec.error());
    if (!*rec) {
      return Fail(ErrorCode::kNotFound, "no SSD tier is recorded for disk " + target + " of VM '" +
                                            a->vm_name + "'; there is nothing to forget");
    }
    const store::SsdTier t = **rec;
    const SsdFileInfo f = ReadSsdFile(t.path);
    const std::string how = TierGone(f, t.origin_id);
    // A stale tier (its journal may be older than the disk) is given up
    // with its file: nothing may open it again.
    std::string stale;
    if (t.formatted && how.empty()) {
      auto dom = lv_.LookupDomain(a->vm_uuid);
      if (dom) stale = StaleTier(*dom, t);
    }
    if (!stale.empty()) {
      if (OurSsdFile(t.path, a->vm_uuid, target)) {
        if (auto s = RemoveSsdFile(t.path, config_.ssd_roots, true); !s) {
          return Fail(ErrorCode::kFailedPrecondition,
                      "cannot delete the stale SSD tier file " + t.path + ": " +
                          s.error().message);
        }
      }
      if (auto s = store_.DeleteSsdTier(a->vm_uuid, target); !s) return tl::unexpected(s.error());
      Log("warning", a->vm_name, target, "ssd-forget",
          "SSD tier " + t.path + " (not closed cleanly, and the VM ran without its filter since) "
          "given up by the operator: its journal, which may have been older than the disk, is "
          "deleted unwritten; a new blank tier is made, and the driver formats it when the "
          "filter next opens");
    } else if (t.formatted && how.empty()) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the SSD tier file " + t.path + " of " + target + " is there and holds this "
                  "disk's tier (" + std::string(SsdFileStateName(f.state)) +
                  "): nothing is lost, so there is nothing to forget; to drop the tier, "
                  "change the policy or unassign it");
    } else {
      if (auto s = store_.DeleteSsdTier(a->vm_uuid, target); !s) {
        return tl::unexpected(s.error());
      }
      if (t.formatted) {
        Log("warning", a->vm_name, target, "ssd-forget",
            "SSD tier " + t.path + " (which " + how + ") given up by the operator: write-back "
            "data it may have held that was not on the disk yet is lost; a new blank tier is "
            "made, and the driver formats it when the filter next opens");
      } else {
        Log("info", a->vm_name, target, "ssd-forget",
            "record of SSD tier " + t.path + " forgotten (the driver had not formatted it)");
      }
    }
  }
  CheckVm(a->vm_uuid);
  auto now = store_.GetAssignment(a->vm_uuid, target);
  if (!now) return tl::unexpected(now.error());
  if (!*now) return Fail(ErrorCode::kNotFound, "disk " + target + " has no policy assigned");
  return **now;
}

namespace {

// How a live filter's SSD tier differs from the wanted one ("" = it does not).
std::string SsdDifference(const libvirt::LiveDisk& ins, const policy::SsdSpec* want,
                          const policy::Rules& r) {
  if (!want) {
    return ins.ssd_child.empty() ? ""
                                 : "the filter has an SSD tier (" + ins.ssd_file +
                                       ") the policy does not ask for";
  }
  if (ins.ssd_child.empty()) return "the filter has no SSD tier";
  if (ins.ssd_file != want->filename) {
    return "the SSD tier is " + ins.ssd_file + ", the policy's is " + want->filename;
  }
  if (ins.ssd_child != want->node_name) {
    return "the SSD tier's node is " + ins.ssd_child + ", not " + want->node_name;
  }
  auto size = SsdFileSize(want->filename);
  if (size && *size != r.ssd_size) {
    return "the SSD tier file has " + FormatSize(*size) + ", the policy says " +
           FormatSize(r.ssd_size);
  }
  return "";
}

}  // namespace

Status Manager::ApplyVm(const DomainRef& dom, const std::string& reapply) {
  auto as = AssignmentsOf(dom.uuid);
  if (!as) return tl::unexpected(as.error());
  if (as->empty()) return {};
  std::map<std::string, policy::Rules> rules;
  for (auto& a : *as) {
    auto p = store_.GetPolicy(a.policy);
    if (!p) return tl::unexpected(p.error());
    rules[a.target] = p->rules;
    if (a.vm_name != dom.name) a.vm_name = dom.name;  // renamed in libvirt
  }
  std::optional<DomainInfo> live;
  if (dom.active) {
    auto lx = lv_.GetXml(dom.uuid, libvirt::kXmlLive);
    if (!lx) return tl::unexpected(lx.error());
    auto li = libvirt::ParseDomain(*lx);
    if (!li) return tl::unexpected(li.error());
    live = *li;
  }
  // The SSD tier files: a running VM may have its file open, so a size
  // change waits for the live replacement below.
  std::map<std::string, SsdPlan> ssd;
  for (const auto& a : *as) ssd[a.target] = PlanSsd(dom, a, rules[a.target], !dom.active);
  std::map<std::string, std::string> missing;
  if (dom.persistent) {
    auto m = ApplyPersistent(dom, *as, rules, live, ssd);
    if (!m) return tl::unexpected(m.error());
    missing = *m;
  }
  // A tier emptied (below): the definition opens it with ssd-create on
  // again until the driver has formatted it.
  bool emptied = false;
  std::set<std::string> emptied_targets;  // one ssd-emptied event per disk and check
  // Empties a tier closed cleanly, whose clean copies may be stale because
  // the guest may have written to the disk while no filter had the tier
  // open: the file is deleted and made blank again with its record (not
  // formatted), for the driver to format afresh (ssd-create on).  Returns
  // the tier's ssd-create.
  auto empty_tier = [&](const Assignment& a, SsdPlan& plan, uint64_t size,
                        const std::string& when) -> Result<bool> {
    const std::string file = plan.spec->filename;
    if (auto s = RemoveTierFile(dom.uuid, a.target, file); !s) return tl::unexpected(s.error());
    std::string lost;
    auto create = PrepareTier(dom, a.target, *plan.spec, size, true, &lost);
    if (!create) return create;
    if (!lost.empty()) return Fail(ErrorCode::kFailedPrecondition, lost);
    plan.spec->create = *create;
    emptied = true;
    if (emptied_targets.insert(a.target).second) {
      Log("info", dom.name, a.target, "ssd-emptied",
          "SSD tier file " + file + " emptied " + when +
              ", so the guest may have written to the disk meanwhile and the tier's clean "
              "copies may be stale; the driver formats it afresh (ssd-create on)");
    }
    return *create;
  };
  for (const auto& a : *as) {
    SsdPlan& plan = ssd[a.target];
    const policy::SsdSpec* want_ssd = plan.spec ? &*plan.spec : nullptr;
    // What the filter should run with: the policy, without the SSD tier
    // when its file cannot be used.
    policy::Rules r = rules[a.target];
    if (!want_ssd) r.ssd_size = 0;
    const std::string origin_id = dom.uuid + "/" + a.target;
    if (!plan.lost.empty()) {
      // Nothing is made in its place and nothing changes in the running
      // VM: the definition names the tier with ssd-create off.
      if (a.state != Compliance::kError || a.reason != plan.lost) {
        Log("error", dom.name, a.target, "ssd-lost", plan.lost);
      }
      SetState(a, Compliance::kError, plan.lost);
      continue;
    }
    if (!plan.stale.empty()) {
      if (a.state != Compliance::kError || a.reason != plan.stale) {
        Log("error", dom.name, a.target, "ssd-stale", plan.stale);
      }
      SetState(a, Compliance::kError, plan.stale);
      continue;
    }
    if (auto s = CheckOptionsCached(r); !s) {
      SetState(a, Compliance::kNotCompliant,
               "QEMU's hostcache driver refuses this policy's settings: " + s.error().message +
                   "; the disk is left uncached until the policy changes");
      continue;
    }
    const std::string desc = "filter " + a.node_name + " (" + Describe(rules[a.target]) +
                             (want_ssd ? ", SSD tier " + FormatSize(r.ssd_size) : std::string()) +
                             ", policy '" + a.policy + "')";
    if (!dom.active) {
      if (!missing[a.target].empty()) {
        SetState(a, Compliance::kNotCompliant, missing[a.target]);
      } else if (!plan.problem.empty()) {
        SetState(a, Compliance::kNotCompliant, plan.problem);
      } else {
        SetState(a, Compliance::kPendingRestart,
                 "the VM is shut off; its definition carries " + desc +
                     ", which QEMU opens when the VM starts");
      }
      continue;
    }
    const DiskInfo* ld = FindDisk(*live, a.target);
    if (!ld) {
      SetState(a, Compliance::kNotCompliant,
               "the running VM has no disk " + a.target +
                   " (hot-unplugged?); " +
                   (missing[a.target].empty()
                        ? std::string("its definition still has it, so it is cached again "
                                      "at the next start")
                        : missing[a.target]));
      continue;
    }
    const std::string expected = ld->index > 0 ? libvirt::LibvirtNodeName(*ld, ld->index) : "";
    auto ins = live_.Inspect(dom.uuid, ld->alias);
    if (!ins) {
      if (ins.error().code == ErrorCode::kUnavailable) return tl::unexpected(ins.error());
      SetState(a, Compliance::kError,
               "cannot read QEMU's block graph for " + a.target + ": " + ins.error().message);
      continue;
    }
    std::string op_error;
    auto note = [&](const Status& s, const std::string& what, const std::string& why = "") {
      if (!s) {
        op_error = s.error().message;
      } else {
        Log("info", dom.name, a.target, what,
            desc + ": " + what + " done in the running VM" + (why.empty() ? "" : " (" + why + ")"));
      }
    };
    // Insert over `under`, the SSD tier file first made the policy's size
    // (no QEMU has it open at this point).  The one way a filter goes into
    // a running VM (inserted, or put back by `replace`): the VM ran without
    // it until now, if only for a moment, and the guest may have written
    // to the disk meanwhile, so a tier closed cleanly is emptied first (its
    // clean copies may be stale; nothing but warmth is lost).  A start
    // through the definition has the filter from the first I/O and keeps
    // its warm tier.
    auto insert = [&](const libvirt::LiveDisk& under) -> Status {
      if (!want_ssd) return live_.Insert(dom.uuid, under, r, a.node_name, nullptr);
      std::string lost;
      auto create = PrepareTier(dom, a.target, *want_ssd, r.ssd_size, true, &lost);
      if (!create) return tl::unexpected(create.error());
      if (!lost.empty()) return Fail(ErrorCode::kFailedPrecondition, lost);
      // The filter is not in the running VM: a tier not closed cleanly is
      // not its (StaleTier), and its journal may be older than the disk.
      if (ReadSsdFileState(want_ssd->filename) == SsdFileState::kOpen &&
          OpenInRunningVm(dom, want_ssd->filename) != std::optional<bool>(true)) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "the SSD tier file " + want_ssd->filename +
                        " was not closed cleanly, and the filter is not in the running VM; "
                        "its journal is not written back over what the guest may have written "
                        "since");
      }
      if (ReadSsdFileState(want_ssd->filename) == SsdFileState::kClean) {
        create = empty_tier(a, plan, r.ssd_size,
                            "before the filter is inserted live: the VM ran without the cache");
        if (!create) return tl::unexpected(create.error());
      }
      policy::SsdSpec tier = *want_ssd;
      tier.create = *create;
      return live_.Insert(dom.uuid, under, r, a.node_name, &tier);
    };
    // Remove the filter and put it back over `under`; a tier file of ours
    // that the new filter does not use is deleted once the old one is gone.
    auto replace = [&](const std::string& under) -> Status {
      Status s = live_.Remove(dom.uuid, *ins, origin_id);
      if (!s) return s;
      if (!ins->ssd_file.empty() && (!want_ssd || ins->ssd_file != want_ssd->filename) &&
          OurSsdFile(ins->ssd_file, dom.uuid, a.target)) {
        (void)RemoveTierFile(dom.uuid, a.target, ins->ssd_file);
      }
      return insert(libvirt::LiveDisk{ins->qdev, under, false, "", {}, "", ""});
    };
    if (ins->has_filter && ins->root == a.node_name) {
      bool wrong_child = !expected.empty() && ins->filter_child != expected &&
                         ins->filter_child.rfind("libvirt-", 0) == 0;
      const std::string ssd_diff = SsdDifference(*ins, want_ssd, r);
      if (wrong_child) {
        Log("error", dom.name, a.target, "verify",
            "filter " + a.node_name + " sits on node " + ins->filter_child + ", but " + a.target +
                "'s image is node " + expected + "; moving it");
        note(replace(expected), "repair-live");
      } else if (!ssd_diff.empty()) {
        // The driver cannot change its ssd child live.
        Log("info", dom.name, a.target, "verify", ssd_diff + "; replacing the filter");
        note(replace(ins->filter_child), "replace-live");
      } else if (a.target == reapply && !libvirt::SsdFailure(ins->stats).empty()) {
        // The driver never uses a failed tier again: a new filter attaches
        // it afresh (a periodic check does not, a failing device would
        // only fail again).
        Log("info", dom.name, a.target, "verify",
            "the SSD tier had failed with an I/O error; the policy is re-applied, so the "
            "filter is replaced to attach the tier again");
        note(replace(ins->filter_child), "replace-live", "the SSD tier had failed");
      } else if (auto diffs = libvirt::CompareSettings(ins->stats, r); !diffs.empty()) {
        policy::Rules running;  // what a reopen must keep: the block size
        running.block_size = JsonUint(ins->stats, "block-size");
        if (policy::ReopenCompatible(running, r)) {
          note(live_.Reopen(dom.uuid, a.node_name, ins->filter_child, r, want_ssd),
               "reopen-live", Join(diffs, "; "));
        } else {
          note(replace(ins->filter_child), "replace-live", Join(diffs, "; "));
        }
      } else if (!libvirt::UnreportedOptions(ins->stats).empty()) {
        // QEMU does not report these options: assert them again (a reopen
        // with the options the node has changes nothing).
        if (auto s = live_.Reopen(dom.uuid, a.node_name, ins->filter_child, r, want_ssd); !s) {
          op_error = s.error().message;
        }
      }
    } else if (ins->has_filter) {
      SetState(a, Compliance::kNotCompliant,
               "another hostcache node (" + ins->root + ") is on " + a.target +
                   ", not managed by hostcached; remove it to let the policy apply");
      continue;
    } else {
      note(insert(*ins), "insert-live");
    }
    // Verify from QEMU's block graph.
    auto after = live_.Inspect(dom.uuid, ld->alias);
    std::vector<std::string> problems;
    std::string ssd_failed;  // the tier failed (nothing to repair here)
    if (!after) {
      problems.push_back("cannot read QEMU's block graph: " + after.error().message);
    } else if (!after->has_filter || after->root != a.node_name) {
      problems.push_back("the device reads from " + after->root + ", not from the filter");
    } else {
      if (!expected.empty() && after->filter_child != expected &&
          after->filter_child.rfind("libvirt-", 0) == 0) {
        problems.push_back("the filter sits on " + after->filter_child + ", not on " + expected);
      }
      for (auto& d : libvirt::CompareSettings(after->stats, r)) problems.push_back(d);
      if (auto d = SsdDifference(*after, want_ssd, r); !d.empty()) problems.push_back(d);
      ssd_failed = libvirt::SsdFailure(after->stats);
    }
    if (problems.empty() && op_error.empty()) {
      if (!ssd_failed.empty()) {
        SetState(a, Compliance::kNotCompliant, ssd_failed);
      } else if (!missing[a.target].empty()) {
        SetState(a, Compliance::kNotCompliant,
                 "the running VM is cached, but " + missing[a.target]);
      } else if (!plan.problem.empty()) {
        SetState(a, Compliance::kNotCompliant, plan.problem);
      } else {
        SetState(a, Compliance::kCompliant,
                 desc + " is under the device in the running VM" +
                     (dom.persistent ? " and in its definition"
                                     : "; the VM is transient, so the filter ends with it"));
      }
    } else if (problems.empty()) {
      // In place, but re-asserting the options QEMU does not report failed.
      SetState(a, Compliance::kNotCompliant,
               "the filter is in place, but its settings could not be asserted (" + op_error +
                   "); admit-after, seq-cutoff, max-dirty and max-dirty-age-ms may differ from "
                   "the policy");
    } else {
      std::string why = op_error.empty() ? Join(problems, "; ") : op_error;
      if (why.find("does not accept value 'hostcache'") != std::string::npos) {
        why = "the running QEMU (" + (live->emulator.empty() ? std::string("?") : live->emulator) +
              ") has no hostcache driver; shut the VM down and start it again, a reboot "
              "inside the guest keeps the running QEMU";
      }
      bool in_place = after && after->has_filter && after->root == a.node_name;
      if (in_place) {
        const std::string failed =
            op_error.empty() ? std::string() : " (changing it failed: " + op_error + ")";
        SetState(a, Compliance::kNotCompliant,
                 "the running VM's filter differs from the policy: " + Join(problems, "; ") +
                     failed + (ssd_failed.empty() ? std::string() : "; " + ssd_failed));
      } else if (dom.persistent && missing[a.target].empty()) {
        SetState(a, Compliance::kPendingRestart,
                 "the running VM did not take the filter live (" + why +
                     "); its definition carries it, so it takes effect at the next start");
      } else {
        SetState(a, Compliance::kNotCompliant, "the running VM is not cached: " + why);
      }
    }
  }
  // A clean tier that the running VM does not have open (the filter was
  // not put back live: the driver refuses the policy, the disk is not in
  // the running VM, the insertion failed and its blockdev-del closed the
  // tier) is emptied too: the VM runs without the cache, and a later start
  // through the definition would otherwise serve its copies.  A file in
  // state 2 is left alone (StaleTier), and so is one whose use cannot be
  // told.
  if (dom.active) {
    for (const auto& a : *as) {
      SsdPlan& plan = ssd[a.target];
      if (!plan.spec || !plan.lost.empty() || !plan.stale.empty()) continue;
      if (ReadSsdFileState(plan.spec->filename) != SsdFileState::kClean) continue;
      if (OpenInRunningVm(dom, plan.spec->filename) != std::optional<bool>(false)) continue;
      auto e = empty_tier(a, plan, rules[a.target].ssd_size,
                          "while the filter is not in the running VM: the VM runs without the "
                          "cache");
      if (!e) {
        spdlog::error("cannot empty the SSD tier file {} of {}/{}: {}", plan.spec->filename,
                      dom.name, a.target, e.error().message);
      }
    }
  }
  // A tier the running filter has just formatted (live insertion) is
  // recorded, and the definition opens it with ssd-create off from now on
  // (on while an emptied tier stays blank).
  if (dom.active && dom.persistent) {
    bool rewrite = emptied;
    for (const auto& a : *as) {
      SsdPlan& plan = ssd[a.target];
      if (!plan.spec || !plan.spec->create || !plan.lost.empty()) continue;
      if (!ReadSsdFile(plan.spec->filename).formatted()) continue;
      std::string lost;
      auto create = PrepareTier(dom, a.target, *plan.spec, rules[a.target].ssd_size, false, &lost);
      if (create && !*create && lost.empty()) {
        plan.spec->create = false;
        rewrite = true;
      }
    }
    if (rewrite) {
      if (auto m = ApplyPersistent(dom, *as, rules, live, ssd); !m) {
        Log("error", dom.name, "", "define",
            "cannot write the tiers' ssd-create into the definition: " + m.error().message);
      }
    }
  }
  return {};
}

void Manager::CheckVm(const std::string& uuid) {
  // Around a migration's switch-over the VM's nodes are inactive: it is
  // checked when the migration ends (migration::Coordinator).
  if (Migrating(uuid)) return;
  std::lock_guard vlock(VmMutex(uuid));
  if (Migrating(uuid)) return;  // it began while this check waited for the VM
  auto as = AssignmentsOf(uuid);
  if (!as || as->empty()) return;
  auto dom = lv_.LookupDomain(uuid);
  if (!dom) {
    if (dom.error().code == ErrorCode::kNotFound) {
      for (const auto& a : *as) {
        SetState(a, Compliance::kError,
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
    Log("error", dom->name, "", "check", s.error().message);
  }
  if (!s) {
    if (s.error().code == ErrorCode::kUnavailable) return;
    // kFailedPrecondition: the VM's definition cannot take the filter as it
    // is (its emulator would lack what the VM needs), nothing broke.
    Compliance state = s.error().code == ErrorCode::kFailedPrecondition
                           ? Compliance::kNotCompliant
                           : Compliance::kError;
    for (const auto& a : *as) SetState(a, state, s.error().message);
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

void Manager::SetMigrating(const std::string& uuid, bool migrating) {
  // Under the VM's lock: an operation that holds it sees one value for its
  // whole length.
  std::lock_guard vlock(VmMutex(uuid));
  std::lock_guard lock(migrating_mu_);
  if (migrating) {
    migrating_.emplace(uuid, clock_.NowMs());
  } else {
    migrating_.erase(uuid);
  }
}

bool Manager::BeginMigrating(const std::string& uuid) {
  if (Migrating(uuid)) return false;  // (also forgets a stale mark)
  std::lock_guard lock(migrating_mu_);
  return migrating_.emplace(uuid, clock_.NowMs()).second;
}

Status Manager::NotMigrating(const std::string& uuid, const std::string& name) {
  if (!Migrating(uuid)) return {};
  return Fail(ErrorCode::kFailedPrecondition,
              "VM '" + name + "' is being live-migrated; try again when it has finished");
}

bool Manager::Migrating(const std::string& uuid) {
  std::lock_guard lock(migrating_mu_);
  auto it = migrating_.find(uuid);
  if (it == migrating_.end()) return false;
  // An end event missed (libvirtd restarted meanwhile) must not keep the VM
  // unchecked for ever.
  if (clock_.NowMs() - it->second > kMigrationHoldMs) {
    migrating_.erase(it);
    return false;
  }
  return true;
}

void Manager::OnDeviceRemoved(const std::string& uuid, const std::string& name,
                              const std::string& alias) {
  {
    std::lock_guard vlock(VmMutex(uuid));
    auto as = AssignmentsOf(uuid);
    if (!as || as->empty()) return;
    for (const auto& a : *as) {
      // The unplugged disk's filter is the one nothing uses any more.
      auto used = live_.HasParent(uuid, a.node_name);
      if (!used || *used) continue;
      auto removed = live_.RemoveOrphan(uuid, a.node_name, uuid + "/" + a.target);
      if (!removed) {
        Log("error", name, a.target, "hot-unplug",
            "device " + alias + " was detached from the running VM, but its filter " +
                a.node_name + " could not be removed: " + removed.error().message);
        continue;
      }
      Log("info", name, a.target, "hot-unplug",
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
      Log("warning", name, "", "undefine",
          "the VM's definition was removed from libvirt; the assignments of " + Join(ts, ", ") +
              " are kept (and reported) until their policies are unassigned, which also "
              "deletes their SSD tier files");
    }
  }
  if (ev == libvirt::Lifecycle::kMigratedAway) ReleaseMigratedTiers(uuid, name);
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
