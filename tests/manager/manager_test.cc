// The policy engine against fakes of libvirt (with a model of QEMU's block
// graph), the QEMU tools and the clock, and a real SQLite store.
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
#include "web_vm_fixture.h"

namespace hc::core {
namespace {

using nlohmann::json;
using store::Compliance;
using testing::FakeLibvirt;
using testing::kVdaDev;
using testing::kWeb;
using testing::TestData;

class ManagerTest : public testing::WebVmTest {
 protected:
  std::map<std::string, libvirt::InstalledFilter> Persistent() {
    return *libvirt::ParseInstalledFilters(lv_.domains[kWeb].inactive_xml);
  }
  void CreatePolicy(const std::string& name, json rules) {
    auto r = policy::RulesFromJson(rules);
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_TRUE(mgr_->CreatePolicy(policy::Policy{name, "", *r}));
  }
  std::vector<std::string> Events() {
    std::vector<std::string> out;
    auto evs = store_->ListEvents(0, 1000, "");
    for (const auto& e : *evs) out.push_back(e.action);
    return out;
  }
};

TEST_F(ManagerTest, AssignOnARunningVmInsertsLiveAndDefinesPersistently) {
  auto a = mgr_->Assign("web", "vda", "balanced");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  EXPECT_EQ(a->vm_uuid, kWeb);
  EXPECT_EQ(a->node_name, "hc-vda");
  // QEMU's graph: device -> hc-vda -> libvirt-4-format (vda's top image).
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  EXPECT_EQ(Qemu().nodes["hc-vda"].file, "libvirt-4-format");
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["mode"], "write-through");
  // blockdev-add before qom-set.
  auto& log = Qemu().log;
  auto add = std::find(log.begin(), log.end(), "blockdev-add");
  auto set = std::find(log.begin(), log.end(), "qom-set");
  ASSERT_NE(add, log.end());
  ASSERT_NE(set, log.end());
  EXPECT_LT(add - log.begin(), set - log.begin());
  // The definition: filter on libvirt's node for vda at the next start,
  // the device pointed at it, the project's emulator.
  auto p = Persistent();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p["vda"].options["file"], "libvirt-4-format");
  EXPECT_EQ(p["vda"].options["node-name"], "hc-vda");
  auto info = libvirt::ParseDomain(lv_.domains[kWeb].inactive_xml);
  EXPECT_EQ(info->emulator, "/opt/hostcache/qemu-system-x86_64");
  EXPECT_EQ(lv_.defines, 1);
}

TEST_F(ManagerTest, TwoDisksAndARawOne) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  auto b = mgr_->Assign(kWeb, "vdb", "monitor");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->state, Compliance::kCompliant) << b->reason;
  EXPECT_EQ(Qemu().nodes["hc-vdb"].file, "libvirt-3-storage");
  EXPECT_EQ(Qemu().devs["/machine/peripheral/ua-data/virtio-backend"], "hc-vdb");
  auto p = Persistent();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p["vdb"].options["file"], "libvirt-3-storage");
  EXPECT_EQ(p["vdb"].options["mode"], "pass-through");
}

TEST_F(ManagerTest, BadRequestsChangeNothing) {
  auto before_defines = lv_.defines;
  struct Case {
    std::string vm, target, policy;
    ErrorCode code;
  } cases[] = {
      {"web", "vdz", "balanced", ErrorCode::kNotFound},
      {"nosuchvm", "vda", "balanced", ErrorCode::kNotFound},
      {"web", "vda", "nosuchpolicy", ErrorCode::kInvalidArgument},
      {"web", "hdc", "balanced", ErrorCode::kInvalidArgument},  // a CD-ROM
      {"web", "../x", "balanced", ErrorCode::kInvalidArgument},
  };
  for (const auto& c : cases) {
    auto r = mgr_->Assign(c.vm, c.target, c.policy);
    ASSERT_FALSE(r) << c.vm << "/" << c.target;
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
  }
  EXPECT_TRUE(store_->ListAssignments()->empty());
  EXPECT_EQ(lv_.defines, before_defines);
  EXPECT_TRUE(Qemu().log.empty());
  auto r = mgr_->Assign("web", "vdz", "balanced");
  EXPECT_NE(r.error().message.find("vda, vdb, vdc"), std::string::npos) << r.error().message;
}

TEST_F(ManagerTest, BudgetIsEnforcedWith409AndAClearMessage) {
  CreatePolicy("big", json{{"ram-size", "1536M"}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "big"));
  auto r = mgr_->Assign("web", "vdb", "balanced");  // 1.5G + 256M fits 2G
  ASSERT_TRUE(r);
  auto over = mgr_->Assign("web", "vdc", "balanced");  // 1.75G + 256M = 2G fits exactly
  ASSERT_TRUE(over) << over.error().message;
  auto no = mgr_->Assign("web", "vdc", "big");  // replacing vdc's 256M by 1.5G: 3.25G
  ASSERT_FALSE(no);
  EXPECT_EQ(no.error().code, ErrorCode::kConflict);
  EXPECT_NE(no.error().message.find("RAM budget"), std::string::npos) << no.error().message;
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vdc"))->policy, "balanced");
  // Growing a used policy past the budget is refused too, and nothing changes.
  auto big = *store_->GetPolicy("big");
  big.rules.ram_size = 2ull << 30;
  auto up = mgr_->UpdatePolicy(big);
  ASSERT_FALSE(up);
  EXPECT_EQ(up.error().code, ErrorCode::kConflict);
  EXPECT_EQ(store_->GetPolicy("big")->rules.ram_size, 1536u << 20);
  EXPECT_EQ(mgr_->Budget().ram_used, 2ull << 30);
}

TEST_F(ManagerTest, EditingAPolicyReopensLiveAndRewritesTheDefinition) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  Qemu().log.clear();
  auto p = *store_->GetPolicy("balanced");
  p.rules.mode = policy::CacheMode::kWriteAround;
  p.rules.ram_size = 512 << 20;
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users) << users.error().message;
  ASSERT_EQ(users->size(), 1u);
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  EXPECT_NE(std::find(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), Qemu().log.end());
  EXPECT_EQ(std::find(Qemu().log.begin(), Qemu().log.end(), "blockdev-del"), Qemu().log.end());
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["mode"], "write-around");
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ram-size"], 512 << 20);
  EXPECT_EQ(Persistent()["vda"].options["mode"], "write-around");
}

TEST_F(ManagerTest, ANewBlockSizeReplacesTheFilter) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  Qemu().log.clear();
  auto p = *store_->GetPolicy("balanced");
  p.rules.block_size = 65536;
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  EXPECT_NE(std::find(Qemu().log.begin(), Qemu().log.end(), "blockdev-del"), Qemu().log.end());
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["block-size"], 65536);
  EXPECT_EQ(Qemu().nodes["hc-vda"].file, "libvirt-4-format");
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
}

TEST_F(ManagerTest, UnassignWritesBackRemovesLiveAndFromTheDefinition) {
  CreatePolicy("wb", json{{"mode", "write-back"}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "wb"));
  ASSERT_EQ(Qemu().nodes["hc-vda"].options["mode"], "write-back");
  Qemu().log.clear();
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  // Write-back first (reopen to write-through), then the device back on
  // libvirt's node, then the filter deleted.
  std::vector<std::string> want = {"blockdev-reopen", "qom-set", "blockdev-del"};
  std::vector<std::string> got;
  for (const auto& c : Qemu().log) {
    if (c == "blockdev-reopen" || c == "qom-set" || c == "blockdev-del") got.push_back(c);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(Qemu().devs[kVdaDev], "libvirt-4-format");
  EXPECT_EQ(Qemu().nodes.count("hc-vda"), 0u);
  EXPECT_TRUE(Persistent().empty());
  EXPECT_FALSE(*store_->GetAssignment(kWeb, "vda"));
  auto again = mgr_->Unassign("web", "vda");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kNotFound);
}

TEST_F(ManagerTest, FailedLiveRemovalKeepsTheAssignment) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  Qemu().fail["qom-set"] = "device is busy";
  auto r = mgr_->Unassign("web", "vda");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("device is busy"), std::string::npos);
  EXPECT_TRUE(*store_->GetAssignment(kWeb, "vda"));
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  // The next check puts the definition right again.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Persistent().size(), 1u);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

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
  auto x = mgr_->MigrationXml("web");
  ASSERT_TRUE(x) << x.error().message;
  EXPECT_NE(x->find("vnc-s3cret"), std::string::npos) << *x;
  EXPECT_NE(x->find("spice-s3cret"), std::string::npos) << *x;
}

TEST_F(ManagerTest, DeletingAnAssignedPolicyIsAConflict) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  auto r = mgr_->DeletePolicy("balanced");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kConflict);
  EXPECT_NE(r.error().message.find("web/vda"), std::string::npos);
  ASSERT_TRUE(mgr_->DeletePolicy("monitor"));
  EXPECT_EQ(mgr_->DeletePolicy("monitor").error().code, ErrorCode::kNotFound);
}

// ---- the SSD tier -------------------------------------------------------------

class SsdTest : public ManagerTest {
 protected:
  void SetUp() override {
    ManagerTest::SetUp();
    ManagerConfig cfg;
    cfg.ram_budget = 4ull << 30;
    cfg.ssd_budget = 100ull << 30;
    cfg.peers = testing::TestPeers();
    cfg.ssd_roots = *SsdRoots::Make({root_});
    mgr_ = std::make_unique<Manager>(*store_, lv_, tools_, clock_, cfg);
    CreatePolicy("ssd", json{{"ssd-size", "1M"}, {"ssd-dir", dir_}});
  }
  std::string File(const std::string& target = "vda") {
    return dir_ + "/" + kWeb + "-" + target + ".hcssd";
  }
  static std::string Origin(const std::string& target = "vda") {
    return std::string(kWeb) + "/" + target;
  }
  std::optional<store::SsdTier> Tier(const std::string& target = "vda") {
    return *store_->GetSsdTier(kWeb, target);
  }
  int Count(const std::string& action) {
    auto evs = Events();
    return static_cast<int>(std::count(evs.begin(), evs.end(), action));
  }
  // The VM shut off with the filter's tier in `state` (the driver formatted
  // it while it ran).
  void StopWithTier(uint32_t state) {
    testing::WriteSsdSuperblock(File(), 9, state, Origin());
    lv_.domains[kWeb].active = false;
    lv_.domains[kWeb].qemu = testing::FakeQemu{};
    mgr_->CheckVm(kWeb);
  }
  // The disk's tier file as the driver left it when it closed cleanly,
  // with a clean copy at 64 KiB.
  void WarmTier() {
    std::filesystem::create_directories(dir_);
    {
      std::ofstream f(File());
      f.seekp(64 << 10);
      f << "cached block";
    }
    std::filesystem::resize_file(File(), 1 << 20);
    testing::WriteSsdSuperblock(File(), 3, 1, Origin());
  }
  // The VM starts from its persistent definition (the filter and its tier
  // in QEMU from the first I/O); the driver leaves the tier's superblock at
  // generation `gen`, in use.
  void StartThroughTheDefinition(uint64_t gen) {
    auto& d = lv_.domains[kWeb];
    lv_.Add(kWeb, "web", d.inactive_xml, TestData("web.live.xml"));
    auto opts = Persistent()["vda"].options;
    Qemu().nodes["hc-vda-ssd"] = testing::FakeQemu::Node{"file", "", {}, "", File()};
    Qemu().nodes["hc-vda"] =
        testing::FakeQemu::Node{"hostcache", "libvirt-4-format", opts, "hc-vda-ssd", ""};
    Qemu().devs[kVdaDev] = "hc-vda";
    testing::WriteSsdSuperblock(File(), gen, 2, Origin());
    mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kStarted);
  }
  std::string CachedBlock() {
    std::ifstream f(File());
    f.seekg(64 << 10);
    std::string got(12, '\0');
    f.read(got.data(), 12);
    return got;
  }
  const testing::ScratchDir scratch_{"hcmgr-ssd-"};
  const std::string root_ = scratch_.path();
  const std::string dir_ = root_ + "/tier";  // created by hostcached
};

TEST_F(SsdTest, TheTierFileIsCreatedAndAttachedLiveAndInTheDefinition) {
  auto a = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  // The directory (0700) and a sparse file of ssd-size bytes.
  struct stat ds, fs;
  ASSERT_EQ(stat(dir_.c_str(), &ds), 0);
  EXPECT_EQ(ds.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(File().c_str(), &fs), 0) << File();
  EXPECT_EQ(fs.st_size, 1 << 20);
  EXPECT_EQ(fs.st_mode & 0777, 0600u);
  // The running filter has the file as its ssd child, and the disk's own
  // origin-id.
  auto& hc = Qemu().nodes["hc-vda"];
  EXPECT_EQ(hc.ssd, "hc-vda-ssd");
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  EXPECT_EQ(hc.options["origin-id"], std::string(kWeb) + "/vda");
  // The definition: the same child inline in the -blockdev.
  auto p = Persistent();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p["vda"].options["ssd"],
            (json{{"driver", "file"}, {"filename", File()}, {"node-name", "hc-vda-ssd"}}));
  EXPECT_EQ(p["vda"].options["origin-id"], std::string(kWeb) + "/vda");
  EXPECT_EQ(mgr_->Budget().ssd_used, 1u << 20);
}

TEST_F(SsdTest, FilesBelongToTheUserQemuRunsAs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  lv_.qemu_owner = libvirt::ProcessOwner{64055, 64056};
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  struct stat ds, fs;
  ASSERT_EQ(stat(dir_.c_str(), &ds), 0);
  ASSERT_EQ(stat(File().c_str(), &fs), 0);
  EXPECT_EQ(ds.st_uid, 64055u);
  EXPECT_EQ(ds.st_gid, 64056u);
  EXPECT_EQ(fs.st_uid, 64055u);
  EXPECT_EQ(fs.st_gid, 64056u);
  // A file found with another owner is given to QEMU's user.
  ASSERT_EQ(chown(File().c_str(), 0, 0), 0);
  mgr_->CheckVm(kWeb);
  ASSERT_EQ(stat(File().c_str(), &fs), 0);
  EXPECT_EQ(fs.st_uid, 64055u);
}

TEST(DomainXml, QemusUserFromTheCapabilities) {
  auto caps = R"(<capabilities><host><secmodel><model>apparmor</model><doi>0</doi></secmodel>
    <secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>+64055:+994</baselabel>
    <baselabel type='qemu'>+64055:+994</baselabel></secmodel></host></capabilities>)";
  auto l = libvirt::ParseDacBaseLabel(caps);
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->first, 64055u);
  EXPECT_EQ(l->second, 994u);
  EXPECT_FALSE(libvirt::ParseDacBaseLabel("<capabilities><host/></capabilities>"));
}

TEST_F(SsdTest, AnExistingTierFileIsReusedByAStartThroughTheDefinition) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  EXPECT_EQ(CachedBlock(), "cached block") << "a warm tier must survive";
  // Recorded as the driver's (an upgraded database learns it the same
  // way), and opened with ssd-create off.
  auto t = *store_->GetSsdTier(kWeb, "vda");
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->formatted);
  EXPECT_EQ(t->path, File());
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The VM starts from its definition: the filter is there from the first
  // I/O, so nothing the guest writes escapes it; the tier stays warm.
  StartThroughTheDefinition(4);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  EXPECT_EQ(CachedBlock(), "cached block");
  EXPECT_EQ(Count("ssd-emptied"), 0);
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-add"), 0);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
}

TEST_F(SsdTest, ALiveInsertionEmptiesATierClosedCleanlyFirst) {
  // The VM has run without the filter: the guest may have written to the
  // disk since the tier's copies were made.
  WarmTier();
  auto a = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  EXPECT_EQ(CachedBlock(), std::string(12, '\0')) << "stale copies must not be served";
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  EXPECT_EQ(Count("ssd-emptied"), 1);
  // The driver formatted the fresh file: recorded, and the definition
  // opens it with ssd-create off as after any live insertion.
  ASSERT_TRUE(Tier());
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The running filter's own tier is not emptied again.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(SsdTest, ATierEmptiedForAFailedInsertionIsOpenedWithSsdCreateOn) {
  WarmTier();
  Qemu().fail["blockdev-add"] = "fake: blockdev-add failed";
  auto a = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  // The next start formats the blank file (ssd-create off would refuse it).
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  EXPECT_EQ(Count("ssd-lost"), 0);
}

// The VM ran from its definition's start without the filter (edited by
// hand, say) and the filter could not be put in live: the warm tier left
// with the disk would serve stale copies at the next start through the
// definition, so it is emptied while the VM runs without it.
TEST_F(SsdTest, ACleanTierTheRunningVmDoesNotHaveOpenIsEmptied) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The driver formats the tier in the blockdev-add, the device refuses
  // the switch, and the blockdev-del that undoes it closes the tier
  // cleanly: a formatted tier in state 1 that no filter has open.
  lv_.Add(kWeb, "web", lv_.domains[kWeb].inactive_xml, TestData("web.live.xml"));
  Qemu().fail["qom-set"] = "fake: the device refuses the switch";
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kStarted);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(Qemu().devs[kVdaDev], "libvirt-4-format");
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-del"), 1);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  EXPECT_EQ(CachedBlock(), std::string(12, '\0'));
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1) << "one event for one check";
  EXPECT_EQ(Count("ssd-lost"), 0);
}

TEST_F(SsdTest, ACleanTierIsEmptiedWhileTheRunningVmLacksItsDisk) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // The VM runs without vda (hot-unplugged): nothing is inserted, and the
  // guest may write to the disk through another path meanwhile.
  std::string live = TestData("web.live.xml");
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(live.c_str()));
  auto vda = doc.select_node("//disk[target/@dev='vda']").node();
  ASSERT_TRUE(vda);
  vda.parent().remove_child(vda);
  std::ostringstream out;
  doc.save(out);
  lv_.Add(kWeb, "web", lv_.domains[kWeb].inactive_xml, out.str());
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kStarted);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant) << a->reason;
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-add"), 0);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  // A blank tier is not emptied again.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Count("ssd-emptied"), 1);
}

TEST_F(SsdTest, ARunningFiltersCleanTierIsKept) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StartThroughTheDefinition(4);
  // Even in state 1 (as far as hostcached reads it), a tier the running
  // VM has open is the running filter's: not emptied.
  testing::WriteSsdSuperblock(File(), 5, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  EXPECT_EQ(CachedBlock(), "cached block");
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kClean);
  EXPECT_EQ(Count("ssd-emptied"), 0);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
}

TEST_F(SsdTest, EditingThePolicyReopensWithTheSsdChildAndANewSizeReplacesIt) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().log.clear();
  auto p = *store_->GetPolicy("ssd");
  p.rules.mode = policy::CacheMode::kWriteAround;
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users) << users.error().message;
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  auto& log = Qemu().log;
  EXPECT_NE(std::find(log.begin(), log.end(), "blockdev-reopen"), log.end());
  EXPECT_EQ(std::find(log.begin(), log.end(), "blockdev-del"), log.end());
  EXPECT_EQ(Qemu().nodes["hc-vda"].ssd, "hc-vda-ssd");
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["mode"], "write-around");
  // A new ssd-size cannot be reopened: the filter is replaced, the file
  // made the new size while no filter has it open.
  log.clear();
  p.rules.ssd_size = 2 << 20;
  users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  EXPECT_NE(std::find(log.begin(), log.end(), "blockdev-del"), log.end());
  EXPECT_EQ(std::filesystem::file_size(File()), 2u << 20);
  EXPECT_EQ(Qemu().nodes["hc-vda"].ssd, "hc-vda-ssd");
  // Dropping the tier: replaced without it, the file deleted.
  p.rules.ssd_size = 0;
  users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  EXPECT_TRUE(Qemu().nodes["hc-vda"].ssd.empty());
  EXPECT_EQ(Qemu().nodes.count("hc-vda-ssd"), 0u);
  EXPECT_FALSE(std::filesystem::exists(File()));
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"));
}

TEST_F(SsdTest, WriteBackRemovalReopensWithTheSsdChildThenTheFileGoes) {
  CreatePolicy("ssd-wb", json{{"mode", "write-back"}, {"ssd-size", "1M"}, {"ssd-dir", dir_}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
  // A failed removal keeps the file: the filter may still use it.
  Qemu().fail["qom-set"] = "device is busy";
  ASSERT_FALSE(mgr_->Unassign("web", "vda"));
  EXPECT_TRUE(std::filesystem::exists(File()));
  Qemu().log.clear();
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  std::vector<std::string> got;
  for (const auto& c : Qemu().log) {
    if (c == "blockdev-reopen" || c == "qom-set" || c == "blockdev-del") got.push_back(c);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"qom-set", "blockdev-del"}))
      << "the first attempt already reopened to write-through";
  EXPECT_EQ(Qemu().nodes.count("hc-vda"), 0u);
  EXPECT_EQ(Qemu().nodes.count("hc-vda-ssd"), 0u);
  EXPECT_FALSE(std::filesystem::exists(File()));
  auto evs = Events();
  EXPECT_NE(std::find(evs.begin(), evs.end(), "ssd"), evs.end());
}

TEST_F(SsdTest, TheMigrationDrainReopensWithTheSsdChildAndOriginId) {
  CreatePolicy("ssd-wb", json{{"mode", "write-back"}, {"ssd-size", "1M"}, {"ssd-dir", dir_}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
  Qemu().dirty["hc-vda"] = 8 << 20;
  clock_.on_sleep = [&](int64_t) {
    if (Qemu().nodes["hc-vda"].options.value("max-dirty-age-ms", 0) == 1) Qemu().dirty["hc-vda"] = 0;
  };
  lv_.migrate_error = "the migration failed: cancelled";
  libvirt::MigrateRequest req;
  req.destination = "host2";
  ASSERT_FALSE(mgr_->Migrate("web", req));
  // Drained and restored through reopens that name the tier (the fake
  // refuses a reopen without the ssd child or the origin-id).
  EXPECT_EQ(Qemu().dirty["hc-vda"], 0u);
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), 3)
      << "insert (write-through, then write-back), drain, restore";
  auto& hc = Qemu().nodes["hc-vda"];
  EXPECT_EQ(hc.ssd, "hc-vda-ssd");
  EXPECT_EQ(hc.options["origin-id"], std::string(kWeb) + "/vda");
  EXPECT_EQ(hc.options["max-dirty-age-ms"], 5000);
  auto evs = store_->ListEvents(0, 1000, "");
  int drains = 0;
  for (const auto& e : *evs) {
    if (e.action != "migrate-drain") continue;
    drains++;
    EXPECT_EQ(e.level, "info") << e.message;
  }
  EXPECT_EQ(drains, 3);  // started, done, restored
}

TEST_F(SsdTest, TheTierFileIsKeptWhileQemuMayStillHaveIt) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // The device is not where the live XML says (hostcached cannot remove
  // the filter), but the filter node is still in use.
  auto& q = Qemu();
  q.devs["/machine/peripheral/elsewhere/virtio-backend"] = q.devs[kVdaDev];
  q.devs.erase(kVdaDev);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_EQ(q.nodes.count("hc-vda-ssd"), 1u);
  EXPECT_TRUE(std::filesystem::exists(File())) << "deleted under a filter that may use it";
}

TEST_F(SsdTest, AnUnusableSsdDirIsRefusedAndLaterReported) {
  // A regular file where the directory should be.
  const std::string blocker = root_ + "/not-a-dir";
  std::ofstream(blocker) << "x";
  CreatePolicy("bad", json{{"ssd-size", "1M"}, {"ssd-dir", blocker + "/tier"}});
  auto r = mgr_->Assign("web", "vda", "bad");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message.find(blocker), std::string::npos) << r.error().message;
  EXPECT_TRUE(store_->ListAssignments()->empty());
  EXPECT_TRUE(Qemu().log.empty());
  // An assigned policy changed to such a directory: RAM only, and said so.
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_dir = blocker + "/tier";
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kNotCompliant);
  EXPECT_NE((*users)[0].reason.find("RAM only"), std::string::npos) << (*users)[0].reason;
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  EXPECT_TRUE(Qemu().nodes["hc-vda"].ssd.empty());
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"))
      << "a definition naming an unusable file would not start";
}

TEST_F(SsdTest, TheMigrationXmlCarriesTheFiltersOfLiveInsertedDisks) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_TRUE(mgr_->Assign("web", "vdb", "monitor"));
  // The live XML (what libvirt would send) has no filter: it was inserted
  // live.  The migration XML has both, numbered as the destination will.
  EXPECT_TRUE(libvirt::ParseInstalledFilters(lv_.domains[kWeb].live_xml)->empty());
  auto x = mgr_->MigrationXml("web");
  ASSERT_TRUE(x) << x.error().message;
  auto f = *libvirt::ParseInstalledFilters(*x);
  ASSERT_EQ(f.size(), 2u) << *x;
  EXPECT_EQ(f["vda"].options["file"], "libvirt-4-format");
  EXPECT_EQ(f["vdb"].options["file"], "libvirt-3-storage");
  EXPECT_EQ(f["vda"].options["ssd"]["filename"], File());
  EXPECT_EQ(f["vda"].options["origin-id"], std::string(kWeb) + "/vda");
  EXPECT_FALSE(f["vdb"].options.contains("ssd"));
  // The rest of the live XML is kept (the disks' aliases, the emulator
  // switched to the project's QEMU).
  auto info = libvirt::ParseDomain(*x);
  EXPECT_EQ(info->disks[2].alias, "ua-data");
  EXPECT_EQ(info->disks.size(), 4u);
  // Not for a VM that is shut off.
  lv_.domains[kWeb].active = false;
  auto off = mgr_->MigrationXml("web");
  ASSERT_FALSE(off);
  EXPECT_EQ(off.error().code, ErrorCode::kFailedPrecondition);
}

TEST_F(SsdTest, TheStateOfATierFileComesFromItsNewestSuperblock) {
  const SsdRoots roots = *SsdRoots::Make({root_});
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kMissing);
  ASSERT_TRUE(PrepareSsdFile(File(), 1 << 20, false, roots));
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  testing::WriteSsdSuperblockCopy(File(), 3, 1, Origin());
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kClean);
  testing::WriteSsdSuperblockCopy(File(), 4, 2, Origin());  // newer, in use
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen);
  EXPECT_FALSE(RemoveSsdFile(File(), roots));
  EXPECT_TRUE(std::filesystem::exists(File()));
  // Not resized either while it may hold data.
  ASSERT_TRUE(PrepareSsdFile(File(), 2 << 20, true, roots));
  EXPECT_EQ(std::filesystem::file_size(File()), 1u << 20);
  testing::WriteSsdSuperblockCopy(File(), 5, 1, Origin());  // closed cleanly since
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kClean);
  ASSERT_TRUE(PrepareSsdFile(File(), 2 << 20, true, roots));
  EXPECT_EQ(std::filesystem::file_size(File()), 2u << 20);
}

TEST(SsdRoots, SsdDirMustLieUnderOneCanonically) {
  const testing::ScratchDir root("hc-roots-");
  const testing::ScratchDir other("hc-roots-other-");
  auto roots = SsdRoots::Make({root.path(), "/var/lib/hostcache/ssd/"});
  ASSERT_TRUE(roots) << roots.error().message;
  EXPECT_EQ(roots->Describe(), root.path() + ", /var/lib/hostcache/ssd");
  EXPECT_EQ(*roots->Canonical(root.path() + "//tier/"), root.path() + "/tier");
  EXPECT_EQ(*roots->Canonical(root.path()), root.path());
  EXPECT_EQ(*roots->Canonical("/var/lib/hostcache/ssd/fast"), "/var/lib/hostcache/ssd/fast");
  // A link below the root is resolved, and where it leads is checked.
  const std::string in = root.path() + "/in", out = root.path() + "/out";
  std::filesystem::create_directory(root.path() + "/real");
  std::filesystem::create_directory_symlink(root.path() + "/real", in);
  std::filesystem::create_directory_symlink(other.path(), out);
  EXPECT_EQ(*roots->Canonical(in + "/tier"), root.path() + "/real/tier");
  for (const std::string& bad : {std::string("/etc"), std::string("/"), root.path() + "-x",
                                 root.path() + "/../etc", out, out + "/tier",
                                 std::string("relative/dir"), std::string("")}) {
    auto r = roots->Canonical(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find("ssd-root = DIR"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(root.path()), std::string::npos) << r.error().message;
  }
  EXPECT_NE(roots->Canonical(out).error().message.find("resolves to " + other.path()),
            std::string::npos);
  // Locate splits a stored (canonical) path.
  auto where = roots->Locate(root.path() + "/real/tier");
  ASSERT_TRUE(where);
  EXPECT_EQ(where->first, root.path());
  EXPECT_EQ(where->second, "real/tier");
  EXPECT_FALSE(roots->Locate("/etc/x"));
  for (const char* bad : {"relative", "/", "/a/../b", "/a,b"}) {
    EXPECT_FALSE(SsdRoots::Make({bad})) << bad;
  }
  EXPECT_FALSE(SsdRoots::Make({}));
  EXPECT_EQ(SsdRoots().Describe(), kDefaultSsdRoot);
}

// Corrupts one byte of the origin identity of superblock copy `copy`: its
// CRC no longer matches.
void CorruptSuperblockCopy(const std::string& path, int copy) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(copy * 4096 + 130);
  f.put('#');
}

TEST_F(SsdTest, ATierHandedOffByALiveMigrationHoldsCleanCopiesOnly) {
  ASSERT_TRUE(PrepareSsdFile(File(), 1 << 20, false, *SsdRoots::Make({root_})));
  testing::WriteSsdSuperblock(File(), 4, HC_SSD_STATE_HANDED_OFF, Origin());
  auto f = ReadSsdFile(File());
  EXPECT_EQ(f.state, SsdFileState::kClean);
  EXPECT_FALSE(f.unreadable);
  EXPECT_EQ(f.origin_id, Origin());
}

TEST_F(SsdTest, ATierIsReadWithTheDriversDecoderCrcChecked) {
  ASSERT_TRUE(PrepareSsdFile(File(), 1 << 20, false, *SsdRoots::Make({root_})));
  testing::WriteSsdSuperblockCopy(File(), 3, 1, Origin());  // copy 1
  testing::WriteSsdSuperblockCopy(File(), 4, 2, Origin());  // copy 0, newer, in use
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen);
  // A newer copy whose CRC fails (a torn superblock write) is not used: the
  // driver takes the other one too.
  CorruptSuperblockCopy(File(), 0);
  auto f = ReadSsdFile(File());
  EXPECT_EQ(f.state, SsdFileState::kClean);
  EXPECT_FALSE(f.unreadable);
  EXPECT_EQ(f.origin_id, Origin());
  // Neither copy valid: a damaged tier (the driver refuses it); it may hold
  // a journal, so it is never deleted or replaced.
  CorruptSuperblockCopy(File(), 1);
  f = ReadSsdFile(File());
  EXPECT_EQ(f.state, SsdFileState::kOpen);
  EXPECT_TRUE(f.unreadable);
  EXPECT_NE(f.problem.find("neither a hostcache superblock nor zeroes"), std::string::npos)
      << f.problem;
  EXPECT_FALSE(RemoveSsdFile(File(), *SsdRoots::Make({root_})));
  EXPECT_TRUE(std::filesystem::exists(File()));
  // Something else than a tier, not zeroes: the same.
  std::ofstream(File()) << std::string(8192, 'x');
  EXPECT_TRUE(ReadSsdFile(File()).unreadable);
}

// Runs `fn` on another thread; false when it has not returned after 10 s
// (blocked opening the FIFO `fifo`: a writer then releases it).
template <typename F>
bool ReturnsPromptly(F fn, const std::string& fifo) {
  auto done = std::async(std::launch::async, fn);
  if (done.wait_for(std::chrono::seconds(10)) == std::future_status::ready) return true;
  int fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  done.wait();
  if (fd >= 0) close(fd);
  return false;
}

TEST_F(SsdTest, AFifoInPlaceOfTheTierIsRefusedAndNeverBlocks) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // QEMU's user owns the directory and plants a FIFO in place of the file.
  std::filesystem::remove(File());
  ASSERT_EQ(mkfifo(File().c_str(), 0600), 0);
  SsdFileInfo f;
  EXPECT_TRUE(ReturnsPromptly([&] { f = ReadSsdFile(File()); }, File()));
  EXPECT_EQ(f.state, SsdFileState::kOpen);
  EXPECT_TRUE(f.unreadable);
  EXPECT_NE(f.problem.find("is a FIFO, not a regular file"), std::string::npos) << f.problem;
  // The reconciler's check of the VM (with the VM's lock held) returns, and
  // the disk says why; the FIFO is left alone.
  EXPECT_TRUE(ReturnsPromptly([&] { mgr_->CheckVm(kWeb); }, File()));
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("is a FIFO"), std::string::npos) << a->reason;
  EXPECT_TRUE(std::filesystem::is_fifo(File()));
  EXPECT_TRUE(ReturnsPromptly([&] { (void)mgr_->Unassign("web", "vda"); }, File()));
  EXPECT_TRUE(std::filesystem::is_fifo(File()));
}

TEST_F(SsdTest, LinksInTheTierDirectoryAreNeverFollowed) {
  // A file of someone else's that QEMU's user would like to own.
  const testing::ScratchDir elsewhere("hcmgr-victim-");
  const std::string victim = elsewhere.path() + "/shadow";
  std::ofstream(victim) << "root:secret";
  std::filesystem::resize_file(victim, 1 << 20);
  ASSERT_EQ(chmod(victim.c_str(), 0640), 0);
  if (geteuid() == 0) lv_.qemu_owner = libvirt::ProcessOwner{64055, 64056};
  struct stat before;
  ASSERT_EQ(stat(victim.c_str(), &before), 0);
  auto untouched = [&] {
    struct stat now;
    ASSERT_EQ(stat(victim.c_str(), &now), 0);
    EXPECT_EQ(now.st_uid, before.st_uid);
    EXPECT_EQ(now.st_mode, before.st_mode);
    EXPECT_EQ(now.st_size, before.st_size);
    EXPECT_EQ(*ReadFile(victim), std::string("root:secret") + std::string((1 << 20) - 11, '\0'));
  };
  // A symbolic link as the tier file.
  std::filesystem::create_directories(dir_);
  std::filesystem::create_symlink(victim, File());
  auto r = mgr_->Assign("web", "vda", "ssd");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message.find("is a symbolic link, not a regular file"), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(ReadSsdFile(File()).unreadable);
  untouched();
  // A hard link as the tier file (where the kernel allows making one).
  std::filesystem::remove(File());
  std::error_code ec;
  std::filesystem::create_hard_link(victim, File(), ec);
  if (!ec) {
    r = mgr_->Assign("web", "vda", "ssd");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("hard links"), std::string::npos) << r.error().message;
    untouched();
    std::filesystem::remove(File());
  }
  // ssd-dir itself a link to elsewhere.
  std::filesystem::remove_all(dir_);
  std::filesystem::create_directory_symlink(elsewhere.path(), dir_);
  r = mgr_->Assign("web", "vda", "ssd");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(dir_ + " is a symbolic link"), std::string::npos)
      << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(elsewhere.path() + "/" + kWeb + "-vda.hcssd"));
  untouched();
  EXPECT_TRUE(store_->ListAssignments()->empty());
}

TEST_F(SsdTest, AStoredPolicyOutsideTheSsdRootsGetsNoTierAndSaysWhy) {
  // A policy stored before the roots were checked, with its tier file there.
  const testing::ScratchDir outside("hcmgr-outside-");
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_dir = outside.path();
  ASSERT_TRUE(store_->UpdatePolicy(p, clock_.NowMs()));
  const std::string old_file = outside.path() + "/" + kWeb + "-vda.hcssd";
  std::ofstream(old_file) << "";
  std::filesystem::resize_file(old_file, 1 << 20);
  testing::WriteSsdSuperblock(old_file, 3, 1, Origin());
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("is not under an SSD root (" + root_ + ")"), std::string::npos)
      << a->reason;
  EXPECT_NE(a->reason.find("cached in RAM only"), std::string::npos) << a->reason;
  // The definition's filter has no tier; nothing was made or deleted there.
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"));
  EXPECT_EQ(ReadSsdFileState(old_file), SsdFileState::kClean);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(outside.path()),
                          std::filesystem::directory_iterator()),
            1);
  // Unassigning deletes nothing outside the roots either.
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_TRUE(std::filesystem::exists(old_file));
}

TEST_F(SsdTest, ATierNotClosedCleanlyKeepsItsFilterUntilTheVmRan) {
  CreatePolicy("ssd-wb", json{{"mode", "write-back"}, {"ssd-size", "1M"}, {"ssd-dir", dir_}});
  CreatePolicy("ssd-wt", json{{"ssd-size", "1M"}, {"ssd-dir", dir_}});
  CreatePolicy("elsewhere", json{{"mode", "write-back"}, {"ssd-size", "1M"},
                                 {"ssd-dir", root_ + "/other"}});
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
  // The VM (or the host) crashed with written data in the tier's journal.
  testing::WriteSsdSuperblockCopy(File(), 7, 2, Origin());
  const std::string def = lv_.domains[kWeb].inactive_xml;
  // Unassigning would start the VM without the filter: refused.
  auto u = mgr_->Unassign("web", "vda");
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(u.error().message.find("start VM 'web' once with its current policy"),
            std::string::npos)
      << u.error().message;
  EXPECT_EQ(Persistent().size(), 1u);
  // So is every change that would lose the journal: no tier, another tier
  // file, not write-back, another block size; nothing changes.
  struct Change {
    json rules;
    const char* why;
  } changes[] = {{json{{"ssd-size", 0}}, "without this SSD tier"},
                 {json{{"mode", "write-through"}}, "write-through, not write-back"},
                 {json{{"block-size", 65536}, {"ssd-size", "1M"}}, "block-size"},
                 {json{{"ssd-dir", root_ + "/moved"}}, "move the disk's SSD tier"}};
  for (const auto& c : changes) {
    auto p = *store_->GetPolicy("ssd-wb");
    p.rules = *policy::RulesFromJson(c.rules, p.rules);
    auto users = mgr_->UpdatePolicy(p);
    ASSERT_FALSE(users) << c.rules.dump();
    EXPECT_EQ(users.error().code, ErrorCode::kFailedPrecondition);
    EXPECT_NE(users.error().message.find(c.why), std::string::npos) << users.error().message;
    EXPECT_NE(users.error().message.find("not closed cleanly"), std::string::npos);
    EXPECT_EQ(store_->GetPolicy("ssd-wb")->rules.mode, policy::CacheMode::kWriteBack);
    EXPECT_EQ(store_->GetPolicy("ssd-wb")->rules.ssd_size, 1u << 20);
  }
  for (const char* other : {"ssd-wt", "elsewhere", "balanced"}) {
    auto a = mgr_->Assign("web", "vda", other);
    ASSERT_FALSE(a) << other;
    EXPECT_EQ(a.error().code, ErrorCode::kFailedPrecondition);
    EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->policy, "ssd-wb");
  }
  EXPECT_EQ(lv_.domains[kWeb].inactive_xml, def);
  // A change that keeps the journal readable applies.
  auto p = *store_->GetPolicy("ssd-wb");
  p.rules.ram_size = 512 << 20;
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users) << users.error().message;
  EXPECT_EQ((*users)[0].state, Compliance::kPendingRestart) << (*users)[0].reason;
  EXPECT_EQ(Persistent()["vda"].options["ram-size"], 512 << 20);
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
  EXPECT_TRUE(std::filesystem::exists(File()));
  // One that would not, made behind the API's back (the store edited):
  // the definition keeps the filter as it was, and says why.
  p.rules.ssd_size = 0;
  ASSERT_TRUE(store_->UpdatePolicy(p, clock_.now_ms));
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("not closed cleanly"), std::string::npos) << a->reason;
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
  // The VM ran and closed the tier cleanly: the change applies now.
  testing::WriteSsdSuperblockCopy(File(), 8, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"));
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
}

TEST_F(SsdTest, TheSsdBudgetIsEnforced) {
  CreatePolicy("ssd-huge", json{{"ssd-size", "100G"}, {"ssd-dir", dir_}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  auto no = mgr_->Assign("web", "vdb", "ssd-huge");
  ASSERT_FALSE(no);
  EXPECT_EQ(no.error().code, ErrorCode::kConflict);
  EXPECT_NE(no.error().message.find("SSD"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(File("vdb")));
  EXPECT_EQ(mgr_->Budget().ssd_used, 1u << 20);
}

TEST_F(SsdTest, ASwitchedOffTierIsNotCompliant) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().ssd_active = false;
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("switched off"), std::string::npos) << a->reason;
}

TEST_F(SsdTest, AForeignFileUnderTheFilterIsReplacedByThePolicysOne) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().nodes["hc-vda-ssd"].filename = root_ + "/elsewhere.img";
  // Ours was closed cleanly when it left the node (left open by a crash
  // while the VM ran on without it, it would be stale: StaleTierTest).
  testing::WriteSsdSuperblock(File(), 8, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

// ---- the tier's record: ssd-create, lost tiers ---------------------------------------

TEST_F(SsdTest, ALiveInsertedTierIsRecordedAndThenOpenedWithSsdCreateOff) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // The filter was added with ssd-create on: hostcached had just made the
  // file, and the driver formatted it.
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(ReadSsdFile(File()).origin_id, Origin());
  auto t = Tier();
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->formatted);
  EXPECT_EQ(t->path, File());
  EXPECT_EQ(t->origin_id, Origin());
  // The definition says off from then on.
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ(Count("ssd"), 1);
  // Reopens name it too (it is mutable), and a check changes nothing more.
  int defines = lv_.defines;
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(lv_.defines, defines);
  EXPECT_EQ(Count("ssd"), 1);
}

TEST_F(SsdTest, AfterAStartTheFormattedTierIsRecordedAndTheDefinitionSaysOff) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true) << "a blank file hostcached made";
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  // The VM starts from its definition; the driver formats the tier.
  StartThroughTheDefinition(1);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(SsdTest, AMissingFormattedTierIsNotMadeAgainButReported) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(2);  // ran, then destroyed: journal data may be in it
  ASSERT_TRUE(Tier()->formatted);
  std::filesystem::remove(File());
  const std::string def_before = lv_.domains[kWeb].inactive_xml;
  mgr_->CheckVm(kWeb);
  mgr_->CheckVm(kWeb);
  EXPECT_FALSE(std::filesystem::exists(File())) << "a blank tier made in its place";
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  for (const std::string& want : {File(), std::string("is missing"),
                                  std::string("write-back data"),
                                  std::string("hostcachectl disk forget-tier web vda"),
                                  std::string("ssd-create=off")}) {
    EXPECT_NE(a->reason.find(want), std::string::npos) << want << " in " << a->reason;
  }
  EXPECT_EQ(Count("ssd-lost"), 1) << "one event, not one per check";
  // The definition still names the tier, with ssd-create off: a start
  // fails instead of running without the tier's data.
  EXPECT_EQ(lv_.domains[kWeb].inactive_xml, def_before);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
  // Assigning the policy again does not make it either.
  auto again = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->state, Compliance::kError);
  EXPECT_FALSE(std::filesystem::exists(File()));
  // Unassigning gives it up too, and says so.
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_FALSE(Tier());
  EXPECT_EQ(Count("ssd-forget"), 1);
}

TEST_F(SsdTest, ABlankOrForeignReplacementIsLostToo) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(1);
  std::filesystem::remove(File());
  {
    std::ofstream f(File());
  }
  std::filesystem::resize_file(File(), 1 << 20);  // blank, the same size
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  EXPECT_NE(a->reason.find("is blank"), std::string::npos) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank) << "left as it is";
  // Another disk's tier copied over it.
  testing::WriteSsdSuperblock(File(), 4, 1, std::string(kWeb) + "/vdb");
  mgr_->CheckVm(kWeb);
  a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  EXPECT_NE(a->reason.find("another origin ('" + std::string(kWeb) + "/vdb')"),
            std::string::npos)
      << a->reason;
  // Its own tier back: fine again.
  testing::WriteSsdSuperblock(File(), 5, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(SsdTest, ForgettingALostTierMakesANewOne) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(2);
  // While the tier is there, there is nothing to forget.
  auto intact = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_FALSE(intact);
  EXPECT_EQ(intact.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(intact.error().message.find("nothing is lost"), std::string::npos)
      << intact.error().message;
  EXPECT_TRUE(Tier()->formatted);
  std::filesystem::remove(File());
  mgr_->CheckVm(kWeb);
  ASSERT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kError);
  auto a = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank) << "a new blank tier";
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-forget"), 1);
  // A disk without a tier has nothing to forget.
  ASSERT_TRUE(mgr_->Assign("web", "vdb", "balanced"));
  auto none = mgr_->ForgetSsdTier("web", "vdb");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(mgr_->ForgetSsdTier("web", "vdc").error().code, ErrorCode::kNotFound);
}

TEST_F(SsdTest, ARunningVmsTierIsNotForgotten) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  auto r = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Count("ssd-forget"), 0);
}

// The write-back tier's QEMU crashed (superblock `state`), and the VM was
// started again from a definition without the filter (edited by hand): it
// runs uncached, with the tier file left as it was.
class StaleTierTest : public SsdTest {
 protected:
  void SetUp() override {
    SsdTest::SetUp();
    CreatePolicy("ssd-wb", json{{"mode", "write-back"}, {"ssd-size", "1M"}, {"ssd-dir", dir_}});
  }
  void CrashThenStartWithoutFilter(uint32_t state) {
    ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
    ASSERT_TRUE(Tier() && Tier()->formatted);
    testing::WriteSsdSuperblock(File(), 9, state, Origin());
    lv_.domains[kWeb].qemu = testing::FakeQemu{};
    lv_.Add(kWeb, "web", TestData("web.inactive.xml"), TestData("web.live.xml"));
    ASSERT_NE(Qemu().devs[kVdaDev], "hc-vda");
  }
  bool Added() {
    auto& log = Qemu().log;
    return std::find(log.begin(), log.end(), "blockdev-add") != log.end();
  }
};

TEST_F(StaleTierTest, ATierLeftOpenIsNotInsertedIntoAVmRunningWithoutItsFilter) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  mgr_->CheckVm(kWeb);
  EXPECT_FALSE(Added()) << "the old journal would be written back over newer data";
  EXPECT_EQ(Qemu().devs[kVdaDev], "libvirt-4-format");
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  for (const std::string& want :
       {File(), std::string("not closed cleanly"), std::string("ran without its filter"),
        std::string("overwrite newer data"),
        std::string("'hostcachectl disk forget-tier web vda'"),
        std::string("inserted with a fresh tier")}) {
    EXPECT_NE(a->reason.find(want), std::string::npos) << want << " in " << a->reason;
  }
  EXPECT_EQ(Count("ssd-stale"), 1) << "one event, not one per check";
  EXPECT_TRUE(Tier()->stale);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen) << "left as it is";
  // Nor does the definition get it back: the next start would open it.
  EXPECT_EQ(Persistent().count("vda"), 0u);
  // Stopped, the VM is still not given the tier; the record remembers.
  lv_.domains[kWeb].active = false;
  lv_.domains[kWeb].qemu = testing::FakeQemu{};
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kError);
  EXPECT_EQ(Persistent().count("vda"), 0u);
  EXPECT_EQ(Count("ssd-stale"), 1);
}

TEST_F(StaleTierTest, ForgettingItInsertsTheFilterWithAFreshTier) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  ASSERT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kError);
  auto a = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  EXPECT_EQ(Count("ssd-forget"), 1);
  // A new blank file, which the driver formatted (ssd-create on).
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->stale);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The running filter's tier: in use, nothing to forget, no alarm.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  EXPECT_EQ(mgr_->ForgetSsdTier("web", "vda").error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Count("ssd-stale"), 1);
}

TEST_F(StaleTierTest, AStoppedVmsStaleTierCanBeForgottenToo) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  lv_.domains[kWeb].active = false;
  lv_.domains[kWeb].qemu = testing::FakeQemu{};
  auto a = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
}

TEST_F(StaleTierTest, ACleanTierIsEmptiedThenInserted) {
  CrashThenStartWithoutFilter(1);
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  // Clean copies only, but the VM ran without the filter: they may be
  // stale, so the filter gets the file emptied.
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  EXPECT_FALSE(Tier()->stale);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ(Count("ssd-stale"), 0);
  EXPECT_EQ(mgr_->ForgetSsdTier("web", "vda").error().code, ErrorCode::kFailedPrecondition);
}

TEST_F(StaleTierTest, AnInsertionThatFailedPartWayIsNoFalseAlarm) {
  // qom-set fails, and so does the blockdev-del that undoes the
  // blockdev-add: the filter node stays in QEMU with its tier open.
  Qemu().fail["qom-set"] = "fake: qom-set failed";
  Qemu().fail["blockdev-del"] = "fake: blockdev-del failed";
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
  ASSERT_TRUE(Qemu().nodes.count("hc-vda"));
  ASSERT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen);
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->reason.find("ran without its filter"), std::string::npos) << a->reason;
  EXPECT_EQ(Count("ssd-stale"), 0);
  EXPECT_FALSE(Tier()->stale);
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
}

TEST_F(StaleTierTest, UnassigningDeletesTheStaleFile) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_FALSE(std::filesystem::exists(File()));
  EXPECT_FALSE(Tier());
}

TEST_F(SsdTest, AResizedCleanTierStartsOverWithSsdCreateOn) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(1);  // closed cleanly: clean copies only
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_size = 2 << 20;
  ASSERT_TRUE(mgr_->UpdatePolicy(p));
  EXPECT_EQ(std::filesystem::file_size(File()), 2u << 20);
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(SsdTest, AMovedTierLeavesTheOldFileWhenItHeldCleanCopiesOnly) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(1);
  const std::string old = File();
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_dir = root_ + "/moved";
  ASSERT_TRUE(mgr_->UpdatePolicy(p));
  const std::string now = root_ + "/moved/" + kWeb + "-vda.hcssd";
  EXPECT_FALSE(std::filesystem::exists(old));
  EXPECT_EQ(ReadSsdFileState(now), SsdFileState::kBlank);
  EXPECT_EQ(Tier()->path, now);
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(SsdTest, UnassigningForgetsTheRecord) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_TRUE(Tier());
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_FALSE(Tier());
  EXPECT_FALSE(std::filesystem::exists(File()));
  // Assigned again: a new tier, made and formatted afresh.
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(SsdTest, AfterALiveMigrationAwayTheTierStartsOverBlank) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_TRUE(Tier()->formatted);
  // The VM left; its QEMU here wrote everything back, dropped the tier and
  // closed it.
  testing::WriteSsdSuperblock(File(), 9, 1, Origin());
  lv_.domains[kWeb].active = false;
  lv_.domains[kWeb].qemu = testing::FakeQemu{};
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kMigratedAway);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank) << "ready for a migration back";
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
  // So a stale file removed by hand is no lost tier.
  std::filesystem::remove(File());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(SsdTest, AFailedTierIsReportedAndReplacedWhenThePolicyIsReapplied) {
  Qemu().report_options = true;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().ssd_failed.insert("hc-vda");
  Qemu().log.clear();
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_EQ(a->reason.rfind("the SSD tier failed with an I/O error; writes go through to the "
                            "origin; check the device, then re-apply the policy",
                            0),
            0u)
      << a->reason;
  // A check repairs nothing (a reopen cannot; a failing device would fail
  // again).
  for (const char* c : {"blockdev-reopen", "blockdev-del", "blockdev-add"}) {
    EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), c), 0) << c;
  }
  // Re-applying the policy replaces the filter: the tier is attached again.
  auto again = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->state, Compliance::kCompliant) << again->reason;
  EXPECT_NE(std::find(Qemu().log.begin(), Qemu().log.end(), "blockdev-del"), Qemu().log.end());
  EXPECT_EQ(Qemu().nodes["hc-vda"].ssd, "hc-vda-ssd");
  // Its copies missed what was written since it failed (and while the
  // filter was out): emptied, and formatted afresh.
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
}

TEST_F(SsdTest, ReportedSettingsAreComparedNotReasserted) {
  Qemu().report_options = true;
  CreatePolicy("tuned", json{{"admit-after", 2}, {"seq-cutoff", "1M"}, {"max-dirty", "64M"},
                             {"max-dirty-age-ms", 800}, {"mode", "write-back"}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "tuned"));
  Qemu().log.clear();
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), 0)
      << "the driver reports them: nothing to re-assert";
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  // Changed behind hostcached's back and not put back (the reopen fails):
  // each named.
  auto& o = Qemu().nodes["hc-vda"].options;
  o["seq-cutoff"] = 0;
  o["max-dirty"] = 32 << 20;
  Qemu().fail["blockdev-reopen"] = "busy";
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("seq-cutoff is 0, the policy says 1M"), std::string::npos)
      << a->reason;
  EXPECT_NE(a->reason.find("max-dirty is 32M, the policy says 64M"), std::string::npos)
      << a->reason;
}

// ---- settings QEMU runs with ----------------------------------------------------

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

// ---- hot-unplug -----------------------------------------------------------------

std::string WithoutDisk(const std::string& xml, const std::string& target) {
  pugi::xml_document doc;
  doc.load_string(xml.c_str());
  auto devices = doc.document_element().child("devices");
  for (auto d : devices.children("disk")) {
    if (target == d.child("target").attribute("dev").value()) {
      devices.remove_child(d);
      break;
    }
  }
  std::ostringstream out;
  doc.save(out);
  return out.str();
}

TEST_F(ManagerTest, AHotUnpluggedDiskIsCleanedUpAndReported) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  ASSERT_TRUE(mgr_->Assign("web", "vdb", "balanced"));
  // libvirt detached vdb live: the device is gone, its nodes stay open
  // under our filter.
  auto& d = lv_.domains[kWeb];
  d.qemu.devs.erase("/machine/peripheral/ua-data/virtio-backend");
  d.live_xml = WithoutDisk(d.live_xml, "vdb");
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kDeviceRemoved, "ua-data");
  EXPECT_EQ(Qemu().nodes.count("hc-vdb"), 0u);
  EXPECT_EQ(Qemu().nodes.count("libvirt-3-storage"), 0u) << "libvirt's orphan stays open";
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda") << "the other disk is untouched";
  auto b = *store_->GetAssignment(kWeb, "vdb");
  EXPECT_EQ(b->state, Compliance::kNotCompliant);
  EXPECT_NE(b->reason.find("hot-unplugged"), std::string::npos) << b->reason;
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  auto evs = Events();
  EXPECT_NE(std::find(evs.begin(), evs.end(), "hot-unplug"), evs.end());
  EXPECT_EQ(Persistent().size(), 2u) << "still in the definition: cached at the next start";
  // Then detached from the definition too: our entries for it go, so the
  // VM can start; the other disk keeps its filter.
  d.inactive_xml = WithoutDisk(d.inactive_xml, "vdb");
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kDefined);
  auto p = Persistent();
  EXPECT_EQ(p.size(), 1u);
  EXPECT_EQ(p.count("vdb"), 0u);
  EXPECT_EQ(lv_.domains[kWeb].inactive_xml.find("hc-vdb"), std::string::npos);
  evs = Events();
  EXPECT_NE(std::find(evs.begin(), evs.end(), "unplug"), evs.end());
  b = *store_->GetAssignment(kWeb, "vdb");
  EXPECT_EQ(b->state, Compliance::kNotCompliant);
  EXPECT_NE(b->reason.find("definition has no disk vdb"), std::string::npos) << b->reason;
  ASSERT_TRUE(mgr_->Unassign("web", "vdb"));
}

TEST_F(ManagerTest, UnassigningAnUnpluggedDiskRemovesItsLeftoverFilter) {
  ASSERT_TRUE(mgr_->Assign("web", "vdb", "balanced"));
  auto& d = lv_.domains[kWeb];
  d.qemu.devs.erase("/machine/peripheral/ua-data/virtio-backend");
  d.live_xml = WithoutDisk(d.live_xml, "vdb");
  // (no device-removed event seen: hostcached was down)
  ASSERT_TRUE(mgr_->Unassign("web", "vdb"));
  EXPECT_EQ(Qemu().nodes.count("hc-vdb"), 0u);
  EXPECT_TRUE(Persistent().empty());
}

TEST_F(ManagerTest, EventsTellWhatHappened) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  auto evs = Events();
  for (const char* want : {"assign", "define", "insert-live", "compliance", "remove-live",
                           "unassign"}) {
    EXPECT_NE(std::find(evs.begin(), evs.end(), want), evs.end()) << want;
  }
}

// ---- input of an unexpected shape (a definition edited by hand, QEMU) --------

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

// ---- operations on one VM from several threads -------------------------------

// Runs `fn` on a thread of its own; Done() tells whether it has returned.
class Async {
 public:
  explicit Async(std::function<void()> fn)
      : future_(std::async(std::launch::async, std::move(fn))) {}
  ~Async() {
    if (future_.valid()) future_.wait();
  }
  bool Done(std::chrono::milliseconds within) {
    return future_.wait_for(within) == std::future_status::ready;
  }

 private:
  std::future<void> future_;
};

// A QMP command that waits while `hold` is set (a VM whose QEMU is slow),
// and whether any QMP command ran while the VM was marked migrating.
class RaceTest : public ManagerTest {
 protected:
  void SetUp() override {
    ManagerTest::SetUp();
    lv_.on_qmp = [this](const std::string& uuid) {
      std::unique_lock lock(mu_);
      if (mgr_->Migrating(uuid)) qmp_while_migrating_++;
      if (!hold_) return;
      held_++;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !hold_; });
    };
  }
  void TearDown() override { Release(); }
  void Hold() {
    std::lock_guard lock(mu_);
    hold_ = true;
    held_ = 0;
  }
  void WaitHeld() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return held_ > 0; });
  }
  void Release() {
    std::lock_guard lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  int QmpWhileMigrating() {
    std::lock_guard lock(mu_);
    return qmp_while_migrating_;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  int held_ = 0;
  int qmp_while_migrating_ = 0;
};

TEST_F(RaceTest, AnOperationWaitingForTheVmSeesAMigrationThatBeganMeanwhile) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  for (const std::string op : {"assign", "unassign"}) {
    SCOPED_TRACE(op);
    mgr_->SetMigrating(kWeb, false);
    if (!store_->GetAssignment(kWeb, "vda").value()) {
      ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
    }
    Hold();
    // A check holds the VM (its QEMU is slow to answer).
    Async check([&] { mgr_->CheckVm(kWeb); });
    WaitHeld();
    // An API request on the VM waits for it...
    Status result;
    std::atomic<int> looked_up{0};
    lv_.on_lookup = [&](const std::string&) { looked_up++; };
    Async request([&] {
      result = op == "assign" ? Status(mgr_->Assign("web", "vda", "read-mostly").map([](auto&&) {}))
                              : mgr_->Unassign("web", "vda");
    });
    while (looked_up == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_FALSE(request.Done(std::chrono::milliseconds(100)));
    // ...while the VM's migration switches over (the coordinator marks it).
    Async mark([&] { mgr_->SetMigrating(kWeb, true); });
    (void)mark.Done(std::chrono::milliseconds(200));
    Release();
    EXPECT_TRUE(request.Done(std::chrono::seconds(30)));
    EXPECT_TRUE(mark.Done(std::chrono::seconds(30)));
    EXPECT_TRUE(check.Done(std::chrono::seconds(30)));
    lv_.on_lookup = nullptr;
    // Either the request ran before the mark, or it was refused.
    EXPECT_EQ(QmpWhileMigrating(), 0);
    if (!result) {
      EXPECT_NE(result.error().message.find("live-migrated"), std::string::npos);
    }
  }
}

TEST_F(RaceTest, MigrateMarksTheVmUnderItsLock) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  Hold();
  Async check([&] { mgr_->CheckVm(kWeb); });
  WaitHeld();
  // A migration, then an assignment, wait for the VM.
  std::atomic<int> looked_up{0};
  lv_.on_lookup = [&](const std::string&) { looked_up++; };
  Async migrate([&] {
    libvirt::MigrateRequest req;
    req.destination = "host2";
    (void)mgr_->Migrate("web", req, 0);
  });
  while (looked_up == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_FALSE(migrate.Done(std::chrono::milliseconds(100)));
  Result<store::Assignment> assigned = Fail(ErrorCode::kInternal, "not run");
  std::unique_ptr<Async> assign;
  // The migration itself waits for the assignment to be done (or for
  // 500 ms), so that one running while the VM migrates would be seen.
  lv_.on_migrate = [&] { (void)assign->Done(std::chrono::milliseconds(500)); };
  assign = std::make_unique<Async>([&] { assigned = mgr_->Assign("web", "vdb", "monitor"); });
  while (looked_up < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_FALSE(assign->Done(std::chrono::milliseconds(100)));
  Release();
  EXPECT_TRUE(assign->Done(std::chrono::seconds(30)));
  EXPECT_TRUE(migrate.Done(std::chrono::seconds(30)));
  EXPECT_TRUE(check.Done(std::chrono::seconds(30)));
  lv_.on_lookup = nullptr;
  ASSERT_EQ(lv_.migrations.size(), 1u);
  EXPECT_EQ(QmpWhileMigrating(), 0);
  // The assignment happened before the migration (and went along in its
  // XML) or was refused; never in between.
  const bool in_xml = libvirt::ParseInstalledFilters(lv_.migrations[0].dest_xml)->count("vdb");
  if (assigned) {
    EXPECT_TRUE(in_xml);
  } else {
    EXPECT_NE(assigned.error().message.find("live-migrated"), std::string::npos)
        << assigned.error().message;
    EXPECT_FALSE(in_xml);
  }
}

TEST_F(RaceTest, UnassigningAVanishedVmWhileItIsCheckedDoesNotBringTheAssignmentBack) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  lv_.domains.erase(kWeb);
  // The check of the vanished VM is slow to learn it is gone.
  std::mutex mu;
  std::condition_variable cv;
  bool first = true, in_check = false, release = false;
  lv_.on_lookup = [&](const std::string&) {
    std::unique_lock lock(mu);
    if (!first) return;
    first = false;
    in_check = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  };
  Async check([&] { mgr_->CheckVm(kWeb); });
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return in_check; });
  }
  Status unassigned;
  Async unassign([&] { unassigned = mgr_->Unassign("web", "vda"); });
  EXPECT_FALSE(unassign.Done(std::chrono::milliseconds(300))) << "it waits for the check";
  {
    std::lock_guard lock(mu);
    release = true;
    cv.notify_all();
  }
  EXPECT_TRUE(unassign.Done(std::chrono::seconds(30)));
  EXPECT_TRUE(check.Done(std::chrono::seconds(30)));
  EXPECT_TRUE(unassigned) << unassigned.error().message;
  EXPECT_FALSE(store_->GetAssignment(kWeb, "vda").value()) << "the assignment came back";
}

}  // namespace
}  // namespace hc::core
