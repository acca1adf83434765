// The compliance check: what it repairs in the running VM and the definition,
// how it reports what it cannot (driver refusal, emulator, libvirt down, input
// of an unexpected shape), the settings QEMU runs with.
// (The policy engine against fakes of libvirt with a model of QEMU's block
// graph, the QEMU tools and the clock, and a real SQLite store.)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <pugixml.hpp>

#include "hc-ssd.h"

#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "manager_fixture.h"

namespace hc::core {
namespace {

using store::Compliance;

TEST_F(ManagerTest, DriverRefusalIsAComplianceReasonAndKeepsTheDefinitionBootable) {
  tools_.refuse_mode = "write-back";
  Qemu().refuse_mode = "write-back";
  CreatePolicy("wb", json{{"mode", "write-back"}});
  auto a = mgr_->Assign("web", "vda", "wb");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("mode 'write-back' is not supported"), std::string::npos) << a->reason;
  EXPECT_TRUE(Persistent().empty()) << "a refused filter would stop the VM from starting";
  EXPECT_EQ(Qemu().devs[kVdaDev], "libvirt-4-format");
  // Changing the policy to something the driver takes makes it compliant.
  auto p = *store_->GetPolicy("wb");
  p.rules.mode = policy::CacheMode::kWriteThrough;
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
}

TEST_F(ManagerTest, LiveInsertionFailureMeansPendingRestart) {
  Qemu().fail["qom-set"] = "Property 'drive' can't be changed now";
  auto a = mgr_->Assign("web", "vda", "balanced");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->state, Compliance::kPendingRestart);
  EXPECT_NE(a->reason.find("can't be changed now"), std::string::npos) << a->reason;
  EXPECT_EQ(Qemu().nodes.count("hc-vda"), 0u) << "the half-inserted filter is removed";
  EXPECT_EQ(Persistent().size(), 1u);
  // The periodic check tries again and succeeds.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

// The VM's definition with a VNC console (virt-install's default).
std::string WithVnc(const std::string& xml) {
  std::string out = xml;
  auto at = out.find("</devices>");
  out.insert(at, "    <graphics type='vnc' port='-1' autoport='yes'/>\n  ");
  return out;
}

TEST_F(ManagerTest, AnEmulatorThatLacksWhatTheVmNeedsIsRefusedWith409) {
  // Issue 14: a VNC console and a project QEMU without VNC was a 500 from
  // libvirt's refusal to define it.
  auto& d = lv_.domains[kWeb];
  d.inactive_xml = WithVnc(d.inactive_xml);
  const std::string before = d.inactive_xml;
  lv_.domain_caps = TestData("domcaps-no-ui.xml");
  auto a = mgr_->Assign("web", "vda", "balanced");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, ErrorCode::kFailedPrecondition);  // 409
  EXPECT_NE(a.error().message.find("graphics type 'vnc'"), std::string::npos)
      << a.error().message;
  EXPECT_NE(a.error().message.find("/opt/hostcache/qemu-system-x86_64"), std::string::npos)
      << a.error().message;
  // Nothing changed: no assignment, no definition, nothing in QEMU.
  EXPECT_TRUE(store_->ListAssignments()->empty());
  EXPECT_EQ(lv_.defines, 0);
  EXPECT_EQ(d.inactive_xml, before);
  EXPECT_TRUE(Qemu().log.empty());
  ASSERT_EQ(lv_.caps_queries.size(), 1u);
  EXPECT_EQ(lv_.caps_queries[0],
            "/opt/hostcache/qemu-system-x86_64 x86_64 pc-i440fx-10.0 qemu");

  // With a QEMU that has VNC, the same assignment goes through.
  lv_.domain_caps = TestData("domcaps-project-pc.xml");
  auto ok = mgr_->Assign("web", "vda", "balanced");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->state, Compliance::kCompliant) << ok->reason;
  EXPECT_EQ(libvirt::ParseDomain(d.inactive_xml)->emulator, "/opt/hostcache/qemu-system-x86_64");
}

TEST_F(ManagerTest, ACheckReportsWhatTheEmulatorLacksAndChangesNothing) {
  auto& d = lv_.domains[kWeb];
  d.active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  // Behind hostcached's back: a VNC console added, and Debian's QEMU put
  // back; the project's QEMU has no VNC.
  auto edited = libvirt::ApplyFilters(WithVnc(d.inactive_xml), {}, "/usr/bin/qemu-system-x86_64");
  ASSERT_TRUE(edited);
  d.inactive_xml = *edited;
  const int defines = lv_.defines;
  lv_.domain_caps = TestData("domcaps-no-ui.xml");
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant) << a->reason;
  EXPECT_NE(a->reason.find("graphics type 'vnc'"), std::string::npos) << a->reason;
  EXPECT_EQ(lv_.defines, defines);
  EXPECT_EQ(d.inactive_xml, *edited);
}

TEST_F(ManagerTest, ShutOffVmIsPendingUntilItStartsThenVerified) {
  auto& d = lv_.domains[kWeb];
  d.active = false;
  auto a = mgr_->Assign("web", "vda", "balanced");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->state, Compliance::kPendingRestart);
  EXPECT_NE(a->reason.find("shut off"), std::string::npos);
  // "Start" the VM from the definition: QEMU's graph as -blockdev and the
  // override make it.
  lv_.Add(kWeb, "web", d.inactive_xml, TestData("web.live.xml"));
  auto& q = Qemu();
  q.nodes["hc-vda"] = testing::FakeQemu::Node{"hostcache", "libvirt-4-format",
                                              Persistent()["vda"].options, "", ""};
  q.devs[kVdaDev] = "hc-vda";
  q.log.clear();
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kStarted);
  auto now = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(now->state, Compliance::kCompliant) << now->reason;
  EXPECT_EQ(std::find(q.log.begin(), q.log.end(), "blockdev-add"), q.log.end());
}

TEST_F(ManagerTest, AFilterOnTheWrongNodeAfterStartIsFoundAndMoved) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  // As if a stale definition had put vda's filter over vdb's image.
  auto& q = Qemu();
  q.nodes["hc-vda"].file = "libvirt-3-storage";
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(q.nodes["hc-vda"].file, "libvirt-4-format");
  EXPECT_EQ(q.devs[kVdaDev], "hc-vda");
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  auto evs = Events();
  EXPECT_NE(std::find(evs.begin(), evs.end(), "verify"), evs.end());
}

TEST_F(ManagerTest, ADefinitionEditedBehindOurBackIsRepaired) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  auto& d = lv_.domains[kWeb];
  d.inactive_xml = *libvirt::ApplyFilters(d.inactive_xml, {}, "");
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kDefined);
  EXPECT_EQ(Persistent().size(), 1u);
  // And a definition that is already right is not written again.
  int defines = lv_.defines;
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kDefined);
  EXPECT_EQ(lv_.defines, defines);
}

TEST_F(ManagerTest, LibvirtDroppingOurXmlDoesNotLoop) {
  lv_.drop_qemu_namespace = true;
  auto a = mgr_->Assign("web", "vda", "balanced");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("does not keep the filter"), std::string::npos) << a->reason;
  int defines = lv_.defines;
  for (int i = 0; i < 3; i++) mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kDefined);
  EXPECT_EQ(lv_.defines, defines);
}

TEST_F(ManagerTest, VmDeletedBehindOurBack) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  lv_.domains.erase(kWeb);
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kUndefined);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  EXPECT_NE(a->reason.find("no longer has this VM"), std::string::npos);
  auto evs = Events();
  EXPECT_NE(std::find(evs.begin(), evs.end(), "undefine"), evs.end());
  auto vms = mgr_->ListVms();
  ASSERT_TRUE(vms);
  ASSERT_EQ(vms->size(), 1u);
  EXPECT_FALSE((*vms)[0].exists);
  EXPECT_EQ((*vms)[0].name, "web");
  auto vm = mgr_->GetVm("web");
  ASSERT_TRUE(vm);
  EXPECT_FALSE(vm->exists);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_TRUE(store_->ListAssignments()->empty());
  EXPECT_FALSE(mgr_->GetVm("web"));
}

TEST_F(ManagerTest, LibvirtDownIsUnavailableAndChangesNothing) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  lv_.alive = false;
  auto r = mgr_->Assign("web", "vdb", "balanced");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  auto u = mgr_->Unassign("web", "vda");
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(mgr_->ListVms().error().code, ErrorCode::kUnavailable);
  mgr_->CheckAll();  // keeps the last known state
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kCompliant);
  EXPECT_EQ(store_->ListAssignments()->size(), 1u);
}

// Adds graphics devices with passwords (what libvirt leaves out of an XML
// read without VIR_DOMAIN_XML_SECURE) to `xml`.
std::string WithConsolePasswords(std::string xml) {
  const std::string g =
      "    <graphics type='vnc' port='-1' autoport='yes' passwd='vnc-s3cret'/>\n"
      "    <graphics type='spice' autoport='yes' passwd='spice-s3cret'/>\n  </devices>";
  xml.replace(xml.find("</devices>"), std::string("</devices>").size(), g);
  return xml;
}

TEST_F(ManagerTest, RewritingTheDefinitionKeepsConsolePasswords) {
  auto& d = lv_.domains[kWeb];
  d.inactive_xml = WithConsolePasswords(d.inactive_xml);
  d.live_xml = WithConsolePasswords(d.live_xml);
  // (The fake, as libvirt, leaves them out of an XML read without secrets.)
  ASSERT_EQ(lv_.GetXml(kWeb, libvirt::kXmlInactive)->find("s3cret"), std::string::npos);
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  ASSERT_GE(lv_.defines, 1);
  EXPECT_EQ(Persistent().size(), 1u);
  EXPECT_NE(d.inactive_xml.find("vnc-s3cret"), std::string::npos) << d.inactive_xml;
  EXPECT_NE(d.inactive_xml.find("spice-s3cret"), std::string::npos) << d.inactive_xml;
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_NE(d.inactive_xml.find("vnc-s3cret"), std::string::npos) << d.inactive_xml;
  // The migration XML, which the destination starts from, has them too.
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  auto x = migrator_->MigrationXml("web");
  ASSERT_TRUE(x) << x.error().message;
  EXPECT_NE(x->find("vnc-s3cret"), std::string::npos) << *x;
  EXPECT_NE(x->find("spice-s3cret"), std::string::npos) << *x;
}

TEST(CompareSettings, NamesEachOptionThatDiffers) {
  policy::Rules r;
  r.ssd_size = 1 << 20;
  r.ssd_dir = "/ssd";
  json st{{"mode", "write-through"}, {"block-size", 4096},  {"ram-limit", 256 << 20},
          {"admit-after", 3},        {"seq-cutoff", 0},     {"max-dirty", 128 << 20},
          {"max-dirty-age-ms", 99}};
  auto d = libvirt::CompareSettings(st, r);
  std::string all;
  for (const auto& x : d) all += x + "\n";
  EXPECT_EQ(d.size(), 4u) << all;
  EXPECT_NE(all.find("admit-after is 3, the policy says 1"), std::string::npos) << all;
  EXPECT_NE(all.find("seq-cutoff is 0"), std::string::npos) << all;
  EXPECT_NE(all.find("max-dirty-age-ms is 99"), std::string::npos) << all;
  EXPECT_NE(all.find("no SSD tier"), std::string::npos) << all;
  EXPECT_TRUE(libvirt::UnreportedOptions(st).empty());
  // What the driver does not report is not compared, but listed.
  json bare{{"mode", "write-through"}, {"block-size", 4096}, {"ram-limit", 256 << 20}};
  EXPECT_TRUE(libvirt::CompareSettings(bare, policy::Rules{}).empty());
  EXPECT_EQ(libvirt::UnreportedOptions(bare).size(), 4u);
  // max-dirty 0 is the driver's default: half the RAM tier, one block at
  // least.
  policy::Rules tiny;
  tiny.ram_size = tiny.block_size = 4096;
  json one{{"mode", "write-through"}, {"block-size", 4096}, {"ram-limit", 4096},
           {"max-dirty", 4096}};
  EXPECT_TRUE(libvirt::CompareSettings(one, tiny).empty());
  // A failed tier: said by SsdFailure, not a setting to repair; without
  // ssd-failed (an older driver), ssd-active false is one.
  json failed{{"mode", "write-through"}, {"block-size", 4096}, {"ram-limit", 256 << 20},
              {"ssd-size", 1 << 20}, {"ssd-active", false}, {"ssd-failed", true}};
  EXPECT_TRUE(libvirt::CompareSettings(failed, r).empty());
  EXPECT_NE(libvirt::SsdFailure(failed).find("failed with an I/O error"), std::string::npos);
  failed.erase("ssd-failed");
  EXPECT_EQ(libvirt::CompareSettings(failed, r).size(), 1u);
  EXPECT_EQ(libvirt::SsdFailure(failed), "");
}

TEST_F(ManagerTest, OptionsChangedBehindOurBackAreNamedAndPutBack) {
  Qemu().report_options = true;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  Qemu().nodes["hc-vda"].options["admit-after"] = 7;
  Qemu().nodes["hc-vda"].options["max-dirty-age-ms"] = 42;
  // A refused repair leaves it not compliant, saying what differs.
  Qemu().fail["blockdev-reopen"] = "busy";
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("admit-after is 7, the policy says 1"), std::string::npos) << a->reason;
  EXPECT_NE(a->reason.find("max-dirty-age-ms is 42"), std::string::npos) << a->reason;
  // The next check puts them back.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["admit-after"], 1);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(ManagerTest, UnreportedOptionsAreAssertedByAReopen) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  Qemu().nodes["hc-vda"].options["seq-cutoff"] = 0;  // invisible in the stats
  Qemu().log.clear();
  mgr_->CheckVm(kWeb);
  EXPECT_NE(std::find(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), Qemu().log.end());
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["seq-cutoff"], 4 << 20);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

// Replaces the JSON of our -blockdev argument in the persistent definition.
void SetFilterArgument(FakeLibvirt& lv, const std::string& json_text) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(lv.domains[kWeb].inactive_xml.c_str()));
  bool done = false;
  for (auto arg : doc.document_element().child("qemu:commandline").children("qemu:arg")) {
    if (std::string(arg.attribute("value").value()).find("\"hostcache\"") != std::string::npos) {
      arg.attribute("value") = json_text.c_str();
      done = true;
    }
  }
  ASSERT_TRUE(done);
  std::ostringstream out;
  doc.save(out);
  lv.domains[kWeb].inactive_xml = out.str();
}

TEST_F(ManagerTest, AFilterArgumentOfAnUnexpectedShapeIsRepairedNotThrownOver) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  for (const char* arg :
       {R"({"driver":"hostcache","node-name":"hc-vda","file":"libvirt-4-format","ssd":{"filename":7},"mode":3,"block-size":"4k"})",
        R"({"driver":"hostcache","node-name":"hc-vda","ssd":[1],"mode":"write-back","block-size":-1})",
        R"({"driver":"hostcache","node-name":1})", R"({"driver":5})"}) {
    SCOPED_TRACE(arg);
    SetFilterArgument(lv_, arg);
    EXPECT_NO_THROW(mgr_->CheckVm(kWeb));
    auto a = *store_->GetAssignment(kWeb, "vda");
    EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
    // Written again with the policy's filter.
    auto p = Persistent();
    ASSERT_EQ(p.count("vda"), 1u);
    EXPECT_EQ(p["vda"].options["mode"], "write-through");
  }
  EXPECT_NO_THROW(mgr_->Unassign("web", "vda"));
}

TEST_F(ManagerTest, AQmpReplyOfAnUnexpectedShapeIsReportedOnTheDisk) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  struct Case {
    const char* command;
    std::function<void(json&)> change;
    Compliance state;
    const char* reason;
  };
  const Case cases[] = {
      {"query-blockstats",
       [](json& r) {
         for (auto& e : r["return"]) {
           if (e["node-name"] == "hc-vda") e["driver-specific"]["mode"] = 5;
         }
       },
       Compliance::kNotCompliant, "mode is unknown"},
      {"query-blockstats",
       [](json& r) {
         for (auto& e : r["return"]) e["node-name"] = 12;
       },
       Compliance::kNotCompliant, ""},
      {"query-block",
       [](json& r) {
         for (auto& e : r["return"]) e["qdev"] = json::array();
       },
       Compliance::kError, "no block device"},
      {"x-debug-query-block-graph", [](json& r) { r["return"]["nodes"] = 5; },
       Compliance::kError, ""},
      {"query-block", [](json& r) { r = json{{"error", 3}}; }, Compliance::kError,
       "without description"},
      {"query-block", [](json& r) { r = json::array(); }, Compliance::kError,
       "unreadable QMP reply"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.command + std::string(" ") + c.reason);
    Qemu().mangle = [&](const std::string& cmd, json& reply) {
      if (cmd == c.command) c.change(reply);
    };
    EXPECT_NO_THROW(mgr_->CheckVm(kWeb));
    auto a = *store_->GetAssignment(kWeb, "vda");
    EXPECT_NE(a->state, Compliance::kCompliant) << a->reason;
    if (c.state == Compliance::kError) {
      EXPECT_EQ(a->state, c.state) << a->reason;
    }
    EXPECT_NE(a->reason.find(c.reason), std::string::npos) << a->reason;
    Qemu().mangle = nullptr;
    mgr_->CheckVm(kWeb);
    a = *store_->GetAssignment(kWeb, "vda");
    EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  }
}

}  // namespace
}  // namespace hc::core
