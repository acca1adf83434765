#include "migration/migrator.h"

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "manager/core/ssd_tiers.h"
#include "manager/libvirt/block_graph.h"
#include "manager/libvirt/domain_xml.h"

namespace hc::migration {

using core::MakeSsdSpec;
using core::OurSsdFile;
using core::Peer;
using core::Peers;
using core::RemoveSsdFile;
using core::SsdFileSize;
using libvirt::DiskInfo;
using libvirt::DomainRef;
using libvirt::FindDisk;

Result<std::string> Migrator::MigrationXml(const std::string& vm) {
  auto dom = lv_.LookupDomain(vm);
  if (!dom) return tl::unexpected(dom.error());
  auto vlock = manager_.vm_locks().Lock(dom->uuid);
  return MigrationXmlLocked(*dom);
}

Result<std::string> Migrator::MigrationXmlLocked(const DomainRef& dom) {
  if (!dom.active) {
    return Fail(ErrorCode::kFailedPrecondition,
                "VM '" + dom.name + "' is not running; an offline migration takes its "
                "definition, which already carries the filters (virsh dumpxml --inactive)");
  }
  auto as = manager_.AssignmentsOf(dom.uuid);
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
    if (!d || !nodes->count(a.target) || !manager_.driver_check().Check(p->rules)) continue;
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

Result<double> Migrator::Migrate(const std::string& vm, libvirt::MigrateRequest req,
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
    auto vlock = manager_.vm_locks().Lock(dom->uuid);
    // The policy's options, from the store (never the drain's value).
    auto xml = MigrationXmlLocked(*dom);
    if (!xml) return tl::unexpected(xml.error());
    req.dest_xml = *xml;
    // Migrating from here on: a check would re-assert the policy's
    // max-dirty-age-ms over the drain's.
    if (!registry_.Begin(dom->uuid, "draining")) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "VM '" + dom->name + "' is already being live-migrated");
    }
  }
  auto as = manager_.AssignmentsOf(dom->uuid);
  std::string disks;
  if (as) {
    for (const auto& a : *as) disks += (disks.empty() ? "" : ", ") + a.target;
  }
  Log("info", dom->name, "", "migrate",
      "live migration to " + where + " requested" +
          (disks.empty() ? std::string() : "; the filters of " + disks + " go with the XML"));
  auto drained =
      DrainWriteBack(*dom, drain_timeout_ms < 0 ? config_.drain_timeout_ms : drain_timeout_ms);
  registry_.SetPhase(dom->uuid, "migrating");
  const int64_t t0 = clock_.NowMs();
  if (auto s = lv_.Migrate(dom->uuid, req); !s) {
    Log("error", dom->name, "", "migrate", s.error().message + "; the VM runs on here");
    RestoreDrained(*dom, drained);
    registry_.Set(dom->uuid, false);
    return tl::unexpected(s.error());
  }
  registry_.Set(dom->uuid, false);
  double secs = static_cast<double>(clock_.NowMs() - t0) / 1000.0;
  Log("info", dom->name, "", "migrate",
      "migrated to " + where + " in " + HumanSeconds(secs) +
          (req.undefine_source ? "; its definition here was removed" : ""));
  return secs;
}

void Migrator::ReleaseTiers(const std::string& uuid, const std::string& name) {
  auto vlock = manager_.vm_locks().Lock(uuid);
  auto as = manager_.AssignmentsOf(uuid);
  if (!as) return;
  for (const auto& a : *as) {
    auto rec = store_.GetSsdTier(uuid, a.target);
    if (!rec || !*rec) continue;
    const std::string path = (*rec)->path;
    (void)store_.DeleteSsdTier(uuid, a.target);
    if (!SsdFileSize(path) || !OurSsdFile(path, uuid, a.target)) continue;
    if (auto s = RemoveSsdFile(path, manager_.ssd_roots()); s) {
      Log("info", name, a.target, "ssd",
          "SSD tier file " + path + " deleted: the VM left by live migration, and its filter "
          "wrote everything back and dropped the tier's content as it handed the disk over; "
          "a blank one is made for a migration back");
    }
  }
}

namespace {

DiskProgress DiskFigures(const std::string& target, const nlohmann::json* stats) {
  DiskProgress d;
  d.target = target;
  if (!stats) return d;
  d.reported = true;
  d.dirty_bytes = JsonUint(*stats, "dirty-bytes");
  d.drained_bytes = JsonUint(*stats, "migration-drained-bytes");
  d.warm_up_state = JsonString(*stats, "warm-up-state");
  d.warm_up_blocks = JsonUint(*stats, "warm-up-blocks");
  d.warm_up_done = JsonUint(*stats, "warm-up-done");
  d.warm_up_bytes_received = JsonUint(*stats, "warm-up-bytes-received");
  return d;
}

}  // namespace

Result<MigrationProgress> Migrator::Progress(const std::string& vm) {
  auto dom = lv_.LookupDomain(vm);
  if (!dom) return tl::unexpected(dom.error());
  auto as = manager_.AssignmentsOf(dom->uuid);
  if (!as) return tl::unexpected(as.error());
  MigrationProgress p{dom->name, "none", 0, {}};
  if (auto m = registry_.Get(dom->uuid)) {
    p.phase = m->phase.empty() ? "migrating" : m->phase;
    p.seconds = static_cast<double>(clock_.NowMs() - m->since_ms) / 1000.0;
  }
  std::map<std::string, nlohmann::json> stats;
  if (dom->active && !as->empty()) {
    // (Nodes inactive around the switch-over may not answer: their disks
    // are reported without figures.)
    auto st = live_.Qmp(dom->uuid, "query-blockstats", nlohmann::json{{"query-nodes", true}});
    if (st) stats = libvirt::ParseNodeStats(*st);
  }
  bool warming = false;
  for (const auto& a : *as) {
    auto it = stats.find(a.node_name);
    p.disks.push_back(DiskFigures(a.target, it == stats.end() ? nullptr : &it->second));
    warming = warming || p.disks.back().warm_up_state == "running";
  }
  if (p.phase == "none" && warming) p.phase = "warming-up";
  return p;
}

}  // namespace hc::migration
