// What an emulator lacks for a definition, from libvirt's domain
// capabilities: real capabilities of the project's QEMU before issue 14
// (built --without-default-features) and after (Debian's features), for
// the machine types pc and q35 (capabilities are per machine: q35 has no
// IDE), and definitions of virt-install's shape as libvirt 11.3 stores them.
#include "manager/libvirt/domain_caps.h"

#include <gtest/gtest.h>

#include "fakes.h"

namespace hc::libvirt {
namespace {

using testing::FakeLibvirt;
using testing::TestData;

bool Has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : "; ") + s;
  return out;
}

TEST(DomainCaps, TheQueryComesFromTheDefinition) {
  auto q = ParseCapsQuery(TestData("virt-install-vnc.inactive.xml"));
  ASSERT_TRUE(q) << q.error().message;
  EXPECT_EQ(q->virttype, "qemu");
  EXPECT_EQ(q->arch, "x86_64");
  EXPECT_EQ(q->machine.rfind("pc-q35-", 0), 0u) << q->machine;  // libvirt expands q35
  auto bare = ParseCapsQuery("<domain><name>x</name></domain>");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->virttype, "kvm");
  EXPECT_EQ(bare->machine, "");
  EXPECT_FALSE(ParseCapsQuery("<notadomain/>"));
  EXPECT_FALSE(ParseCapsQuery("<domain"));
}

TEST(DomainCaps, VirtInstallDomainsNeedWhatTheOldBuildLacked) {
  const std::string no_ui = TestData("domcaps-no-ui.xml");
  auto vnc = MissingCapabilities(TestData("virt-install-vnc.inactive.xml"), no_ui);
  ASSERT_TRUE(vnc) << vnc.error().message;
  EXPECT_EQ(*vnc, std::vector<std::string>{"graphics type 'vnc'"}) << Join(*vnc);

  auto spice = MissingCapabilities(TestData("virt-install-spice.inactive.xml"), no_ui);
  ASSERT_TRUE(spice) << spice.error().message;
  EXPECT_TRUE(Has(*spice, "graphics type 'spice'")) << Join(*spice);
  EXPECT_TRUE(Has(*spice, "redirdev devices (<redirdev>)")) << Join(*spice);
  EXPECT_TRUE(Has(*spice, "channel type 'spicevmc'")) << Join(*spice);
}

TEST(DomainCaps, TheProjectsQemuRunsThemNow) {
  for (const char* f : {"virt-install-vnc.inactive.xml", "virt-install-spice.inactive.xml"}) {
    auto m = MissingCapabilities(TestData(f), TestData("domcaps-project-q35.xml"));
    ASSERT_TRUE(m) << f << ": " << m.error().message;
    EXPECT_TRUE(m->empty()) << f << ": " << Join(*m);
  }
  for (const char* f : {"web.inactive.xml", "example.inactive.xml"}) {  // pc, IDE CD-ROMs
    auto m = MissingCapabilities(TestData(f), TestData("domcaps-project-pc.xml"));
    ASSERT_TRUE(m) << f << ": " << m.error().message;
    EXPECT_TRUE(m->empty()) << f << ": " << Join(*m);
    auto q35 = MissingCapabilities(TestData(f), TestData("domcaps-project-q35.xml"));
    EXPECT_EQ(*q35, std::vector<std::string>{"disk bus 'ide'"}) << f;
  }
}

// Each kind of check, on a small definition against the project's
// capabilities (TCG: no host-passthrough; GUI front ends not built).
TEST(DomainCaps, EachKindOfCheck) {
  const std::string project = TestData("domcaps-project-q35.xml");
  auto missing = [&](const std::string& body) {
    auto m = MissingCapabilities("<domain type='qemu'><name>t</name>" + body + "</domain>",
                                 project);
    EXPECT_TRUE(m) << m.error().message;
    return m ? *m : std::vector<std::string>{};
  };
  EXPECT_EQ(missing("<devices><graphics type='sdl'/><graphics type='vnc'/></devices>"),
            std::vector<std::string>{"graphics type 'sdl'"});
  EXPECT_EQ(missing("<cpu mode='host-passthrough'/>"),
            std::vector<std::string>{"cpu mode 'host-passthrough'"});
  EXPECT_TRUE(missing("<cpu mode='host-model'/>").empty());
  EXPECT_TRUE(missing("<cpu><model>qemu64</model></cpu>").empty());  // custom
  EXPECT_EQ(missing("<vcpu>5000</vcpu>"),
            std::vector<std::string>{"5000 vcpus (at most 4096 with this machine type)"});
  EXPECT_TRUE(missing("<vcpu>4096</vcpu>").empty());
  EXPECT_EQ(missing("<devices><video><model type='nosuchcard'/></video></devices>"),
            std::vector<std::string>{"video model 'nosuchcard'"});
  EXPECT_EQ(missing("<devices><disk type='file' device='disk'><target dev='sda' bus='xen'/>"
                    "</disk></devices>"),
            std::vector<std::string>{"disk bus 'xen'"});
  // (libvirt lists the TPM backend 'emulator' only where swtpm is installed)
  EXPECT_EQ(missing("<devices><tpm model='tpm-spapr'><backend type='emulator'/></tpm></devices>"),
            (std::vector<std::string>{"TPM model 'tpm-spapr'", "TPM backend 'emulator'"}));
  EXPECT_TRUE(missing("<devices><tpm model='tpm-crb'><backend type='passthrough'/></tpm>"
                      "</devices>").empty());
  EXPECT_EQ(missing("<devices><hostdev mode='capabilities' type='storage'/></devices>"),
            (std::vector<std::string>{"hostdev mode 'capabilities'",
                                      "hostdev capabilities type 'storage'"}));
  EXPECT_TRUE(missing("<devices><hostdev mode='subsystem' type='usb'/></devices>").empty());
  EXPECT_EQ(missing("<launchSecurity type='sev'/>"),
            std::vector<std::string>{"launch security 'sev'"});
  // Repeats are named once; devices libvirt says nothing about are not
  // judged (libvirt checks them when the definition is written).
  EXPECT_EQ(missing("<devices><graphics type='sdl'/><graphics type='sdl'/>"
                    "<watchdog model='i6300esb'/></devices>"),
            std::vector<std::string>{"graphics type 'sdl'"});
}

TEST(DomainCaps, WhatTheCapabilitiesDoNotMentionIsNotChecked) {
  auto m = MissingCapabilities(TestData("virt-install-spice.inactive.xml"),
                               "<domainCapabilities/>");
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->empty()) << Join(*m);
  EXPECT_FALSE(MissingCapabilities(TestData("web.inactive.xml"), "<capabilities/>"));
  EXPECT_FALSE(MissingCapabilities("garbage", "<domainCapabilities/>"));
}

TEST(DomainCaps, CheckAsksLibvirtForTheEmulatorAndNamesWhatIsMissing) {
  FakeLibvirt lv;
  lv.domain_caps = TestData("domcaps-no-ui.xml");
  const std::string xml = TestData("virt-install-vnc.inactive.xml");
  auto s = CheckEmulatorCapabilities(lv, xml, "/opt/hostcache/qemu-system-x86_64");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kFailedPrecondition);
  const std::string& msg = s.error().message;
  EXPECT_NE(msg.find("VM 'vi-vnc'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/opt/hostcache/qemu-system-x86_64"), std::string::npos) << msg;
  EXPECT_NE(msg.find("graphics type 'vnc'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("left as it is"), std::string::npos) << msg;
  ASSERT_EQ(lv.caps_queries.size(), 1u);
  auto q = *ParseCapsQuery(xml);
  EXPECT_EQ(lv.caps_queries[0],
            "/opt/hostcache/qemu-system-x86_64 x86_64 " + q.machine + " qemu");

  lv.domain_caps = TestData("domcaps-project-q35.xml");
  EXPECT_TRUE(CheckEmulatorCapabilities(lv, xml, "/opt/hostcache/qemu-system-x86_64"));

  // libvirt refuses the combination: its reason, as a precondition.
  lv.caps_error = "the machine 'pc-q35-99.0' is not supported by emulator";
  s = CheckEmulatorCapabilities(lv, xml, "/opt/hostcache/qemu-system-x86_64");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(s.error().message.find("pc-q35-99.0"), std::string::npos) << s.error().message;

  lv.caps_error.clear();
  lv.alive = false;
  s = CheckEmulatorCapabilities(lv, xml, "/opt/hostcache/qemu-system-x86_64");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace hc::libvirt
