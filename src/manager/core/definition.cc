#include "manager/core/definition.h"

#include <algorithm>

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/libvirt/domain_caps.h"

namespace hc::core {

using libvirt::DiskInfo;
using libvirt::DomainInfo;
using libvirt::DomainRef;
using libvirt::FindDisk;
using libvirt::InstalledFilter;
using nlohmann::json;
using store::Assignment;

struct Definition::Plan {
  const DomainInfo& info;
  const Result<std::map<std::string, std::string>>& nodes;  // target -> predicted top node
  const std::map<std::string, InstalledFilter>* installed;  // the definition's filters
  std::map<std::string, std::string> missing;
  std::vector<libvirt::FilterSpec> specs;
};

Result<std::map<std::string, std::string>> Definition::Apply(
    const DomainRef& dom, const TierVm& vm, const std::vector<Assignment>& as,
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
  Plan plan{*info, nodes, installed ? &*installed : nullptr, {}, {}};
  for (const auto& a : as) PlanDisk(vm, a, rules.at(a.target), ssd, plan);
  const std::string emulator = plan.specs.empty() ? "" : emulator_;
  auto updated = libvirt::ApplyFilters(*xml, plan.specs, emulator);
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
  const bool emulator_change = !emulator.empty() && info->emulator != emulator;
  if (emulator_change) {
    // Not switched to a QEMU that lacks what the VM needs (nothing is
    // written; the caller answers 409, a check reports it).
    if (auto s = libvirt::CheckEmulatorCapabilities(lv_, *updated, emulator); !s) {
      return tl::unexpected(s.error());
    }
  }
  if (same && !emulator_change) return plan.missing;
  {
    std::lock_guard lock(mu_);
    auto it = rejected_xml_.find(dom.uuid);
    if (it != rejected_xml_.end() && it->second == *updated) {
      NotKept(as, plan.missing);
      return plan.missing;
    }
  }
  if (auto s = Define(dom, as, *updated, *after, plan.missing); !s) return tl::unexpected(s.error());
  Report(dom, as, *xml, *info, *after, emulator_change ? emulator : "");
  return plan.missing;
}

void Definition::PlanDisk(const TierVm& vm, const Assignment& a, const policy::Rules& r,
                          const std::map<std::string, SsdPlan>& ssd, Plan& plan) {
  if (!FindDisk(plan.info, a.target)) {
    plan.missing[a.target] = "the VM's definition has no disk " + a.target +
                             " any more; unassign the policy or add the disk back";
    return;
  }
  // A tier that was not closed cleanly may hold written data that only
  // the driver's recovery writes back: the definition keeps its filter
  // with that tier until the VM has run with it once.
  // (Changes that keep the tier's journal readable apply; the API
  // refuses the others while the VM is shut off, CheckJournalKept.)
  auto it = ssd.find(a.target);
  if (it != ssd.end() && !it->second.stale.empty()) {
    // Its journal may be older than the disk: no start may open it.
    plan.missing[a.target] = it->second.stale;
    return;
  }
  const policy::SsdSpec* tier = it != ssd.end() && it->second.spec ? &*it->second.spec : nullptr;
  auto held = tiers_.Held(vm, plan.installed, a.target);
  const std::string risk = held ? JournalRisk(*held, &r, tier ? tier->filename : "") : "";
  if (!risk.empty()) {
    if (plan.nodes && plan.nodes->count(a.target)) (*held)["file"] = plan.nodes->at(a.target);
    const json* ssd_opts = JsonField(*held, "ssd");
    const std::string file = ssd_opts ? JsonString(*ssd_opts, "filename") : "";
    plan.missing[a.target] =
        "its SSD tier file " + file + SsdTiers::HeldState(file) +
        " and may hold written data the disk does not have yet, but " + risk +
        "; the definition keeps the filter as it was until the VM has started once (the "
        "driver writes that data back), then the policy's settings apply";
    plan.specs.push_back(libvirt::FilterSpec{a.target, a.node_name, *held});
    return;
  }
  if (auto s = driver_.Check(r); !s) {
    plan.missing[a.target] = "QEMU's hostcache driver refuses this policy's settings (" +
                             s.error().message + "); the disk is left uncached";
    return;
  }
  if (!plan.nodes) {
    plan.missing[a.target] = "cannot tell which node libvirt will give " + a.target +
                             " at the next start: " + plan.nodes.error().message;
    return;
  }
  plan.specs.push_back(libvirt::FilterSpec{
      a.target, a.node_name, policy::DriverOptions(r, a.node_name, plan.nodes->at(a.target), tier)});
}

void Definition::NotKept(const std::vector<Assignment>& as,
                         std::map<std::string, std::string>& missing) {
  for (const auto& a : as) {
    if (!missing.count(a.target)) {
      missing[a.target] = "libvirt does not keep the filter in the VM's definition "
                          "(its driver ignores <qemu:commandline>?)";
    }
  }
}

Status Definition::Define(const DomainRef& dom, const std::vector<Assignment>& as,
                          const std::string& updated,
                          const std::map<std::string, InstalledFilter>& after,
                          std::map<std::string, std::string>& missing) {
  if (auto s = lv_.DefineXml(updated); !s) {
    return tl::unexpected(Annotate(s.error(), "updating the definition of VM '" + dom.name + "'"));
  }
  // Read it back: libvirt must have kept what we wrote.
  auto back = lv_.GetXml(dom.uuid, libvirt::kXmlInactive);
  auto kept = back ? libvirt::ParseInstalledFilters(*back)
                   : Result<std::map<std::string, InstalledFilter>>(
                         tl::unexpected(back.error()));
  bool ok = kept && kept->size() == after.size();
  if (ok) {
    for (const auto& [t, f] : after) {
      auto it = kept->find(t);
      ok = ok && it != kept->end() && it->second.options == f.options;
    }
  }
  std::lock_guard lock(mu_);
  if (!ok) {
    rejected_xml_[dom.uuid] = updated;
    NotKept(as, missing);
  } else {
    rejected_xml_.erase(dom.uuid);
  }
  return {};
}

void Definition::Report(const DomainRef& dom, const std::vector<Assignment>& as,
                        const std::string& xml, const DomainInfo& info,
                        const std::map<std::string, InstalledFilter>& after,
                        const std::string& emulator_set) {
  if (auto had = libvirt::ParseFilterNodeNames(xml)) {
    for (const auto& a : as) {
      if (!FindDisk(info, a.target) &&
          std::find(had->begin(), had->end(), a.node_name) != had->end()) {
        log_.Log("warning", dom.name, a.target, "unplug",
                 "disk " + a.target + " left the VM's definition (detached?): its filter's "
                 "<qemu:commandline> and <qemu:override> entries were removed so the VM can "
                 "start");
      }
    }
  }
  std::vector<std::string> ts;
  for (const auto& [t, _] : after) ts.push_back(t);
  log_.Log("info", dom.name, "", "define",
           "definition updated: filters on " +
               (ts.empty() ? std::string("no disk") : Join(ts, ", ")) +
               (emulator_set.empty() ? std::string() : "; emulator set to " + emulator_set));
}

}  // namespace hc::core
