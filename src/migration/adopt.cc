#include "migration/adopt.h"

#include <algorithm>

#include "common/util.h"

namespace hc::migration {

namespace {

std::string Describe(const policy::Rules& r) {
  return std::string(policy::ModeName(r.mode)) + ", " + FormatSize(r.ram_size) + " RAM" +
         (r.ssd_size > 0 ? ", " + FormatSize(r.ssd_size) + " SSD tier" : std::string());
}

// Equal but for ssd-dir, which is each host's own.
bool SameRules(policy::Rules a, policy::Rules b) {
  a.ssd_dir.clear();
  b.ssd_dir.clear();
  return a == b;
}

}  // namespace

void Adopter::LogOnce(const std::string& level, const std::string& vm, const std::string& target,
                      const std::string& message) {
  {
    std::lock_guard lock(mu_);
    if (!logged_.insert(vm + "\n" + target + "\n" + message).second) return;
  }
  manager_.Log(level, vm, target, "adopt", message);
}

std::optional<UnmanagedDisk> Adopter::Unmanaged(const std::string& uuid,
                                                const std::string& target) {
  std::lock_guard lock(mu_);
  auto v = unmanaged_.find(uuid);
  if (v == unmanaged_.end()) return std::nullopt;
  auto d = v->second.find(target);
  if (d == v->second.end()) return std::nullopt;
  return d->second;
}

void Adopter::AdoptAll() {
  auto doms = lv_.ListDomains();
  if (!doms) return;
  for (const auto& d : *doms) AdoptVm(d.uuid, d.name);
}

void Adopter::AdoptVm(const std::string& uuid, const std::string& name) {
  // (Not while it migrates: its nodes, and libvirt's job, are busy.)
  if (manager_.Migrating(uuid)) return;
  auto dom = lv_.LookupDomain(uuid);
  if (!dom) return;
  auto carried = ReadAssignmentMetadata(lv_, *dom);
  if (!carried) {
    if (carried.error().code == ErrorCode::kInvalidArgument) {
      LogOnce("warning", name, "", carried.error().message + "; its disks are not adopted");
    }
    return;
  }
  std::map<std::string, UnmanagedDisk> unmanaged;
  for (const auto& c : *carried) {
    auto here = manager_.FindAssignment(uuid, c.target);
    if (here) continue;  // managed here already (the metadata only tells the next host)
    if (here.error().code != ErrorCode::kNotFound) continue;
    auto pol = manager_.GetPolicy(c.policy);
    if (!pol) {
      if (pol.error().code != ErrorCode::kNotFound) continue;
      UnmanagedDisk u{c, "policy '" + c.policy + "' it came with does not exist on this host; " +
                             "the disk keeps the rules it came with (" + Describe(c.rules) +
                             "), unmanaged; create policy '" + c.policy +
                             "' here (POST /api/v1/policies) and the disk is adopted"};
      LogOnce("warning", dom->name, c.target, u.reason);
      unmanaged[c.target] = std::move(u);
      continue;
    }
    auto a = manager_.Assign(uuid, c.target, c.policy);
    if (!a) {
      LogOnce("error", dom->name, c.target,
              "the VM came with policy '" + c.policy + "' on " + c.target +
                  ", which could not be assigned here: " + a.error().message);
      continue;
    }
    manager_.Log("info", dom->name, c.target, "adopt",
                 "adopted the assignment the VM came with: policy '" + c.policy + "' (" +
                     Describe(c.rules) + ")" +
                     (SameRules(pol->rules, c.rules)
                          ? std::string()
                          : "; this host's policy of that name has other rules (" +
                                Describe(pol->rules) + "), which now apply") +
                     "; " + std::string(store::ComplianceName(a->state)) +
                     (a->reason.empty() ? std::string() : " (" + a->reason + ")"));
  }
  // The metadata follows what this host manages (assignments made before
  // it was kept, or a write that failed), unless it carries disks this
  // host cannot manage: those keep travelling as they came.
  if (unmanaged.empty()) {
    std::vector<CarriedDisk> now = CurrentAssignments(manager_, uuid);
    std::vector<CarriedDisk> had = *carried;
    std::sort(had.begin(), had.end(),
              [](const CarriedDisk& x, const CarriedDisk& y) { return x.target < y.target; });
    if (now != had) RecordAssignments(manager_, lv_, *dom);
  }
  std::lock_guard lock(mu_);
  if (unmanaged.empty()) {
    unmanaged_.erase(uuid);
  } else {
    unmanaged_[uuid] = std::move(unmanaged);
  }
}

}  // namespace hc::migration
