#include "migration/prepare.h"

#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>

#include <pugixml.hpp>

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "manager/libvirt/domain_xml.h"
#include "migration/metadata.h"

namespace hc::migration {

using nlohmann::json;

namespace {

// The carried assignments in the XML's <metadata> (none when absent).
Result<std::vector<CarriedDisk>> CarriedIn(const std::string& xml) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size())) {
    return Fail(ErrorCode::kInvalidArgument, "the incoming domain XML is not XML");
  }
  for (pugi::xml_node n : doc.child("domain").child("metadata").children()) {
    if (n.type() != pugi::node_element) continue;
    bool ours = false;
    for (pugi::xml_attribute a : n.attributes()) {
      std::string_view name = a.name();
      if ((name == "xmlns" || name.substr(0, 6) == "xmlns:") &&
          std::string_view(a.value()) == kMetadataUri) {
        ours = true;
      }
    }
    if (!ours) continue;
    std::ostringstream out;
    n.print(out, "", pugi::format_raw);
    return DecodeAssignments(out.str());
  }
  return std::vector<CarriedDisk>{};
}

// What one incoming disk needs here.
struct Need {
  std::string target;
  std::optional<CarriedDisk> carried;
  std::optional<policy::Policy> here;       // this host's policy of the carried name
  const libvirt::InstalledFilter* filter = nullptr;  // in the XML (nullptr: none)
  policy::Rules rules;                      // what it will run with here
  bool counted = false;                     // takes budget here
  bool tier = false;                        // has an SSD tier here
};

// a + b, at most UINT64_MAX (sizes from hostile input).
uint64_t Add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

}  // namespace

std::string ThisHost() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || !buf[0]) return "this host";
  return std::string("host '") + buf + "'";
}

bool ValidUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); i++) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

Result<Prepared> PrepareIncoming(core::Manager& manager, libvirt::LibvirtClient& lv,
                                 const std::string& xml, const std::string& host) {
  if (xml.size() > kMaxIncomingXml) {
    return Fail(ErrorCode::kInvalidArgument,
                "the incoming domain XML has " + std::to_string(xml.size()) +
                    " bytes, more than the " + std::to_string(kMaxIncomingXml) + " accepted");
  }
  if (xml.find('\0') != std::string::npos) {
    return Fail(ErrorCode::kInvalidArgument, "the incoming domain XML contains a NUL byte");
  }
  auto info = libvirt::ParseDomain(xml);
  if (!info) {
    return Fail(ErrorCode::kInvalidArgument, "the incoming domain XML: " + info.error().message);
  }
  if (!ValidUuid(info->uuid)) {
    return Fail(ErrorCode::kInvalidArgument,
                "the incoming domain XML has no valid <uuid> (8-4-4-4-12 hex digits)");
  }
  auto filters = libvirt::ParseInstalledFilters(xml);
  if (!filters) {
    return Fail(ErrorCode::kInvalidArgument, "the incoming domain XML: " + filters.error().message);
  }
  auto carried = CarriedIn(xml);
  if (!carried) return tl::unexpected(carried.error());
  Prepared out{xml, {}};
  if (filters->empty() && carried->empty()) return out;  // not ours: unchanged

  const std::string vm = "VM '" + info->name + "'";
  const core::ManagerConfig& cfg = manager.config();
  std::map<std::string, Need> needs;
  for (const auto& c : *carried) {
    Need& n = needs[c.target];
    n.target = c.target;
    n.carried = c;
    auto p = manager.GetPolicy(c.policy);
    if (p) {
      n.here = *p;
    } else if (p.error().code != ErrorCode::kNotFound) {
      return tl::unexpected(p.error());
    }
  }
  for (const auto& [t, f] : *filters) {
    if (!libvirt::ValidTarget(t)) {
      return Fail(ErrorCode::kInvalidArgument, "the incoming domain XML has a filter of a disk "
                                               "target that is none");
    }
    needs[t].target = t;
    needs[t].filter = &f;
  }
  uint64_t need_ram = 0, need_ssd = 0;
  std::vector<std::string> ssd_disks;
  bool may_drop_ssd = true;
  for (auto& [t, n] : needs) {
    if (n.here) {
      n.rules = n.here->rules;
    } else if (n.carried) {
      n.rules = n.carried->rules;
    } else {
      // A filter without a carried assignment (an older hostcached, or
      // written by hand): its RAM from its options; a tier of unknown size
      // cannot be prepared.
      n.rules.ram_size = JsonUint(n.filter->options, "ram-size");
      n.rules.ssd_size = 0;
      if (JsonField(n.filter->options, "ssd")) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "hostcache on " + host + " cannot prepare " + vm + ": the filter of " + t +
                        " has an SSD tier but the VM carries no hostcache assignment for it, so "
                        "its size is unknown; assign the policy again on the source host "
                        "(which records it in the VM's metadata) and migrate again");
      }
    }
    // A filter in the XML runs here from the start; a carried disk without
    // one is adopted once the VM runs, if this host has its policy.
    n.counted = n.filter != nullptr || n.here.has_value();
    n.tier = n.counted && n.rules.ssd_size > 0 &&
             (n.filter ? JsonField(n.filter->options, "ssd") != nullptr : true);
    if (!n.counted) continue;
    need_ram = Add(need_ram, n.rules.ram_size);
    if (n.tier) {
      need_ssd = Add(need_ssd, n.rules.ssd_size);
      ssd_disks.push_back(t + " " + HumanSize(n.rules.ssd_size));
      may_drop_ssd = may_drop_ssd && n.rules.migrate_without_ssd;
    }
  }

  // The budget, without what the VM's own assignments here already take.
  core::BudgetView b = manager.Budget();
  if (auto own = manager.AssignmentsOf(info->uuid)) {
    for (const auto& a : *own) {
      auto p = manager.GetPolicy(a.policy);
      if (!p) continue;
      b.ram_used -= std::min(b.ram_used, p->rules.ram_size);
      b.ssd_used -= std::min(b.ssd_used, p->rules.ssd_size);
    }
  }
  if (Add(b.ram_used, need_ram) > b.ram_budget) {
    const uint64_t free = b.ram_budget > b.ram_used ? b.ram_budget - b.ram_used : 0;
    return Fail(ErrorCode::kConflict,
                "hostcache on " + host + " refuses the migration of " + vm +
                    ": not enough cache RAM: its cached disks need " + HumanSize(need_ram) +
                    ", only " + HumanSize(free) + " of this host's " + HumanSize(b.ram_budget) +
                    " RAM budget is free (short by " + HumanSize(need_ram - free) +
                    "); raise ram-budget on " + host + " or migrate to another host");
  }
  bool drop_ssd = false;
  if (need_ssd > 0 && Add(b.ssd_used, need_ssd) > b.ssd_budget) {
    const uint64_t free = b.ssd_budget > b.ssd_used ? b.ssd_budget - b.ssd_used : 0;
    const std::string shortage = "not enough SSD cache space: its SSD tiers (" +
                                 Join(ssd_disks, ", ") + ") need " + HumanSize(need_ssd) +
                                 ", only " + HumanSize(free) + " of this host's " +
                                 HumanSize(b.ssd_budget) + " SSD budget is free (short by " +
                                 HumanSize(need_ssd - free) + ")";
    if (!may_drop_ssd) {
      return Fail(ErrorCode::kConflict,
                  "hostcache on " + host + " refuses the migration of " + vm + ": " + shortage +
                      "; raise ssd-budget on " + host +
                      ", migrate to another host, or let the policy run without its SSD tier "
                      "there (rule migrate-without-ssd: true)");
    }
    drop_ssd = true;
    out.notes.push_back("admitted without SSD tiers (rule migrate-without-ssd): " + shortage);
  }

  // The filters' tier files under this host's SSD root.
  const libvirt::ProcessOwner* owner = nullptr;
  auto qo = lv.QemuProcessOwner();
  if (qo) owner = &*qo;
  std::vector<std::string> created;
  auto undo = [&] {
    for (const auto& f : created) (void)core::RemoveSsdFile(f, cfg.ssd_roots);
  };
  std::vector<libvirt::FilterSpec> specs;
  for (auto& [t, n] : needs) {
    if (!n.filter) continue;
    json opts = n.filter->options;
    if (n.tier && drop_ssd) {
      for (const char* k : {"ssd", "origin-id", "ssd-create"}) opts.erase(k);
      out.notes.push_back(t + ": runs without its SSD tier here");
    } else if (n.tier) {
      const std::string dir = n.here && !n.here->rules.ssd_dir.empty()
                                  ? n.here->rules.ssd_dir
                                  : cfg.ssd_roots.dirs().front();
      const std::string path = core::SsdFilePath(dir, info->uuid, t);
      std::error_code ec;
      const bool existed = std::filesystem::exists(path, ec);
      if (auto s = core::PrepareSsdFile(path, n.rules.ssd_size, false, cfg.ssd_roots, owner); !s) {
        undo();
        return Fail(ErrorCode::kFailedPrecondition,
                    "hostcache on " + host + " cannot prepare the SSD tier of " + t + " of " + vm +
                        ": " + s.error().message);
      }
      if (!existed) created.push_back(path);
      if (opts.contains("ssd") && opts["ssd"].is_object()) opts["ssd"]["filename"] = path;
      if (!existed) opts["ssd-create"] = true;
      out.notes.push_back(t + ": SSD tier " + path + (existed ? " (kept)" : " (made blank)"));
    } else if (JsonField(opts, "ssd")) {
      // A tier the rules here do not give it (ssd-size 0).
      for (const char* k : {"ssd", "origin-id", "ssd-create"}) opts.erase(k);
      out.notes.push_back(t + ": runs without an SSD tier here (its policy here has none)");
    }
    specs.push_back(libvirt::FilterSpec{t, JsonString(opts, "node-name"), opts});
  }
  if (!specs.empty()) {
    auto rewritten = libvirt::ApplyFilters(xml, specs, cfg.emulator);
    if (!rewritten) {
      undo();
      return tl::unexpected(Annotate(rewritten.error(), "rewriting the incoming domain XML"));
    }
    out.xml = *rewritten;
  }
  for (const auto& [t, n] : needs) {
    if (!n.filter && n.here) out.notes.push_back(t + ": policy '" + n.here->name + "' adopted once it runs here");
    if (!n.here && n.carried) {
      out.notes.push_back(t + ": policy '" + n.carried->policy +
                          "' does not exist here; the disk keeps the rules it came with");
    }
  }
  manager.Log("info", info->name, "", "migrate-prepare",
              "incoming live migration prepared on " + host + ": " + Join(out.notes, "; "));
  return out;
}

}  // namespace hc::migration
