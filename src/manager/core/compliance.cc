#include "manager/core/compliance.h"

#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "manager/libvirt/block_graph.h"

namespace hc::core {

using libvirt::DiskInfo;
using libvirt::DomainInfo;
using libvirt::DomainRef;
using libvirt::FindDisk;
using store::Assignment;
using store::Compliance;

std::string DescribeRules(const policy::Rules& r) {
  return std::string(policy::ModeName(r.mode)) + ", " + FormatSize(r.ram_size) + " RAM, " +
         FormatSize(r.block_size) + " blocks";
}

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

struct ComplianceCheck::Pass {
  const DomainRef& dom;
  const TierVm& vm;
  const std::string& reapply;
  std::vector<Assignment> as;
  std::map<std::string, policy::Rules> rules;  // target -> its policy's rules
  std::optional<DomainInfo> live;              // the running VM's XML
  std::map<std::string, SsdPlan> ssd;          // target -> its tier in this pass
  std::map<std::string, std::string> missing;  // target -> why the definition lacks it
  // A tier emptied: the definition opens it with ssd-create on again until
  // the driver has formatted it.
  bool emptied = false;
  std::set<std::string> emptied_targets;  // one ssd-emptied event per disk and pass
};

struct ComplianceCheck::Disk {
  const Assignment& a;
  SsdPlan& plan;
  const policy::SsdSpec* want_ssd;  // the tier to attach (nullptr: none)
  policy::Rules r;                  // what the filter runs with (no tier when unusable)
  std::string desc;                 // "filter hc-vda (...)" for messages
  const DiskInfo* ld = nullptr;     // the running VM's disk
  std::string expected;             // the node the filter must sit on ("" unknown)
  libvirt::LiveDisk ins;            // the graph before the repair
  std::string op_error;             // what the repair failed with ("" = nothing)
};

Status ComplianceCheck::Apply(const DomainRef& dom, const TierVm& vm, const std::string& reapply) {
  Pass p{dom, vm, reapply, {}, {}, {}, {}, {}, false, {}};
  if (auto s = Load(p); !s) return s;
  if (p.as.empty()) return {};
  // The SSD tier files: a running VM may have its file open, so a size
  // change waits for the live replacement.
  for (const auto& a : p.as) p.ssd[a.target] = tiers_.Plan(vm, a, p.rules[a.target], !dom.active);
  if (dom.persistent) {
    auto m = definition_.Apply(dom, vm, p.as, p.rules, p.live, p.ssd);
    if (!m) return tl::unexpected(m.error());
    p.missing = *m;
  }
  for (const auto& a : p.as) {
    if (Settle(p, a)) continue;
    if (auto s = CheckRunning(p, a); !s) return s;
  }
  if (dom.active) EmptyUnused(p);
  if (dom.active && dom.persistent) RecordFormatted(p);
  return {};
}

Status ComplianceCheck::Load(Pass& p) {
  auto all = store_.ListAssignments();
  if (!all) return tl::unexpected(all.error());
  for (auto& a : *all) {
    if (a.vm_uuid != p.dom.uuid) continue;
    auto pol = store_.GetPolicy(a.policy);
    if (!pol) return tl::unexpected(pol.error());
    p.rules[a.target] = pol->rules;
    a.vm_name = p.dom.name;  // (renamed in libvirt)
    p.as.push_back(std::move(a));
  }
  if (p.as.empty() || !p.dom.active) return {};
  auto lx = lv_.GetXml(p.dom.uuid, libvirt::kXmlLive);
  if (!lx) return tl::unexpected(lx.error());
  auto li = libvirt::ParseDomain(*lx);
  if (!li) return tl::unexpected(li.error());
  p.live = *li;
  return {};
}

bool ComplianceCheck::Settle(Pass& p, const Assignment& a) {
  const SsdPlan& plan = p.ssd[a.target];
  for (const auto& [why, action] : {std::pair{&plan.lost, "ssd-lost"}, {&plan.stale, "ssd-stale"}}) {
    if (why->empty()) continue;
    // Lost: nothing is made in its place and nothing changes in the
    // running VM (the definition names the tier with ssd-create off).
    // Stale: no filter gets the tier until the operator gives it up.
    if (a.state != Compliance::kError || a.reason != *why) {
      log_.Log("error", p.dom.name, a.target, action, *why);
    }
    SetState(a, Compliance::kError, *why);
    return true;
  }
  policy::Rules r = p.rules[a.target];
  if (!plan.spec) r.ssd_size = 0;
  if (auto s = driver_.Check(r); !s) {
    SetState(a, Compliance::kNotCompliant,
             "QEMU's hostcache driver refuses this policy's settings: " + s.error().message +
                 "; the disk is left uncached until the policy changes");
    return true;
  }
  if (p.dom.active) return false;
  const std::string& missing = p.missing[a.target];
  if (!missing.empty()) {
    SetState(a, Compliance::kNotCompliant, missing);
  } else if (!plan.problem.empty()) {
    SetState(a, Compliance::kNotCompliant, plan.problem);
  } else {
    SetState(a, Compliance::kPendingRestart,
             "the VM is shut off; its definition carries " +
                 ("filter " + a.node_name + " (" + DescribeRules(p.rules[a.target]) +
                  (plan.spec ? ", SSD tier " + FormatSize(r.ssd_size) : std::string()) +
                  ", policy '" + a.policy + "')") +
                 ", which QEMU opens when the VM starts");
  }
  return true;
}

Status ComplianceCheck::CheckRunning(Pass& p, const Assignment& a) {
  SsdPlan& plan = p.ssd[a.target];
  Disk d{a, plan, plan.spec ? &*plan.spec : nullptr, p.rules[a.target], "", nullptr, "", {}, ""};
  if (!d.want_ssd) d.r.ssd_size = 0;
  d.desc = "filter " + a.node_name + " (" + DescribeRules(p.rules[a.target]) +
           (d.want_ssd ? ", SSD tier " + FormatSize(d.r.ssd_size) : std::string()) +
           ", policy '" + a.policy + "')";
  d.ld = FindDisk(*p.live, a.target);
  if (!d.ld) {
    const std::string& missing = p.missing[a.target];
    SetState(a, Compliance::kNotCompliant,
             "the running VM has no disk " + a.target + " (hot-unplugged?); " +
                 (missing.empty() ? std::string("its definition still has it, so it is cached "
                                                "again at the next start")
                                  : missing));
    return {};
  }
  d.expected = d.ld->index > 0 ? libvirt::LibvirtNodeName(*d.ld, d.ld->index) : "";
  auto ins = live_.Inspect(p.dom.uuid, d.ld->alias);
  if (!ins) {
    if (ins.error().code == ErrorCode::kUnavailable) return tl::unexpected(ins.error());
    SetState(a, Compliance::kError,
             "cannot read QEMU's block graph for " + a.target + ": " + ins.error().message);
    return {};
  }
  d.ins = *ins;
  if (d.ins.has_filter && d.ins.root != a.node_name) {
    SetState(a, Compliance::kNotCompliant,
             "another hostcache node (" + d.ins.root + ") is on " + a.target +
                 ", not managed by hostcached; remove it to let the policy apply");
    return {};
  }
  Repair(p, d);
  Verify(p, d);
  return {};
}

void ComplianceCheck::Note(Pass& p, Disk& d, const Status& s, const std::string& what,
                           const std::string& why) {
  if (!s) {
    d.op_error = s.error().message;
    return;
  }
  log_.Log("info", p.dom.name, d.a.target, what,
           d.desc + ": " + what + " done in the running VM" + (why.empty() ? "" : " (" + why + ")"));
}

void ComplianceCheck::Repair(Pass& p, Disk& d) {
  const Assignment& a = d.a;
  const libvirt::LiveDisk& ins = d.ins;
  if (!ins.has_filter) {
    Note(p, d, Insert(p, d, ins), "insert-live");
    return;
  }
  const bool wrong_child = !d.expected.empty() && ins.filter_child != d.expected &&
                           ins.filter_child.rfind("libvirt-", 0) == 0;
  const std::string ssd_diff = SsdDifference(ins, d.want_ssd, d.r);
  if (wrong_child) {
    log_.Log("error", p.dom.name, a.target, "verify",
             "filter " + a.node_name + " sits on node " + ins.filter_child + ", but " + a.target +
                 "'s image is node " + d.expected + "; moving it");
    Note(p, d, Replace(p, d, d.expected), "repair-live");
  } else if (!ssd_diff.empty()) {
    // The driver cannot change its ssd child live.
    log_.Log("info", p.dom.name, a.target, "verify", ssd_diff + "; replacing the filter");
    Note(p, d, Replace(p, d, ins.filter_child), "replace-live");
  } else if (a.target == p.reapply && !libvirt::SsdFailure(ins.stats).empty()) {
    // The driver never uses a failed tier again: a new filter attaches it
    // afresh (a periodic check does not, a failing device would only fail
    // again).
    log_.Log("info", p.dom.name, a.target, "verify",
             "the SSD tier had failed with an I/O error; the policy is re-applied, so the "
             "filter is replaced to attach the tier again");
    Note(p, d, Replace(p, d, ins.filter_child), "replace-live", "the SSD tier had failed");
  } else if (auto diffs = libvirt::CompareSettings(ins.stats, d.r); !diffs.empty()) {
    policy::Rules running;  // what a reopen must keep: the block size
    running.block_size = JsonUint(ins.stats, "block-size");
    if (policy::ReopenCompatible(running, d.r)) {
      Note(p, d, live_.Reopen(p.dom.uuid, a.node_name, ins.filter_child, d.r, d.want_ssd),
           "reopen-live", Join(diffs, "; "));
    } else {
      Note(p, d, Replace(p, d, ins.filter_child), "replace-live", Join(diffs, "; "));
    }
  } else if (!libvirt::UnreportedOptions(ins.stats).empty()) {
    // QEMU does not report these options: assert them again (a reopen with
    // the options the node has changes nothing).
    if (auto s = live_.Reopen(p.dom.uuid, a.node_name, ins.filter_child, d.r, d.want_ssd); !s) {
      d.op_error = s.error().message;
    }
  }
}

// The one way a filter goes into a running VM (inserted, or put back by
// Replace): the VM ran without it until now, if only for a moment, and the
// guest may have written to the disk meanwhile, so a tier closed cleanly is
// emptied first (its clean copies may be stale; nothing but warmth is
// lost).  A start through the definition has the filter from the first I/O
// and keeps its warm tier.
Status ComplianceCheck::Insert(Pass& p, Disk& d, const libvirt::LiveDisk& under) {
  const Assignment& a = d.a;
  if (!d.want_ssd) return live_.Insert(p.dom.uuid, under, d.r, a.node_name, nullptr);
  const std::string& file = d.want_ssd->filename;
  std::string lost;
  auto create = tiers_.Prepare(p.vm, a.target, *d.want_ssd, d.r.ssd_size, true, &lost);
  if (!create) return tl::unexpected(create.error());
  if (!lost.empty()) return Fail(ErrorCode::kFailedPrecondition, lost);
  // The filter is not in the running VM: a tier not closed cleanly is not
  // its (SsdTiers::Stale), and its journal may be older than the disk.
  if (ReadSsdFileState(file) == SsdFileState::kOpen &&
      p.vm.OpenInQemu(file) != std::optional<bool>(true)) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + file +
                    " was not closed cleanly, and the filter is not in the running VM; its "
                    "journal is not written back over what the guest may have written since");
  }
  if (ReadSsdFileState(file) == SsdFileState::kClean) {
    create = EmptyTier(p, a, d.plan, d.r.ssd_size,
                       "before the filter is inserted live: the VM ran without the cache");
    if (!create) return tl::unexpected(create.error());
  }
  policy::SsdSpec tier = *d.want_ssd;
  tier.create = *create;
  return live_.Insert(p.dom.uuid, under, d.r, a.node_name, &tier);
}

// A tier file of ours that the new filter does not use is deleted once the
// old filter is gone.
Status ComplianceCheck::Replace(Pass& p, Disk& d, const std::string& under) {
  const Assignment& a = d.a;
  Status s = live_.Remove(p.dom.uuid, d.ins, p.dom.uuid + "/" + a.target);
  if (!s) return s;
  if (!d.ins.ssd_file.empty() && (!d.want_ssd || d.ins.ssd_file != d.want_ssd->filename) &&
      OurSsdFile(d.ins.ssd_file, p.dom.uuid, a.target)) {
    (void)tiers_.RemoveFile(p.dom.uuid, a.target, d.ins.ssd_file);
  }
  return Insert(p, d, libvirt::LiveDisk{d.ins.qdev, under, false, "", {}, "", ""});
}

void ComplianceCheck::Verify(Pass& p, Disk& d) {
  const Assignment& a = d.a;
  const std::string& missing = p.missing[a.target];
  auto after = live_.Inspect(p.dom.uuid, d.ld->alias);
  std::vector<std::string> problems;
  std::string ssd_failed;  // the tier failed (nothing to repair here)
  const bool in_place = after && after->has_filter && after->root == a.node_name;
  if (!after) {
    problems.push_back("cannot read QEMU's block graph: " + after.error().message);
  } else if (!in_place) {
    problems.push_back("the device reads from " + after->root + ", not from the filter");
  } else {
    if (!d.expected.empty() && after->filter_child != d.expected &&
        after->filter_child.rfind("libvirt-", 0) == 0) {
      problems.push_back("the filter sits on " + after->filter_child + ", not on " + d.expected);
    }
    for (auto& diff : libvirt::CompareSettings(after->stats, d.r)) problems.push_back(diff);
    if (auto diff = SsdDifference(*after, d.want_ssd, d.r); !diff.empty()) problems.push_back(diff);
    ssd_failed = libvirt::SsdFailure(after->stats);
  }
  if (problems.empty() && d.op_error.empty()) {
    if (!ssd_failed.empty()) {
      SetState(a, Compliance::kNotCompliant, ssd_failed);
    } else if (!missing.empty()) {
      SetState(a, Compliance::kNotCompliant, "the running VM is cached, but " + missing);
    } else if (!d.plan.problem.empty()) {
      SetState(a, Compliance::kNotCompliant, d.plan.problem);
    } else {
      SetState(a, Compliance::kCompliant,
               d.desc + " is under the device in the running VM" +
                   (p.dom.persistent ? " and in its definition"
                                     : "; the VM is transient, so the filter ends with it"));
    }
    return;
  }
  if (problems.empty()) {
    // In place, but re-asserting the options QEMU does not report failed.
    SetState(a, Compliance::kNotCompliant,
             "the filter is in place, but its settings could not be asserted (" + d.op_error +
                 "); admit-after, seq-cutoff, max-dirty and max-dirty-age-ms may differ from "
                 "the policy");
    return;
  }
  std::string why = d.op_error.empty() ? Join(problems, "; ") : d.op_error;
  if (why.find("does not accept value 'hostcache'") != std::string::npos) {
    why = "the running QEMU (" + (p.live->emulator.empty() ? std::string("?") : p.live->emulator) +
          ") has no hostcache driver; shut the VM down and start it again, a reboot inside the "
          "guest keeps the running QEMU";
  }
  if (in_place) {
    const std::string failed =
        d.op_error.empty() ? std::string() : " (changing it failed: " + d.op_error + ")";
    SetState(a, Compliance::kNotCompliant,
             "the running VM's filter differs from the policy: " + Join(problems, "; ") + failed +
                 (ssd_failed.empty() ? std::string() : "; " + ssd_failed));
  } else if (p.dom.persistent && missing.empty()) {
    SetState(a, Compliance::kPendingRestart,
             "the running VM did not take the filter live (" + why +
                 "); its definition carries it, so it takes effect at the next start");
  } else {
    SetState(a, Compliance::kNotCompliant, "the running VM is not cached: " + why);
  }
}

Result<bool> ComplianceCheck::EmptyTier(Pass& p, const Assignment& a, SsdPlan& plan,
                                        uint64_t size, const std::string& when) {
  const bool event = p.emptied_targets.insert(a.target).second;
  auto create = tiers_.Empty(p.vm, a.target, plan, size, when, event);
  if (create) p.emptied = true;
  return create;
}

// A clean tier that the running VM does not have open (the filter was not
// put back live: the driver refuses the policy, the disk is not in the
// running VM, the insertion failed and its blockdev-del closed the tier) is
// emptied too: the VM runs without the cache, and a later start through
// the definition would otherwise serve its copies.  A file in state 2 is
// left alone (SsdTiers::Stale), and so is one whose use cannot be told.
void ComplianceCheck::EmptyUnused(Pass& p) {
  for (const auto& a : p.as) {
    SsdPlan& plan = p.ssd[a.target];
    if (!plan.spec || !plan.lost.empty() || !plan.stale.empty()) continue;
    if (ReadSsdFileState(plan.spec->filename) != SsdFileState::kClean) continue;
    if (p.vm.OpenInQemu(plan.spec->filename) != std::optional<bool>(false)) continue;
    auto e = EmptyTier(p, a, plan, p.rules[a.target].ssd_size,
                       "while the filter is not in the running VM: the VM runs without the "
                       "cache");
    if (!e) {
      spdlog::error("cannot empty the SSD tier file {} of {}/{}: {}", plan.spec->filename,
                    p.dom.name, a.target, e.error().message);
    }
  }
}

// (On while an emptied tier stays blank.)
void ComplianceCheck::RecordFormatted(Pass& p) {
  bool rewrite = p.emptied;
  for (const auto& a : p.as) {
    SsdPlan& plan = p.ssd[a.target];
    if (!plan.spec || !plan.spec->create || !plan.lost.empty()) continue;
    if (!ReadSsdFile(plan.spec->filename).formatted()) continue;
    std::string lost;
    auto create =
        tiers_.Prepare(p.vm, a.target, *plan.spec, p.rules[a.target].ssd_size, false, &lost);
    if (create && !*create && lost.empty()) {
      plan.spec->create = false;
      rewrite = true;
    }
  }
  if (!rewrite) return;
  if (auto m = definition_.Apply(p.dom, p.vm, p.as, p.rules, p.live, p.ssd); !m) {
    log_.Log("error", p.dom.name, "", "define",
             "cannot write the tiers' ssd-create into the definition: " + m.error().message);
  }
}

void ComplianceCheck::SetState(Assignment a, Compliance state, const std::string& reason) {
  const int64_t now = clock_.NowMs();
  const bool changed = a.state != state || a.reason != reason;
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
  if (!changed) return;
  const std::string level = state == Compliance::kError          ? "error"
                            : state == Compliance::kNotCompliant ? "warning"
                                                                 : "info";
  log_.Log(level, a.vm_name, a.target, "compliance",
           std::string(store::ComplianceName(state)) + ": " + reason);
}

}  // namespace hc::core
