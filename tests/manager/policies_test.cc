// Policies: editing one re-applies it to its disks (reopen or replace live),
// deleting a used one is refused.
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

TEST_F(ManagerTest, DeletingAnAssignedPolicyIsAConflict) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  auto r = mgr_->DeletePolicy("balanced");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kConflict);
  EXPECT_NE(r.error().message.find("web/vda"), std::string::npos);
  ASSERT_TRUE(mgr_->DeletePolicy("monitor"));
  EXPECT_EQ(mgr_->DeletePolicy("monitor").error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace hc::core
