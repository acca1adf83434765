#include "manager/core/ssd_tiers.h"

#include <set>

#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/util.h"

namespace hc::core {

using nlohmann::json;

namespace {

// How an operator gives up a disk's SSD tier (CLI and API).
std::string ForgetHint(const std::string& vm, const std::string& target) {
  return "'hostcachectl disk forget-tier " + vm + " " + target + "' (POST /api/v1/vms/" + vm +
         "/disks/" + target + "/ssd-tier/forget)";
}

// Whether a tier file the driver had formatted for `origin_id` is gone:
// missing, blank, or formatted for another origin ("" = it is there, or
// cannot be read).
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

}  // namespace

bool OurSsdFile(const std::string& path, const std::string& uuid, const std::string& target) {
  const std::string tail = "/" + uuid + "-" + target + kSsdSuffix;
  return path.size() > tail.size() &&
         path.compare(path.size() - tail.size(), tail.size(), tail) == 0;
}

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

SsdPlan SsdTiers::Plan(const TierVm& vm, const store::Assignment& a, const policy::Rules& r,
                       bool may_replace) {
  SsdPlan p;
  if (r.ssd_size == 0) return p;
  if (!roots_.Locate(r.ssd_dir)) {
    // (A policy stored before the roots were checked: nothing is made,
    // moved or deleted there.)
    p.problem = "policy '" + a.policy + "' has ssd-dir " + r.ssd_dir + ", but " +
                roots_.NotUnder(r.ssd_dir) +
                "; the disk is cached in RAM only until the policy's ssd-dir is changed";
    return p;
  }
  policy::SsdSpec spec = MakeSsdSpec(r, vm.uuid, a.target, a.node_name);
  auto create = Prepare(vm, a.target, spec, r.ssd_size, may_replace, &p.lost);
  if (!create) {
    p.problem = create.error().message + "; the disk is cached in RAM only until this is fixed";
    return p;
  }
  spec.create = *create;
  if (p.lost.empty()) {
    auto rec = store_.GetSsdTier(vm.uuid, a.target);
    if (rec && *rec && (*rec)->path == spec.filename) {
      p.stale = Stale(vm, **rec);
      if (!p.stale.empty()) return p;
    }
  }
  p.spec = std::move(spec);
  return p;
}

std::string SsdTiers::Stale(const TierVm& vm, store::SsdTier t) {
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
    if (!vm.active) return "";
    auto open = vm.OpenInQemu(t.path);
    if (!open || *open) return "";  // in use (or cannot tell: nothing is inserted then)
    t.stale = true;
    t.updated_ms = clock_.NowMs();
    if (auto s = store_.PutSsdTier(t); !s) {
      spdlog::error("cannot record the stale SSD tier {}: {}", t.path, s.error().message);
    }
  }
  return "the SSD tier file " + t.path + " of " + t.target +
         " was not closed cleanly (the VM or the host stopped abruptly) and may hold a write-back "
         "journal, but VM '" + vm.name + "' then ran without its filter (it was started without "
         "the cache; was its definition edited?), so the guest may have written to the disk "
         "since: writing that journal back now could overwrite newer data. hostcached does not "
         "insert the filter (nor put it in the definition) with this tier, and the disk is not "
         "cached. Give the journal up with " + ForgetHint(vm.name, t.target) +
         ": the file is deleted, and the filter is inserted with a fresh tier";
}

void SsdTiers::Lost(const TierVm& vm, const std::string& target, const std::string& path,
                    const std::string& how, std::string* lost) {
  *lost = "the SSD tier file " + path + " of " + target + " " + how +
          ", but the driver had formatted it for this disk, and it may have held write-back "
          "data that is not on the disk yet. hostcached does not make a new tier in its "
          "place, and the VM's definition opens the tier with ssd-create=off, so the VM does "
          "not start without it. Restore the file if you can; otherwise give that data up "
          "with " + ForgetHint(vm.name, target) + ", and a new tier is made";
}

Result<bool> SsdTiers::MoveRecord(const TierVm& vm, const std::string& target,
                                  const policy::SsdSpec& spec, std::optional<store::SsdTier>& t,
                                  std::string* lost) {
  const SsdFileInfo old = ReadSsdFile(t->path);
  if (t->formatted) {
    if (auto how = TierGone(old, t->origin_id); !how.empty()) {
      Lost(vm, target, t->path, how, lost);
      return false;
    }
  }
  if (old.state == SsdFileState::kOpen) {
    // It may still hold the disk's data (a running filter has it, or the
    // VM stopped abruptly): the record stays with it until the filter
    // that uses it is replaced by one on the new file.
    return true;
  }
  // Clean copies at most: the tier moves to the new file.
  if (old.state != SsdFileState::kMissing && OurSsdFile(t->path, vm.uuid, target)) {
    if (auto s = RemoveSsdFile(t->path, roots_); s) {
      log_.Log("info", vm.name, target, "ssd",
               "SSD tier file " + t->path + " deleted (it held clean copies only; the disk's "
               "tier is " + spec.filename + " now)");
    }
  }
  if (auto s = store_.DeleteSsdTier(vm.uuid, target); !s) return tl::unexpected(s.error());
  t.reset();
  return false;
}

Result<bool> SsdTiers::Prepare(const TierVm& vm, const std::string& target,
                               const policy::SsdSpec& spec, uint64_t size, bool may_replace,
                               std::string* lost) {
  auto rec = store_.GetSsdTier(vm.uuid, target);
  if (!rec) return tl::unexpected(rec.error());
  std::optional<store::SsdTier> t = *rec;
  bool keep_record = false;
  if (t && t->path != spec.filename) {
    auto keep = MoveRecord(vm, target, spec, t, lost);
    if (!keep) return keep;
    if (!lost->empty()) return false;
    keep_record = *keep;
  }
  if (t && !keep_record && t->formatted) {
    if (auto how = TierGone(ReadSsdFile(spec.filename), t->origin_id); !how.empty()) {
      Lost(vm, target, spec.filename, how, lost);
      return false;
    }
  }
  if (auto s = PrepareSsdFile(spec.filename, size, may_replace, roots_, qemu_owner_()); !s) {
    return tl::unexpected(s.error());
  }
  const SsdFileInfo now = ReadSsdFile(spec.filename);
  const bool formatted = now.formatted() && (now.unreadable || now.origin_id == spec.origin_id);
  if (!keep_record && (!t || t->formatted != formatted)) {
    const int64_t ms = clock_.NowMs();
    store::SsdTier n{vm.uuid, target, spec.filename, spec.origin_id, formatted,
                     t ? t->created_ms : ms, ms};
    if (auto s = store_.PutSsdTier(n); !s) return tl::unexpected(s.error());
    if (formatted) {
      log_.Log("info", vm.name, target, "ssd",
               "the driver has formatted SSD tier file " + spec.filename +
                   " for this disk; the filter opens it with ssd-create=off from now on, so a "
                   "missing or replaced tier file stops the VM from starting instead of losing "
                   "the write-back data it may hold");
    }
  }
  return !formatted;
}

Result<bool> SsdTiers::Empty(const TierVm& vm, const std::string& target, SsdPlan& plan,
                             uint64_t size, const std::string& when, bool event) {
  const std::string file = plan.spec->filename;
  if (auto s = RemoveFile(vm.uuid, target, file); !s) return tl::unexpected(s.error());
  std::string lost;
  auto create = Prepare(vm, target, *plan.spec, size, true, &lost);
  if (!create) return create;
  if (!lost.empty()) return Fail(ErrorCode::kFailedPrecondition, lost);
  plan.spec->create = *create;
  if (event) {
    log_.Log("info", vm.name, target, "ssd-emptied",
             "SSD tier file " + file + " emptied " + when +
                 ", so the guest may have written to the disk meanwhile and the tier's clean "
                 "copies may be stale; the driver formats it afresh (ssd-create on)");
  }
  return *create;
}

Status SsdTiers::RemoveFile(const std::string& uuid, const std::string& target,
                            const std::string& path) {
  if (auto s = RemoveSsdFile(path, roots_); !s) return s;
  auto rec = store_.GetSsdTier(uuid, target);
  if (rec && *rec && (*rec)->path == path) return store_.DeleteSsdTier(uuid, target);
  return {};
}

std::optional<json> SsdTiers::Held(
    const TierVm& vm, const std::map<std::string, libvirt::InstalledFilter>* installed,
    const std::string& target) {
  if (vm.active || !installed) return std::nullopt;  // a running QEMU has it open anyway
  auto it = installed->find(target);
  if (it == installed->end()) return std::nullopt;
  const json& o = it->second.options;
  const std::string f = SsdFileOf(o);
  if (f.empty() || ReadSsdFileState(f) != SsdFileState::kOpen) return std::nullopt;
  return o;
}

std::string SsdTiers::HeldState(const std::string& file) {
  const SsdFileInfo f = ReadSsdFile(file);
  if (f.unreadable) {
    return " cannot be read as a tier (" + f.problem +
           "; a damaged tier, or something put in its place: restore the file, or move it "
           "away if it holds no tier)";
  }
  return " was not closed cleanly (the VM or the host stopped abruptly)";
}

Status SsdTiers::CheckJournalKept(const TierVm& vm,
                                  const std::map<std::string, libvirt::InstalledFilter>* installed,
                                  const std::string& target, const policy::Rules* next,
                                  const std::string& then) {
  auto held = Held(vm, installed, target);
  if (!held) return {};
  const std::string next_file =
      next && next->ssd_size > 0 ? SsdFilePath(next->ssd_dir, vm.uuid, target) : "";
  const std::string risk = JournalRisk(*held, next, next_file);
  if (risk.empty()) return {};
  const std::string file = SsdFileOf(*held);
  return Fail(ErrorCode::kFailedPrecondition,
              "the SSD tier file " + file + " of " + target + HeldState(file) +
                  " and may hold written data the disk does not have yet, which only the driver "
                  "writes back when it opens the tier again, and " + risk + "; start VM '" +
                  vm.name + "' once with its current policy so the driver writes that data "
                  "back, then " + then);
}

void SsdTiers::ForgetFile(const store::Assignment& a) {
  std::set<std::string> paths;
  auto p = store_.GetPolicy(a.policy);
  if (p && p->rules.ssd_size > 0) paths.insert(SsdFilePath(p->rules.ssd_dir, a.vm_uuid, a.target));
  auto rec = store_.GetSsdTier(a.vm_uuid, a.target);
  if (rec && *rec && OurSsdFile((*rec)->path, a.vm_uuid, a.target)) paths.insert((*rec)->path);
  if (rec && *rec && (*rec)->formatted) {
    if (auto how = TierGone(ReadSsdFile((*rec)->path), (*rec)->origin_id); !how.empty()) {
      log_.Log("warning", a.vm_name, a.target, "ssd-forget",
               "SSD tier " + (*rec)->path + " (which " + how +
                   ") is forgotten with the assignment: write-back data it may have held that "
                   "was not on the disk yet is lost");
    }
  }
  (void)store_.DeleteSsdTier(a.vm_uuid, a.target);
  if (rec && *rec && (*rec)->stale && OurSsdFile((*rec)->path, a.vm_uuid, a.target) &&
      ReadSsdFileState((*rec)->path) == SsdFileState::kOpen) {
    // Its journal may be older than the disk: nothing may open it again.
    if (RemoveSsdFile((*rec)->path, roots_, true)) {
      log_.Log("warning", a.vm_name, a.target, "ssd-forget",
               "stale SSD tier file " + (*rec)->path + " (not closed cleanly, and the VM ran "
               "without its filter since) deleted with the assignment, its journal unwritten");
    }
  }
  for (const auto& path : paths) {
    if (!SsdFileSize(path)) continue;
    if (auto s = RemoveSsdFile(path, roots_); !s) {
      log_.Log("warning", a.vm_name, a.target, "ssd",
               "the SSD tier file could not be deleted: " + s.error().message);
    } else {
      log_.Log("info", a.vm_name, a.target, "ssd",
               "SSD tier file " + path + " deleted (it held clean copies only; the filter using "
               "it is gone)");
    }
  }
}

Status SsdTiers::Forget(const TierVm* vm, const store::Assignment& a) {
  const std::string& target = a.target;
  auto rec = store_.GetSsdTier(a.vm_uuid, target);
  if (!rec) return tl::unexpected(rec.error());
  if (!*rec) {
    return Fail(ErrorCode::kNotFound, "no SSD tier is recorded for disk " + target + " of VM '" +
                                          a.vm_name + "'; there is nothing to forget");
  }
  const store::SsdTier t = **rec;
  const SsdFileInfo f = ReadSsdFile(t.path);
  const std::string how = TierGone(f, t.origin_id);
  // A stale tier (its journal may be older than the disk) is given up with
  // its file: nothing may open it again.
  const std::string stale = t.formatted && how.empty() && vm ? Stale(*vm, t) : "";
  if (!stale.empty()) {
    if (OurSsdFile(t.path, a.vm_uuid, target)) {
      if (auto s = RemoveSsdFile(t.path, roots_, true); !s) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "cannot delete the stale SSD tier file " + t.path + ": " + s.error().message);
      }
    }
    if (auto s = store_.DeleteSsdTier(a.vm_uuid, target); !s) return s;
    log_.Log("warning", a.vm_name, target, "ssd-forget",
             "SSD tier " + t.path + " (not closed cleanly, and the VM ran without its filter "
             "since) given up by the operator: its journal, which may have been older than the "
             "disk, is deleted unwritten; a new blank tier is made, and the driver formats it "
             "when the filter next opens");
    return {};
  }
  if (t.formatted && how.empty()) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + t.path + " of " + target + " is there and holds this "
                "disk's tier (" + std::string(SsdFileStateName(f.state)) +
                "): nothing is lost, so there is nothing to forget; to drop the tier, "
                "change the policy or unassign it");
  }
  if (auto s = store_.DeleteSsdTier(a.vm_uuid, target); !s) return s;
  if (t.formatted) {
    log_.Log("warning", a.vm_name, target, "ssd-forget",
             "SSD tier " + t.path + " (which " + how + ") given up by the operator: write-back "
             "data it may have held that was not on the disk yet is lost; a new blank tier is "
             "made, and the driver formats it when the filter next opens");
  } else {
    log_.Log("info", a.vm_name, target, "ssd-forget",
             "record of SSD tier " + t.path + " forgotten (the driver had not formatted it)");
  }
  return {};
}

}  // namespace hc::core
