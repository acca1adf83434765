#include "migration/coordinator.h"

#include "common/util.h"
#include "manager/libvirt/domain_xml.h"

namespace hc::migration {

using libvirt::Lifecycle;

bool Coordinator::IsMigrationEvent(Lifecycle ev) {
  return ev == Lifecycle::kMigrationOut || ev == Lifecycle::kMigratedAway ||
         ev == Lifecycle::kMigrationIn || ev == Lifecycle::kMigrationResumed;
}

void Coordinator::OnEvent(const std::string& uuid, const std::string& name, Lifecycle ev,
                          const std::string& detail) {
  switch (ev) {
    case Lifecycle::kMigrationOut: Outgoing(uuid, name); break;
    case Lifecycle::kMigratedAway: Away(uuid, name); break;
    case Lifecycle::kMigrationIn: Incoming(uuid, name); break;
    case Lifecycle::kMigrationResumed: Resumed(uuid, name); break;
    default:
      // A start, stop or resume ends what we knew of a migration (e.g. a
      // source that resumed after a failed one, reported without the
      // detail).  A definition arriving with the VM does not.
      bool departed = false;
      if (ev == Lifecycle::kStarted || ev == Lifecycle::kStopped ||
          ev == Lifecycle::kResumed || ev == Lifecycle::kSuspended ||
          ev == Lifecycle::kUndefined) {
        registry_.Set(uuid, false);
        std::lock_guard lock(mu_);
        started_ms_.erase(uuid);
        // Gone with --undefinesource after it left (its undefine), or
        // running here again (no longer departed).
        if (ev == Lifecycle::kUndefined || ev == Lifecycle::kStarted ||
            ev == Lifecycle::kResumed) {
          departed = departed_.erase(uuid) > 0 && ev == Lifecycle::kUndefined;
        }
      }
      if (departed) {
        ForgetDeparted(uuid, name);
        break;
      }
      manager_.OnLifecycle(uuid, name, ev, detail);
      break;
  }
}

std::string Coordinator::CachedDisks(const std::string& uuid) {
  auto as = manager_.AssignmentsOf(uuid);
  if (!as) return "";
  std::string out;
  for (const auto& a : *as) {
    out += (out.empty() ? "" : ", ") + a.target + " (policy '" + a.policy + "')";
  }
  return out;
}

double Coordinator::Elapsed(const std::string& uuid) {
  std::lock_guard lock(mu_);
  auto it = started_ms_.find(uuid);
  if (it == started_ms_.end()) return -1;
  return static_cast<double>(clock_.NowMs() - it->second) / 1000.0;
}

void Coordinator::Outgoing(const std::string& uuid, const std::string& name) {
  const std::string disks = CachedDisks(uuid);
  if (disks.empty()) return;
  registry_.Set(uuid, true, "switch-over");
  {
    std::lock_guard lock(mu_);
    started_ms_.emplace(uuid, clock_.NowMs());
  }
  manager_.Log("info", name, "", "migrate-out",
               "live migration to another host is switching over: the filters of " + disks +
                   " write their dirty data back as QEMU hands the disks over; the destination "
                   "runs them from its start if the XML it starts from has them (hostcached's "
                   "migration XML does), else its hostcached inserts them after the resume");
}

void Coordinator::Away(const std::string& uuid, const std::string& name) {
  const std::string disks = CachedDisks(uuid);
  double took = Elapsed(uuid);
  registry_.Set(uuid, false);
  {
    std::lock_guard lock(mu_);
    started_ms_.erase(uuid);
  }
  if (disks.empty()) return;
  manager_.Log("info", name, "", "migrated-away",
               "the VM now runs on another host" +
                   (took >= 0 ? " (switch-over took " + HumanSeconds(took) + ")" : std::string()) +
                   "; its cached disks " + disks +
                   " are managed there by that host's hostcached once their policies are "
                   "assigned there; here the assignments stay with the definition (unassign them "
                   "if the VM does not come back)");
  migrator_.ReleaseTiers(uuid, name);
  manager_.OnLifecycle(uuid, name, Lifecycle::kMigratedAway);
  // With --undefinesource the definition goes next (or went already): the
  // assignments then live on in the VM's metadata, not here.
  auto dom = lv_.LookupDomain(uuid);
  if (!dom && dom.error().code == ErrorCode::kNotFound) {
    ForgetDeparted(uuid, name);
  } else if (dom) {
    std::lock_guard lock(mu_);
    departed_.insert(uuid);
  }
}

void Coordinator::ForgetDeparted(const std::string& uuid, const std::string& name) {
  auto as = manager_.AssignmentsOf(uuid);
  if (!as || as->empty()) return;
  std::string disks;
  for (const auto& a : *as) {
    if (manager_.Unassign(uuid, a.target)) disks += (disks.empty() ? "" : ", ") + a.target;
  }
  if (disks.empty()) return;
  manager_.Log("info", name, "", "migrated-away",
               "the VM left by live migration with its definition (--undefinesource): the "
               "assignments of " + disks +
                   " travel in its metadata and are forgotten here; it is adopted again if it "
                   "comes back");
}

void Coordinator::Incoming(const std::string& uuid, const std::string& name) {
  registry_.Set(uuid, true, "incoming");
  {
    std::lock_guard lock(mu_);
    started_ms_.emplace(uuid, clock_.NowMs());
    departed_.erase(uuid);  // back here: an undefine no longer means it left
  }
  const std::string disks = CachedDisks(uuid);
  auto xml = lv_.GetXml(uuid, libvirt::kXmlLive);
  std::string filters;
  if (xml) {
    if (auto f = libvirt::ParseInstalledFilters(*xml)) {
      for (const auto& [t, _] : *f) filters += (filters.empty() ? "" : ", ") + t;
    }
  }
  if (disks.empty() && filters.empty()) return;
  manager_.Log("info", name, "", "migrate-in",
               "incoming live migration (paused until switch-over)" +
                   (filters.empty() ? std::string()
                                    : "; the definition it brings has filters on " + filters) +
                   "; compliance is verified when it resumes here");
}

void Coordinator::Resumed(const std::string& uuid, const std::string& name) {
  const double took = Elapsed(uuid);
  registry_.Set(uuid, false);
  {
    std::lock_guard lock(mu_);
    started_ms_.erase(uuid);
  }
  adopter_.AdoptVm(uuid, name);
  manager_.OnLifecycle(uuid, name, Lifecycle::kMigrationResumed);
  auto as = manager_.AssignmentsOf(uuid);
  std::string states;
  if (as) {
    for (const auto& a : *as) {
      states += (states.empty() ? "" : "; ") + a.target + " " +
                std::string(store::ComplianceName(a.state)) +
                (a.state == store::Compliance::kCompliant ? std::string() : " (" + a.reason + ")");
    }
  }
  if (!states.empty()) {
    manager_.Log("info", name, "", "migrate-in",
                 "running here after live migration" +
                     (took >= 0 ? " (incoming for " + HumanSeconds(took) + ")" : std::string()) +
                     "; compliance re-verified from QEMU's block graph: " + states);
    return;
  }
  // No assignment here: are there filters anyway (assigned on the source)?
  auto xml = lv_.GetXml(uuid, libvirt::kXmlLive);
  if (!xml) return;
  auto f = libvirt::ParseInstalledFilters(*xml);
  if (!f || f->empty()) return;
  std::string targets;
  for (const auto& [t, _] : *f) targets += (targets.empty() ? "" : ", ") + t;
  manager_.Log("warning", name, "", "migrate-in",
               "running here after live migration with hostcache filters on " + targets +
                   " that no policy on this host is assigned to; they keep caching as "
                   "configured on the source, unmanaged: assign a policy here "
                   "(PUT /api/v1/vms/" + name + "/disks/<target>/policy) to manage them");
}

}  // namespace hc::migration
