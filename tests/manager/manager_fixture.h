// The fixtures of the policy engine's tests (tests/manager/*_test.cc of
// the Manager): the running VM "web" in the fake libvirt (web_vm_fixture.h)
// with its policies, and the same with an SSD root and a policy with an SSD
// tier.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "web_vm_fixture.h"

namespace hc::core {

using nlohmann::json;
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

class SsdTest : public ManagerTest {
 protected:
  void SetUp() override {
    ManagerTest::SetUp();
    ManagerConfig cfg;
    cfg.ram_budget = 4ull << 30;
    cfg.ssd_budget = 100ull << 30;
    cfg.ssd_roots = *SsdRoots::Make({root_});
    MakeManager(cfg);
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

}  // namespace hc::core
