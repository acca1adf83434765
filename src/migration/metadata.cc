#include "migration/metadata.h"

#include <algorithm>
#include <sstream>

#include <pugixml.hpp>

#include "common/util.h"
#include "manager/libvirt/domain_xml.h"

namespace hc::migration {

using nlohmann::json;

namespace {

// The element's name without its namespace prefix ("hostcache:disk" -> "disk").
std::string_view LocalName(const pugi::xml_node& n) {
  std::string_view s = n.name();
  auto colon = s.find(':');
  return colon == std::string_view::npos ? s : s.substr(colon + 1);
}

Status Bad(const std::string& what) {
  return Fail(ErrorCode::kInvalidArgument,
              "the domain's hostcache metadata (" + std::string(kMetadataUri) + ") " + what);
}

}  // namespace

std::string EncodeAssignments(const std::vector<CarriedDisk>& disks) {
  pugi::xml_document doc;
  auto root = doc.append_child("assignments");
  root.append_attribute("version") = "1";
  for (const auto& d : disks) {
    auto e = root.append_child("disk");
    e.append_attribute("target") = d.target.c_str();
    e.append_attribute("policy") = d.policy.c_str();
    e.append_attribute("node") = d.node.c_str();
    e.append_child(pugi::node_pcdata).set_value(policy::RulesToJson(d.rules).dump().c_str());
  }
  std::ostringstream out;
  doc.save(out, "", pugi::format_raw | pugi::format_no_declaration);
  return out.str();
}

Result<std::vector<CarriedDisk>> DecodeAssignments(const std::string& xml) {
  if (xml.size() > kMaxMetadataBytes) {
    return tl::unexpected(Bad("is " + std::to_string(xml.size()) + " bytes, more than the " +
                              std::to_string(kMaxMetadataBytes) + " it may have").error());
  }
  if (xml.find('\0') != std::string::npos) {
    return tl::unexpected(Bad("contains a NUL byte").error());
  }
  if (xml.find("<!") != std::string::npos) {
    return tl::unexpected(Bad("has a DOCTYPE, entity, comment or CDATA section").error());
  }
  pugi::xml_document doc;
  pugi::xml_parse_result r = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default,
                                             pugi::encoding_utf8);
  if (!r) return tl::unexpected(Bad(std::string("is not XML: ") + r.description()).error());
  pugi::xml_node root = doc.document_element();
  if (LocalName(root) != "assignments") {
    return tl::unexpected(
        Bad("has <" + std::string(root.name()) + ">, not <assignments>").error());
  }
  if (std::string_view(root.attribute("version").value()) != "1") {
    return tl::unexpected(Bad("has version '" + std::string(root.attribute("version").value()) +
                              "'; this hostcached reads version 1")
                              .error());
  }
  std::vector<CarriedDisk> out;
  for (pugi::xml_node e : root.children()) {
    if (e.type() == pugi::node_pcdata || e.type() == pugi::node_cdata) {
      if (!Trim(e.value()).empty()) {
        return tl::unexpected(Bad("has text outside its <disk> elements").error());
      }
      continue;
    }
    if (e.type() != pugi::node_element) continue;
    if (LocalName(e) != "disk") {
      return tl::unexpected(Bad("has an unknown element <" + std::string(e.name()) + ">").error());
    }
    if (out.size() == kMaxCarriedDisks) {
      return tl::unexpected(
          Bad("names more than " + std::to_string(kMaxCarriedDisks) + " disks").error());
    }
    CarriedDisk d;
    d.target = e.attribute("target").value();
    d.policy = e.attribute("policy").value();
    d.node = e.attribute("node").value();
    if (!libvirt::ValidTarget(d.target)) {
      return tl::unexpected(Bad("names a disk target that is none ('" +
                                d.target.substr(0, 64) + "')").error());
    }
    for (const auto& prev : out) {
      if (prev.target == d.target) {
        return tl::unexpected(Bad("names disk " + d.target + " twice").error());
      }
    }
    if (auto s = policy::ValidateName(d.policy); !s) {
      return tl::unexpected(Bad("disk " + d.target + ": policy name: " + s.error().message).error());
    }
    if (d.node != std::string(libvirt::kNodePrefix) + d.target) {
      return tl::unexpected(Bad("disk " + d.target + ": node '" + d.node.substr(0, 64) +
                                "' is not the filter's (" + libvirt::kNodePrefix + d.target + ")")
                                .error());
    }
    json j = json::parse(e.text().get(), nullptr, false);
    if (j.is_discarded()) {
      return tl::unexpected(Bad("disk " + d.target + ": the rules are not JSON").error());
    }
    auto rules = policy::RulesFromJson(j);
    if (!rules) {
      return tl::unexpected(Bad("disk " + d.target + ": " + rules.error().message).error());
    }
    if (auto s = policy::ValidateRules(*rules); !s) {
      return tl::unexpected(Bad("disk " + d.target + ": " + s.error().message).error());
    }
    d.rules = *rules;
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<CarriedDisk> CurrentAssignments(core::Manager& manager, const std::string& uuid) {
  std::vector<CarriedDisk> disks;
  auto as = manager.AssignmentsOf(uuid);
  if (!as) return disks;
  for (const auto& a : *as) {
    auto p = manager.GetPolicy(a.policy);
    if (!p) continue;
    disks.push_back(CarriedDisk{a.target, a.policy, a.node_name, p->rules});
  }
  std::sort(disks.begin(), disks.end(),
            [](const CarriedDisk& x, const CarriedDisk& y) { return x.target < y.target; });
  return disks;
}

void RecordAssignments(core::Manager& manager, libvirt::LibvirtClient& lv,
                       const libvirt::DomainRef& dom) {
  const std::vector<CarriedDisk> disks = CurrentAssignments(manager, dom.uuid);
  if (auto s = WriteAssignmentMetadata(lv, dom, disks); !s) {
    manager.Log("warning", dom.name, "", "metadata",
                "could not record the assignments in the domain's metadata (" +
                    s.error().message +
                    "); they stay on this host, but do not travel with the VM when it migrates");
  }
}

Status WriteAssignmentMetadata(libvirt::LibvirtClient& lv, const libvirt::DomainRef& dom,
                               const std::vector<CarriedDisk>& disks) {
  const std::string xml = disks.empty() ? std::string() : EncodeAssignments(disks);
  if (!dom.active && !dom.persistent) return {};
  return lv.SetMetadata(dom.uuid, xml, kMetadataPrefix, kMetadataUri, dom.active, dom.persistent);
}

Result<std::vector<CarriedDisk>> ReadAssignmentMetadata(libvirt::LibvirtClient& lv,
                                                        const libvirt::DomainRef& dom) {
  auto xml = lv.GetMetadata(dom.uuid, kMetadataUri, dom.active);
  if (!xml) {
    if (xml.error().code == ErrorCode::kNotFound) return std::vector<CarriedDisk>{};
    return tl::unexpected(xml.error());
  }
  return DecodeAssignments(*xml);
}

}  // namespace hc::migration
