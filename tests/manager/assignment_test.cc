// Assigning and unassigning policies to VM disks (live and in the definition),
// hot-unplugged disks, the events they leave.
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

}  // namespace
}  // namespace hc::core
