#include "manager/libvirt/domain_caps.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <pugixml.hpp>

namespace hc::libvirt {
namespace {

// One attribute of a device that the domain capabilities list the values
// of: <devices><ELEMENT [CHILD] ATTR=...> against
// <devices><ELEMENT supported='yes'><enum name=ENUM><value>.
struct DeviceRule {
  const char* element;  // child of <devices>
  const char* child;    // "" = the element itself, else its child holding the attribute
  const char* attr;
  const char* caps_enum;
  const char* what;      // how a person names it ("graphics type")
  const char* fallback;  // the value when the attribute is absent ("" = not checked then)
  // Only for elements whose attribute `when_attr` is `when_value` (or absent,
  // when `when_value` is the default): hostdev kinds.
  const char* when_attr = "";
  const char* when_value = "";
  bool when_default = false;
};

const DeviceRule kDeviceRules[] = {
    {"disk", "", "device", "diskDevice", "disk device", "disk"},
    {"disk", "target", "bus", "bus", "disk bus", ""},
    {"disk", "", "model", "model", "disk model", ""},
    {"graphics", "", "type", "type", "graphics type", ""},
    {"video", "model", "type", "modelType", "video model", ""},
    {"hostdev", "", "mode", "mode", "hostdev mode", "subsystem"},
    {"hostdev", "", "type", "subsysType", "hostdev type", "", "mode", "subsystem", true},
    {"hostdev", "", "type", "capsType", "hostdev capabilities type", "", "mode", "capabilities"},
    {"hostdev", "driver", "name", "pciBackend", "PCI hostdev backend", "", "type", "pci"},
    {"rng", "", "model", "model", "rng model", ""},
    {"rng", "backend", "model", "backendModel", "rng backend", ""},
    {"filesystem", "driver", "type", "driverType", "filesystem driver", ""},
    {"tpm", "", "model", "model", "TPM model", ""},
    {"tpm", "backend", "type", "backendModel", "TPM backend", ""},
    {"redirdev", "", "bus", "bus", "USB redirection bus", ""},
    {"channel", "", "type", "type", "channel type", ""},
    {"crypto", "", "model", "model", "crypto model", ""},
    {"crypto", "", "type", "type", "crypto type", ""},
    {"crypto", "backend", "model", "backendModel", "crypto backend", ""},
    {"interface", "backend", "type", "backendType", "network interface backend", ""},
    {"panic", "", "model", "model", "panic model", ""},
};

// The values of <enum name=`name`> under `parent`; nullopt when the
// capabilities have no such enum (then nothing is checked).
std::optional<std::vector<std::string>> EnumValues(const pugi::xml_node& parent,
                                                   const char* name) {
  pugi::xml_node e = parent.find_child_by_attribute("enum", "name", name);
  if (!e) return std::nullopt;
  std::vector<std::string> out;
  for (auto v : e.children("value")) out.emplace_back(v.text().as_string());
  return out;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

class Collector {
 public:
  void Add(const std::string& what) {
    if (!Contains(out_, what)) out_.push_back(what);
  }
  // `value` of something checked against `values` (absent: not checked).
  void Check(const std::optional<std::vector<std::string>>& values, const std::string& what,
             const std::string& value) {
    if (values && !value.empty() && !Contains(*values, value)) Add(what + " '" + value + "'");
  }
  std::vector<std::string> Take() { return std::move(out_); }

 private:
  std::vector<std::string> out_;
};

void CheckDevices(const pugi::xml_node& dom, const pugi::xml_node& caps, Collector& c) {
  pugi::xml_node devices = dom.child("devices");
  pugi::xml_node cdevs = caps.child("devices");
  if (!cdevs) return;
  for (pugi::xml_node dev : devices.children()) {
    const char* element = dev.name();
    pugi::xml_node cdev = cdevs.child(element);
    if (!cdev) continue;  // libvirt says nothing about this kind of device
    if (std::strcmp(cdev.attribute("supported").as_string("yes"), "yes") != 0) {
      c.Add(std::string(element) + " devices (<" + element + ">)");
      continue;
    }
    for (const DeviceRule& r : kDeviceRules) {
      if (std::strcmp(r.element, element) != 0) continue;
      if (*r.when_attr) {
        pugi::xml_attribute w = dev.attribute(r.when_attr);
        bool applies = w ? std::strcmp(w.value(), r.when_value) == 0 : r.when_default;
        if (!applies) continue;
      }
      pugi::xml_node holder = *r.child ? dev.child(r.child) : dev;
      std::string value = holder.attribute(r.attr).as_string(r.fallback);
      c.Check(EnumValues(cdev, r.caps_enum), r.what, value);
    }
  }
}

void CheckCpuAndMemory(const pugi::xml_node& dom, const pugi::xml_node& caps, Collector& c) {
  if (pugi::xml_node cpu = dom.child("cpu")) {
    // libvirt's default mode is custom (a named model, or none at all).
    std::string mode = cpu.attribute("mode").as_string("custom");
    if (pugi::xml_node m = caps.child("cpu").find_child_by_attribute("mode", "name", mode.c_str())) {
      if (std::strcmp(m.attribute("supported").as_string("no"), "yes") != 0) {
        c.Add("cpu mode '" + mode + "'");
      }
    }
  }
  if (pugi::xml_node vmax = caps.child("vcpu")) {
    unsigned max = vmax.attribute("max").as_uint(0);
    unsigned want = dom.child("vcpu").text().as_uint(0);
    if (max > 0 && want > max) {
      c.Add(std::to_string(want) + " vcpus (at most " + std::to_string(max) +
            " with this machine type)");
    }
  }
  if (dom.child("iothreads").text().as_uint(0) > 0) {
    if (pugi::xml_node io = caps.child("iothreads");
        io && std::strcmp(io.attribute("supported").as_string("yes"), "yes") != 0) {
      c.Add("I/O threads (<iothreads>)");
    }
  }
  if (pugi::xml_node src = dom.child("memoryBacking").child("source")) {
    c.Check(EnumValues(caps.child("memoryBacking"), "sourceType"), "memory backing source",
            src.attribute("type").value());
  }
}

void CheckOsAndFeatures(const pugi::xml_node& dom, const pugi::xml_node& caps, Collector& c) {
  pugi::xml_node os = dom.child("os");
  pugi::xml_node cos = caps.child("os");
  if (cos && os) {
    c.Check(EnumValues(cos, "firmware"), "firmware", os.attribute("firmware").value());
    if (pugi::xml_node loader = os.child("loader")) {
      pugi::xml_node cl = cos.child("loader");
      c.Check(EnumValues(cl, "type"), "firmware loader type", loader.attribute("type").value());
      c.Check(EnumValues(cl, "secure"), "firmware loader secure", loader.attribute("secure").value());
    }
  }
  pugi::xml_node cf = caps.child("features");
  auto feature = [&](const char* name, bool used, const std::string& what) {
    pugi::xml_node f = cf.child(name);
    if (used && f && std::strcmp(f.attribute("supported").as_string("yes"), "yes") != 0) {
      c.Add(what);
    }
  };
  pugi::xml_node features = dom.child("features");
  feature("vmcoreinfo", features.child("vmcoreinfo") &&
                            std::strcmp(features.child("vmcoreinfo").attribute("state").as_string("on"),
                                        "on") == 0,
          "the vmcoreinfo feature");
  feature("genid", static_cast<bool>(dom.child("genid")), "a VM generation ID (<genid>)");
  if (pugi::xml_node ls = dom.child("launchSecurity")) {
    std::string type = ls.attribute("type").value();
    feature(type.c_str(), true, "launch security '" + type + "'");
  }
}

}  // namespace

Result<CapsQuery> ParseCapsQuery(const std::string& domain_xml) {
  pugi::xml_document doc;
  if (!doc.load_string(domain_xml.c_str()) ||
      std::strcmp(doc.document_element().name(), "domain") != 0) {
    return Fail(ErrorCode::kInternal, "unreadable domain XML");
  }
  pugi::xml_node dom = doc.document_element();
  pugi::xml_node type = dom.child("os").child("type");
  return CapsQuery{dom.attribute("type").as_string("kvm"), type.attribute("arch").value(),
                   type.attribute("machine").value()};
}

Result<std::vector<std::string>> MissingCapabilities(const std::string& domain_xml,
                                                     const std::string& caps_xml) {
  pugi::xml_document doc, caps;
  if (!doc.load_string(domain_xml.c_str()) ||
      std::strcmp(doc.document_element().name(), "domain") != 0) {
    return Fail(ErrorCode::kInternal, "unreadable domain XML");
  }
  if (!caps.load_string(caps_xml.c_str()) ||
      std::strcmp(caps.document_element().name(), "domainCapabilities") != 0) {
    return Fail(ErrorCode::kInternal, "unreadable domain capabilities XML from libvirt");
  }
  Collector c;
  pugi::xml_node dom = doc.document_element();
  pugi::xml_node cr = caps.document_element();
  CheckOsAndFeatures(dom, cr, c);
  CheckCpuAndMemory(dom, cr, c);
  CheckDevices(dom, cr, c);
  return c.Take();
}

Status CheckEmulatorCapabilities(LibvirtClient& lv, const std::string& domain_xml,
                                 const std::string& emulator) {
  auto q = ParseCapsQuery(domain_xml);
  if (!q) return tl::unexpected(q.error());
  pugi::xml_document doc;
  doc.load_string(domain_xml.c_str());
  const std::string vm = doc.document_element().child("name").text().as_string();
  const std::string fix =
      "; its definition is left as it is (remove that from the VM, or give hostcached a QEMU "
      "with the driver that has it: --emulator)";
  auto caps = lv.DomainCapabilities(emulator, q->arch, q->machine, q->virttype);
  if (!caps) {
    if (caps.error().code == ErrorCode::kUnavailable) return tl::unexpected(caps.error());
    return Fail(ErrorCode::kFailedPrecondition,
                "VM '" + vm + "' cannot run on the project's QEMU (" + emulator +
                    "): libvirt says: " + caps.error().message + fix);
  }
  auto missing = MissingCapabilities(domain_xml, *caps);
  if (!missing) return tl::unexpected(missing.error());
  if (missing->empty()) return {};
  std::string list;
  for (const auto& m : *missing) list += (list.empty() ? "" : ", ") + m;
  return Fail(ErrorCode::kFailedPrecondition,
              "VM '" + vm + "' needs what the project's QEMU (" + emulator +
                  ") does not have: " + list + fix);
}

}  // namespace hc::libvirt
