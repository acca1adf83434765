#include "manager/libvirt/domain_xml.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <regex>
#include <set>
#include <sstream>

#include <pugixml.hpp>

#include "common/json_fields.h"

namespace hc::libvirt {
namespace {

using nlohmann::json;

Result<pugi::xml_document*> Load(pugi::xml_document& doc, const std::string& xml) {
  pugi::xml_parse_result r = doc.load_string(xml.c_str(), pugi::parse_default);
  if (!r) {
    return Fail(ErrorCode::kInternal, std::string("unreadable domain XML: ") + r.description());
  }
  if (std::strcmp(doc.document_element().name(), "domain") != 0) {
    return Fail(ErrorCode::kInternal, "domain XML has no <domain> root element");
  }
  return &doc;
}

// Whether `s` can be a namespace prefix (an XML NCName, ASCII only).
bool ValidPrefix(const std::string& s) {
  static const std::regex kRe("^[A-Za-z_][A-Za-z0-9._-]*$");
  return std::regex_match(s, kRe);
}

// The prefix bound to libvirt's QEMU namespace on <domain>, or "".  (pugixml
// does not check names: a prefix no XML parser would take, from a definition
// edited by hand, is not used, or what we write could not be read back.)
std::string QemuPrefix(const pugi::xml_node& domain) {
  for (auto a : domain.attributes()) {
    std::string n = a.name();
    if (n.rfind("xmlns:", 0) == 0 && std::strcmp(a.value(), kQemuNamespace) == 0 &&
        ValidPrefix(n.substr(6))) {
      return n.substr(6);
    }
  }
  return "";
}

std::string SourceOf(const pugi::xml_node& src) {
  if (!src) return "";
  for (const char* attr : {"file", "dev", "dir"}) {
    if (auto a = src.attribute(attr)) return a.value();
  }
  if (auto p = src.attribute("protocol")) {
    return std::string(p.value()) + ":" + src.attribute("name").value();
  }
  if (auto pool = src.attribute("pool")) {
    return std::string(pool.value()) + "/" + src.attribute("volume").value();
  }
  return "";
}

DiskInfo ParseDisk(const pugi::xml_node& d) {
  DiskInfo disk;
  disk.type = d.attribute("type").as_string("file");
  disk.device = d.attribute("device").as_string("disk");
  disk.target = d.child("target").attribute("dev").value();
  disk.bus = d.child("target").attribute("bus").value();
  disk.format = d.child("driver").attribute("type").as_string("raw");
  disk.alias = d.child("alias").attribute("name").value();
  disk.readonly = static_cast<bool>(d.child("readonly"));
  pugi::xml_node src = d.child("source");
  disk.source = SourceOf(src);
  disk.index = src.attribute("index").as_int(0);
  bool slices = src && src.child("slices");
  bool encrypted = (src && src.child("encryption")) || d.child("encryption");
  disk.has_format_layer = !(disk.format == "raw" && !slices && !encrypted);
  // Walk the written backing chain.
  pugi::xml_node b = d.child("backingStore");
  while (b) {
    if (!b.first_child() && !b.first_attribute()) {
      disk.chain_terminated = true;
      break;
    }
    disk.backing_count++;
    b = b.child("backingStore");
  }
  // A raw image cannot have a backing file.
  if (disk.format == "raw") disk.chain_terminated = true;
  return disk;
}

bool IsOurBlockdev(const std::string& value, json* out) {
  json j = json::parse(value, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  // (A definition is edited by people: any field may be of any type.)
  if (JsonString(j, "driver") != "hostcache") return false;
  std::string node = JsonString(j, "node-name");
  if (node.rfind(kNodePrefix, 0) != 0) return false;
  if (out) *out = std::move(j);
  return true;
}

pugi::xml_node ChildOrAppend(pugi::xml_node parent, const std::string& name) {
  pugi::xml_node n = parent.child(name.c_str());
  return n ? n : parent.append_child(name.c_str());
}

// One of our filters on the QEMU command line: the `-blockdev` <arg>, the
// <arg> with its JSON, and the parsed options.
struct OurBlockdevArgs {
  pugi::xml_node flag, value;
  json options;
};

// Our filters among the <arg name="`arg_name`"> children of `cmd` (the
// <qemu:commandline>; a null node has none), in order.
std::vector<OurBlockdevArgs> FindOurBlockdevs(pugi::xml_node cmd, const std::string& arg_name) {
  std::vector<pugi::xml_node> args;
  for (auto a : cmd.children(arg_name.c_str())) args.push_back(a);
  std::vector<OurBlockdevArgs> out;
  for (size_t i = 0; i + 1 < args.size(); i++) {
    json opts;
    if (std::string(args[i].attribute("value").value()) == "-blockdev" &&
        IsOurBlockdev(args[i + 1].attribute("value").value(), &opts)) {
      out.push_back({args[i], args[i + 1], std::move(opts)});
      i++;
    }
  }
  return out;
}

}  // namespace

Result<std::pair<uint32_t, uint32_t>> ParseDacBaseLabel(const std::string& caps) {
  pugi::xml_document doc;
  if (!doc.load_string(caps.c_str())) {
    return Fail(ErrorCode::kInternal, "unreadable libvirt capabilities XML");
  }
  for (auto sm : doc.document_element().child("host").children("secmodel")) {
    if (std::string(sm.child("model").text().as_string()) != "dac") continue;
    for (const char* type : {"kvm", "qemu"}) {
      for (auto bl : sm.children("baselabel")) {
        if (std::string(bl.attribute("type").value()) != type) continue;
        unsigned long uid = 0, gid = 0;
        char tail = 0;
        if (std::sscanf(bl.text().as_string(), "+%lu:+%lu%c", &uid, &gid, &tail) == 2) {
          return std::pair<uint32_t, uint32_t>(static_cast<uint32_t>(uid),
                                               static_cast<uint32_t>(gid));
        }
      }
    }
  }
  return Fail(ErrorCode::kNotFound, "libvirt's capabilities name no DAC label for QEMU");
}

bool ValidTarget(const std::string& target) {
  static const std::regex kRe("^(vd|sd|hd|xvd|ubd)[a-z]{1,3}$|^fd[0-9]$");
  return target.size() <= 16 && std::regex_match(target, kRe);
}

Result<DomainInfo> ParseDomain(const std::string& xml) {
  pugi::xml_document doc;
  if (auto r = Load(doc, xml); !r) return tl::unexpected(r.error());
  pugi::xml_node dom = doc.document_element();
  DomainInfo info;
  info.name = dom.child("name").text().as_string();
  info.uuid = dom.child("uuid").text().as_string();
  pugi::xml_node devices = dom.child("devices");
  info.emulator = devices.child("emulator").text().as_string();
  for (pugi::xml_node d : devices.children("disk")) info.disks.push_back(ParseDisk(d));
  return info;
}

std::string LibvirtNodeName(const DiskInfo& disk, int index) {
  return "libvirt-" + std::to_string(index) + (disk.has_format_layer ? "-format" : "-storage");
}

Result<std::map<std::string, std::string>> PredictTopNodes(const DomainInfo& dom,
                                                           const ChainLengthFn& chain_length) {
  std::map<std::string, std::string> out;
  int next = 1;
  for (auto it = dom.disks.rbegin(); it != dom.disks.rend(); ++it) {
    const DiskInfo& d = *it;
    if (d.empty()) {
      next++;  // an empty drive uses up a number but gets no node
      continue;
    }
    int len = 1 + d.backing_count;
    if (!d.chain_terminated) {
      auto probed = chain_length(d);
      if (!probed) {
        return tl::unexpected(Annotate(probed.error(), "backing chain of " + d.target));
      }
      len = std::max(len, *probed);
    }
    out[d.target] = LibvirtNodeName(d, next);
    next += len;
  }
  return out;
}

std::map<std::string, std::string> LiveTopNodes(const DomainInfo& live) {
  std::map<std::string, std::string> out;
  for (const auto& d : live.disks) {
    if (!d.empty() && d.index > 0) out[d.target] = LibvirtNodeName(d, d.index);
  }
  return out;
}

Result<std::map<std::string, InstalledFilter>> ParseInstalledFilters(const std::string& xml) {
  pugi::xml_document doc;
  if (auto r = Load(doc, xml); !r) return tl::unexpected(r.error());
  pugi::xml_node dom = doc.document_element();
  std::map<std::string, InstalledFilter> out;
  std::string p = QemuPrefix(dom);
  if (p.empty()) return out;
  // pugixml keeps the name pointer while iterating: keep the names alive.
  const std::string cmd_name = p + ":commandline", arg_name = p + ":arg";
  const std::string ovr_name = p + ":override", dev_name = p + ":device";
  const std::string fe_name = p + ":frontend", prop_name = p + ":property";
  // node-name -> options, from the -blockdev arguments.
  std::map<std::string, json> nodes;
  for (const auto& b : FindOurBlockdevs(dom.child(cmd_name.c_str()), arg_name)) {
    nodes[JsonString(b.options, "node-name")] = b.options;
  }
  // alias -> node-name, from the overrides.
  std::map<std::string, std::string> alias_node;
  pugi::xml_node ovr = dom.child(ovr_name.c_str());
  for (auto dev : ovr.children(dev_name.c_str())) {
    for (auto fe : dev.children(fe_name.c_str())) {  // (libvirt reads every frontend)
      for (auto prop : fe.children(prop_name.c_str())) {
        if (std::string(prop.attribute("name").value()) == "drive" &&
            nodes.count(prop.attribute("value").value())) {
          alias_node[dev.attribute("alias").value()] = prop.attribute("value").value();
        }
      }
    }
  }
  for (auto d : dom.child("devices").children("disk")) {
    std::string alias = d.child("alias").attribute("name").value();
    std::string target = d.child("target").attribute("dev").value();
    auto it = alias_node.find(alias);
    if (alias.empty() || it == alias_node.end()) continue;
    out[target] = InstalledFilter{target, alias, nodes[it->second]};
  }
  return out;
}

Result<std::vector<std::string>> ParseFilterNodeNames(const std::string& xml) {
  pugi::xml_document doc;
  if (auto r = Load(doc, xml); !r) return tl::unexpected(r.error());
  pugi::xml_node dom = doc.document_element();
  std::vector<std::string> out;
  std::string p = QemuPrefix(dom);
  if (p.empty()) return out;
  const std::string cmd_name = p + ":commandline", arg_name = p + ":arg";
  for (const auto& b : FindOurBlockdevs(dom.child(cmd_name.c_str()), arg_name)) {
    out.push_back(JsonString(b.options, "node-name"));
  }
  return out;
}

Result<std::string> ApplyFilters(const std::string& xml, const std::vector<FilterSpec>& filters,
                                 const std::string& emulator) {
  pugi::xml_document doc;
  if (auto r = Load(doc, xml); !r) return tl::unexpected(r.error());
  pugi::xml_node dom = doc.document_element();
  std::string p = QemuPrefix(dom);
  if (p.empty()) {
    p = "qemu";
    while (dom.attribute(("xmlns:" + p).c_str())) p += "x";
    dom.append_attribute(("xmlns:" + p).c_str()) = kQemuNamespace;
  }
  const std::string cmd_name = p + ":commandline", arg_name = p + ":arg";
  const std::string ovr_name = p + ":override", dev_name = p + ":device";
  const std::string fe_name = p + ":frontend", prop_name = p + ":property";

  // 1. Remove our earlier entries.
  std::set<std::string> old_nodes;
  if (pugi::xml_node cmd = dom.child(cmd_name.c_str())) {
    for (const auto& b : FindOurBlockdevs(cmd, arg_name)) {
      old_nodes.insert(JsonString(b.options, "node-name"));
      cmd.remove_child(b.flag);
      cmd.remove_child(b.value);
    }
    if (!cmd.first_child()) dom.remove_child(cmd);
  }
  if (pugi::xml_node ovr = dom.child(ovr_name.c_str())) {
    std::vector<pugi::xml_node> devs;
    for (auto dev : ovr.children(dev_name.c_str())) devs.push_back(dev);
    for (auto dev : devs) {
      // Every frontend: libvirt applies the properties of each.
      std::vector<pugi::xml_node> fes;
      for (auto fe : dev.children(fe_name.c_str())) fes.push_back(fe);
      for (auto fe : fes) {
        std::vector<pugi::xml_node> props;
        for (auto prop : fe.children(prop_name.c_str())) props.push_back(prop);
        for (auto prop : props) {
          std::string value = prop.attribute("value").value();
          if (std::string(prop.attribute("name").value()) == "drive" &&
              (old_nodes.count(value) || value.rfind(kNodePrefix, 0) == 0)) {
            fe.remove_child(prop);
          }
        }
        if (!fe.first_child()) dev.remove_child(fe);
      }
      if (!dev.first_child()) ovr.remove_child(dev);
    }
    if (!ovr.first_child()) dom.remove_child(ovr);
  }

  // 2. Add the wanted ones.
  pugi::xml_node devices = dom.child("devices");
  for (const auto& f : filters) {
    pugi::xml_node disk;
    for (auto d : devices.children("disk")) {
      if (f.target == d.child("target").attribute("dev").value()) disk = d;
    }
    if (!disk) {
      return Fail(ErrorCode::kNotFound, "the definition has no disk " + f.target);
    }
    pugi::xml_node alias = disk.child("alias");
    std::string alias_name = alias.attribute("name").value();
    if (alias_name.rfind("ua-", 0) != 0) {
      alias_name = "ua-hc-" + f.target;
      if (!alias) {
        // libvirt's schema wants <alias> after <target>-ish elements; the
        // order inside <disk> is free (interleave), append it.
        alias = disk.append_child("alias");
      }
      if (alias.attribute("name")) {
        alias.attribute("name") = alias_name.c_str();
      } else {
        alias.append_attribute("name") = alias_name.c_str();
      }
    }
    pugi::xml_node cmd = ChildOrAppend(dom, cmd_name);
    cmd.append_child(arg_name.c_str()).append_attribute("value") = "-blockdev";
    cmd.append_child(arg_name.c_str()).append_attribute("value") =
        f.options.dump(-1, ' ', false, json::error_handler_t::replace).c_str();
    pugi::xml_node ovr = ChildOrAppend(dom, ovr_name);
    pugi::xml_node dev;
    for (auto d : ovr.children(dev_name.c_str())) {
      if (alias_name == d.attribute("alias").value()) dev = d;
    }
    if (!dev) {
      dev = ovr.append_child(dev_name.c_str());
      dev.append_attribute("alias") = alias_name.c_str();
    }
    pugi::xml_node prop = ChildOrAppend(dev, fe_name).append_child(prop_name.c_str());
    prop.append_attribute("name") = "drive";
    prop.append_attribute("type") = "string";
    prop.append_attribute("value") = f.node_name.c_str();
  }

  // 3. Emulator.
  if (!emulator.empty()) {
    pugi::xml_node emu = ChildOrAppend(devices, "emulator");
    if (!emu.first_child()) {
      emu.append_child(pugi::node_pcdata).set_value(emulator.c_str());
    } else {
      emu.first_child().set_value(emulator.c_str());
    }
  }

  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

const DiskInfo* FindDisk(const DomainInfo& info, const std::string& target) {
  for (const auto& d : info.disks) {
    if (d.target == target) return &d;
  }
  return nullptr;
}

}  // namespace hc::libvirt
