#include "fakes.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <sstream>

#include <pugixml.hpp>

#include "hc-ssd.h"
#include "manager/core/ssd_files.h"
#include "manager/libvirt/block_graph.h"

#ifndef HC_TEST_DATA
#error HC_TEST_DATA must name tests/manager/data
#endif

namespace hc::testing {

using nlohmann::json;

namespace {
json Error(const std::string& desc) {
  return json{{"error", {{"class", "GenericError"}, {"desc", desc}}}};
}
json Return(const json& r) { return json{{"return", r}}; }

// The driver opening the tier of a new hostcache node ("" = done).
std::string OpenTier(const std::string& node, const json& ssd, const json& o) {
  const std::string path = ssd.value("filename", "");
  const std::string origin = o.value("origin-id", "");
  auto f = core::ReadSsdFile(path);
  if (f.state == core::SsdFileState::kMissing) {
    return "Could not open '" + path + "': No such file or directory";
  }
  if (f.unreadable) return "hostcache: " + f.problem;  // (as hc_ssd_super_pick refuses it)
  const bool foreign = f.formatted() && f.origin_id != origin;
  if (!o.value("ssd-create", true) && (f.state == core::SsdFileState::kBlank || foreign)) {
    return "hostcache: the ssd node '" + ssd.value("node-name", "") + "' " +
           (foreign ? "belongs to another origin" : "is blank") +
           ", but ssd-create=off says it holds the SSD tier of origin '" + origin +
           "': the tier may be missing or replaced, and may hold write-back data not yet on "
           "the origin; restore the tier's file, or open once with ssd-create=on to give that "
           "data up; nothing was changed";
  }
  (void)node;
  WriteSsdSuperblock(path, 7, 2, origin);
  return "";
}
}  // namespace

void WriteSsdSuperblockCopy(const std::string& path, uint64_t generation, uint32_t state,
                            const std::string& origin_id) {
  HcSsdSuper sb = {};
  sb.version = HC_SSD_VERSION;
  sb.block_size = 4096;
  const uint64_t size = std::filesystem::file_size(path);
  char err[256];
  if (hc_ssd_layout(&sb, size, err, sizeof err) != 0) throw std::runtime_error(err);
  sb.generation = generation;
  sb.cache_gen = 1;
  sb.state = state;
  sb.origin_size = 64 << 20;
  origin_id.copy(sb.origin_id, sizeof sb.origin_id - 1);
  uint8_t buf[HC_SSD_SB_SIZE];
  hc_ssd_super_encode(&sb, buf);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>((generation % 2) * HC_SSD_SB_SIZE));
  f.write(reinterpret_cast<const char*>(buf), sizeof buf);
  if (!f) throw std::runtime_error("cannot write a superblock to " + path);
}

void WriteSsdSuperblock(const std::string& path, uint64_t generation, uint32_t state,
                        const std::string& origin_id) {
  // Both copies, the older one a generation below.
  WriteSsdSuperblockCopy(path, generation - 1, state, origin_id);
  WriteSsdSuperblockCopy(path, generation, state, origin_id);
}

json FakeQemu::Execute(const json& cmd) {
  const std::string name = cmd.value("execute", "");
  const json args = cmd.value("arguments", json::object());
  log.push_back(name);
  if (auto it = fail.find(name); it != fail.end()) {
    std::string desc = it->second;
    fail.erase(it);
    return Error(desc);
  }
  if (name == "query-block") {
    json arr = json::array();
    for (const auto& [qdev, root] : devs) {
      json e{{"device", ""}, {"qdev", qdev}};
      if (!root.empty()) e["inserted"] = json{{"node-name", root}, {"drv", nodes[root].driver}};
      arr.push_back(e);
    }
    return Return(arr);
  }
  if (name == "query-blockstats") {
    json arr = json::array();
    for (const auto& [n, node] : nodes) {
      json e{{"node-name", n}, {"stats", json::object()}};
      if (node.driver == "hostcache") {
        e["driver-specific"] = json{{"driver", "hostcache"},
                                    {"mode", node.options.value("mode", "write-through")},
                                    {"block-size", node.options.value("block-size", 4096)},
                                    {"ram-limit", node.options.value("ram-size", 256 << 20)},
                                    {"read-hits", 10},
                                    {"read-misses", 5}};
        auto& ds = e["driver-specific"];
        if (ds["mode"] == "write-back") ds["dirty-bytes"] = dirty.count(n) ? dirty.at(n) : 0;
        if (!node.ssd.empty()) {
          const bool failed = ssd_failed.count(n) > 0;
          ds["ssd-active"] = ssd_active && !failed;
          ds["ssd-size"] = 1 << 20;
          ds["ssd-errors"] = ssd_active && !failed ? 0 : 3;
          if (report_options) {
            ds["ssd-failed"] = failed;
            ds["ssd-dirty-bytes"] = ds["mode"] == "write-back" ? 8192 : 0;
            ds["origin-id"] = node.options.value("origin-id", "");
          }
        }
        if (report_options) {
          uint64_t ram = node.options.value("ram-size", uint64_t{256} << 20);
          ds["admit-after"] = node.options.value("admit-after", uint64_t{1});
          ds["seq-cutoff"] = node.options.value("seq-cutoff", uint64_t{4} << 20);
          uint64_t bs = node.options.value("block-size", uint64_t{4096});
          ds["max-dirty"] = node.options.value("max-dirty", std::max(ram / 2, bs));
          ds["max-dirty-age-ms"] = node.options.value("max-dirty-age-ms", uint64_t{5000});
        }
        if (counters.count(n)) ds.update(counters.at(n));
      } else if (node.driver == "file") {
        e["driver-specific"] = json{{"driver", "file"}, {"discard-nb-ok", 0}};
      }
      arr.push_back(e);
    }
    return Return(arr);
  }
  if (name == "x-debug-query-block-graph") {
    json ns = json::array(), es = json::array();
    std::map<std::string, int> id;
    int next = 1;
    for (const auto& [n, _] : nodes) id[n] = next++;
    for (const auto& [n, node] : nodes) {
      ns.push_back(json{{"id", id[n]}, {"type", "block-driver"}, {"name", n}});
      if (!node.file.empty()) {
        es.push_back(json{{"parent", id[n]}, {"child", id[node.file]}, {"name", "file"}});
      }
      if (!node.ssd.empty()) {
        es.push_back(json{{"parent", id[n]}, {"child", id[node.ssd]}, {"name", "ssd"}});
      }
    }
    for (const auto& [qdev, root] : devs) {
      int bb = next++;
      ns.push_back(json{{"id", bb}, {"type", "block-backend"}, {"name", ""}});
      es.push_back(json{{"parent", bb}, {"child", id[root]}, {"name", "root"}});
    }
    return Return(json{{"nodes", ns}, {"edges", es}});
  }
  if (name == "query-named-block-nodes") {
    json arr = json::array();
    for (const auto& [n, node] : nodes) {
      arr.push_back(json{{"node-name", n}, {"drv", node.driver},
                         {"file", node.filename.empty() ? "json:{}" : node.filename}});
    }
    return Return(arr);
  }
  if (name == "blockdev-add" || name == "blockdev-reopen") {
    json o = name == "blockdev-add" ? args : args["options"][0];
    std::string node = o.value("node-name", "");
    std::string file = o.value("file", "");
    if (o.value("driver", "") == "hostcache" && o.value("mode", "") == refuse_mode) {
      return Error("hostcache mode '" + refuse_mode + "' is not supported by this build yet");
    }
    if (!nodes.count(file)) return Error("Cannot find device='' nor node-name='" + file + "'");
    std::string ssd;
    if (name == "blockdev-add") {
      if (nodes.count(node)) return Error("Duplicate nodes with node-name='" + node + "'");
      // As the driver: write-back takes WRITE on its file child, which a
      // device still using that node does not share.
      if (o.value("driver", "") == "hostcache" && o.value("mode", "") == "write-back") {
        for (const auto& [qdev, root] : devs) {
          if (root == file) {
            return Error("Permission conflict on node '" + file +
                         "': permissions 'write' are both required by node '" + node +
                         "' and unshared by block device '" + qdev + "'");
          }
        }
      }
      if (o.contains("ssd")) {
        if (!o["ssd"].is_object()) return Error("fake: give the ssd child inline");
        ssd = o["ssd"].value("node-name", "#block" + std::to_string(nodes.size()));
        if (nodes.count(ssd)) return Error("Duplicate nodes with node-name='" + ssd + "'");
        if (o.value("driver", "") == "hostcache") {
          if (auto err = OpenTier(node, o["ssd"], o); !err.empty()) return Error(err);
        }
        nodes[ssd] = Node{"file", "", {}, "", o["ssd"].value("filename", "")};
      }
    } else {
      if (!nodes.count(node)) return Error("Cannot find node-name='" + node + "'");
      const Node& cur = nodes[node];
      if (cur.options.value("block-size", 4096) != o.value("block-size", 4096)) {
        return Error("hostcache: block-size cannot be changed on an open node");
      }
      // As QEMU: a child must be named (as the current one), and options
      // without a default cannot be left out.
      if (!cur.ssd.empty() && !o.contains("ssd")) {
        return Error("Option 'driver' cannot be reset to its default value");
      }
      if (o.contains("ssd") && (!o["ssd"].is_string() || o["ssd"].get<std::string>() != cur.ssd)) {
        return Error("Cannot change the option 'ssd'");
      }
      if (cur.options.contains("origin-id") && !o.contains("origin-id")) {
        return Error("Option 'origin-id' cannot be reset to its default value");
      }
      ssd = cur.ssd;
      o["ssd"] = cur.options.value("ssd", json());
      if (o["ssd"].is_null()) o.erase("ssd");
    }
    nodes[node] = Node{o.value("driver", ""), file, o, ssd, ""};
    return Return(json::object());
  }
  if (name == "qom-set") {
    std::string path = args.value("path", "");
    if (!devs.count(path)) return Error("Device '" + path + "' not found");
    std::string value = args.value("value", "");
    if (!nodes.count(value)) return Error("Cannot find node '" + value + "'");
    devs[path] = value;
    return Return(json::object());
  }
  if (name == "blockdev-del") {
    std::string node = args.value("node-name", "");
    if (!nodes.count(node)) return Error("Failed to find node with node-name='" + node + "'");
    for (const auto& [_, root] : devs) {
      if (root == node) return Error("Node " + node + " is in use");
    }
    for (const auto& [_, n] : nodes) {
      if (n.file == node || n.ssd == node) return Error("Node " + node + " is in use");
    }
    std::string implicit = nodes[node].ssd;  // created with it: goes with it
    if (!implicit.empty() && std::filesystem::is_regular_file(nodes[implicit].filename) &&
        core::ReadSsdFile(nodes[implicit].filename).formatted()) {
      // Closed cleanly.
      WriteSsdSuperblock(nodes[implicit].filename, 8, 1,
                         nodes[node].options.value("origin-id", ""));
    }
    ssd_failed.erase(node);
    nodes.erase(node);
    if (!implicit.empty()) nodes.erase(implicit);
    return Return(json::object());
  }
  return Error("The command " + name + " has not been found");
}

FakeLibvirt::Domain& FakeLibvirt::Add(const std::string& uuid, const std::string& name,
                                      const std::string& inactive_xml,
                                      const std::string& live_xml) {
  Domain& d = domains[uuid];
  d.uuid = uuid;
  d.name = name;
  d.inactive_xml = inactive_xml;
  d.live_xml = live_xml;
  d.active = !live_xml.empty();
  if (d.active) {
    // QEMU's graph from the live XML: each disk's top node (libvirt-N-*)
    // under a device /machine/peripheral/<alias>/virtio-backend.
    auto info = libvirt::ParseDomain(live_xml);
    for (const auto& disk : info->disks) {
      if (disk.empty()) continue;
      std::string top = libvirt::LibvirtNodeName(disk, disk.index);
      std::string storage = "libvirt-" + std::to_string(disk.index) + "-storage";
      d.qemu.nodes[storage] = FakeQemu::Node{"file", "", {}, "", disk.source};
      if (top != storage) d.qemu.nodes[top] = FakeQemu::Node{disk.format, storage, {}, "", ""};
      d.qemu.devs["/machine/peripheral/" + disk.alias + "/virtio-backend"] = top;
    }
  }
  return d;
}

Result<std::vector<libvirt::DomainRef>> FakeLibvirt::ListDomains() {
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  std::vector<libvirt::DomainRef> out;
  for (const auto& [u, d] : domains) out.push_back({u, d.name, d.active, d.persistent});
  return out;
}

Result<libvirt::DomainRef> FakeLibvirt::LookupDomain(const std::string& name_or_uuid) {
  if (on_lookup) on_lookup(name_or_uuid);
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  // As libvirt's C API: the name ends at the first NUL.
  const std::string id = name_or_uuid.c_str();
  for (const auto& [u, d] : domains) {
    if (u == id || d.name == id) return libvirt::DomainRef{u, d.name, d.active, d.persistent};
  }
  return Fail(ErrorCode::kNotFound, "libvirt has no VM named or with UUID '" + id + "'");
}

Result<std::string> FakeLibvirt::GetXml(const std::string& uuid, unsigned flags) {
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  auto it = domains.find(uuid);
  if (it == domains.end()) return Fail(ErrorCode::kNotFound, "no domain " + uuid);
  const bool inactive = (flags & libvirt::kXmlInactive) || !it->second.active;
  const std::string& xml = inactive ? it->second.inactive_xml : it->second.live_xml;
  if ((flags & libvirt::kXmlSecure) || xml.find("passwd=") == std::string::npos) return xml;
  pugi::xml_document doc;
  if (!doc.load_string(xml.c_str(), pugi::parse_default | pugi::parse_declaration)) return xml;
  for (auto g : doc.select_nodes("/domain/devices/graphics")) {
    g.node().remove_attribute("passwd");
  }
  std::ostringstream out;
  doc.save(out, "  ");
  return out.str();
}

Result<std::string> FakeLibvirt::GetMetadata(const std::string& uuid, const std::string& uri,
                                             bool live) {
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  auto it = domains.find(uuid);
  if (it == domains.end()) return Fail(ErrorCode::kNotFound, "no domain " + uuid);
  const auto& m = live ? it->second.metadata_live : it->second.metadata_config;
  auto e = m.find(uri);
  if (e == m.end()) return Fail(ErrorCode::kNotFound, "no metadata (fake)");
  return e->second;
}

Status FakeLibvirt::SetMetadata(const std::string& uuid, const std::string& xml,
                                const std::string& prefix, const std::string& uri, bool live,
                                bool config) {
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  if (!metadata_error.empty()) return Fail(ErrorCode::kInternal, metadata_error);
  auto it = domains.find(uuid);
  if (it == domains.end()) return Fail(ErrorCode::kNotFound, "no domain " + uuid);
  auto& d = it->second;
  if ((live && !d.active) || (config && !d.persistent)) {
    return Fail(ErrorCode::kFailedPrecondition, "fake: no such state of the domain");
  }
  for (auto* m : {live ? &d.metadata_live : nullptr, config ? &d.metadata_config : nullptr}) {
    if (!m) continue;
    if (xml.empty()) {
      m->erase(uri);
    } else {
      // As libvirt: the element comes back with the prefix and namespace.
      auto gt = xml.find_first_of(" />");
      const std::string root = xml.substr(1, gt - 1);
      std::string rest = xml.substr(gt);
      const std::string end = "</" + root + ">";
      if (rest.size() >= end.size() && rest.compare(rest.size() - end.size(), end.size(), end) == 0) {
        rest.replace(rest.size() - end.size(), end.size(), "</" + prefix + ":" + root + ">");
      }
      (*m)[uri] = "<" + prefix + ":" + root + " xmlns:" + prefix + "=\"" + uri + "\"" + rest;
    }
  }
  return {};
}

Status FakeLibvirt::DefineXml(const std::string& xml) {
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  auto info = libvirt::ParseDomain(xml);
  if (!info) return tl::unexpected(info.error());
  for (auto& [u, d] : domains) {
    if (d.name == info->name) {
      std::string kept = xml;
      if (drop_qemu_namespace) {
        // Keep the XML but without our elements, as a driver without the
        // QEMU namespace would.
        auto stripped = libvirt::ApplyFilters(xml, {}, "");
        kept = *stripped;
      }
      d.inactive_xml = kept;
      defines++;
      return {};
    }
  }
  return Fail(ErrorCode::kInternal, "fake: defining new domains is not supported");
}

Result<std::string> FakeLibvirt::DomainCapabilities(const std::string& emulator,
                                                    const std::string& arch,
                                                    const std::string& machine,
                                                    const std::string& virttype) {
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  caps_queries.push_back(emulator + " " + arch + " " + machine + " " + virttype);
  if (!caps_error.empty()) return Fail(ErrorCode::kFailedPrecondition, caps_error);
  return domain_caps.empty() ? std::string("<domainCapabilities/>") : domain_caps;
}

Result<std::string> FakeLibvirt::QemuMonitorCommand(const std::string& uuid,
                                                    const std::string& command_json) {
  if (on_qmp) on_qmp(uuid);
  std::lock_guard lock(mu);
  if (!alive) return Fail(ErrorCode::kUnavailable, "libvirtd is not reachable (fake)");
  auto it = domains.find(uuid);
  if (it == domains.end()) return Fail(ErrorCode::kNotFound, "no domain " + uuid);
  if (!it->second.active) {
    return Fail(ErrorCode::kFailedPrecondition, "Requested operation is not valid: domain is not running");
  }
  const json cmd = json::parse(command_json);
  json reply = it->second.qemu.Execute(cmd);
  if (it->second.qemu.mangle) it->second.qemu.mangle(cmd.value("execute", ""), reply);
  // What the real client does with QEMU's reply text.
  return libvirt::QmpReturn(reply.dump());
}

Status FakeLibvirt::Migrate(const std::string& uuid, const libvirt::MigrateRequest& req) {
  if (on_migrate) on_migrate();
  std::lock_guard lock(mu);
  migrations.push_back(req);
  if (!migrate_error.empty()) return Fail(ErrorCode::kFailedPrecondition, migrate_error);
  auto it = domains.find(uuid);
  if (it == domains.end()) return Fail(ErrorCode::kNotFound, "no domain " + uuid);
  if (req.undefine_source) {
    domains.erase(it);
  } else {
    it->second.active = false;
  }
  return {};
}

Result<int> FakeQemuTools::ChainLength(const libvirt::DiskInfo& disk) {
  auto it = chains.find(disk.source);
  if (it == chains.end()) return 1;
  return it->second;
}

Status FakeQemuTools::CheckOptions(const policy::Rules& rules) {
  checks++;
  if (!refuse_mode.empty() && policy::ModeName(rules.mode) == refuse_mode) {
    return Fail(ErrorCode::kInvalidArgument,
                "hostcache mode '" + refuse_mode + "' is not supported by this build yet");
  }
  return {};
}

std::string TestData(const std::string& name) {
  std::ifstream in(std::string(HC_TEST_DATA) + "/" + name);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ScratchDir::ScratchDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp " + tmpl + " failed");
  path_ = tmpl;
}

ScratchDir::~ScratchDir() { std::filesystem::remove_all(path_); }

}  // namespace hc::testing
