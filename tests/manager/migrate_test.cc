// Driving a live migration: the migration XML, the drain of write-back
// filters, the release of the tiers of a VM that left.
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
#include "migration/coordinator.h"

namespace hc::core {
namespace {

using store::Compliance;

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
  ASSERT_FALSE(migrator_->Migrate("web", req));
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

TEST_F(SsdTest, TheMigrationXmlCarriesTheFiltersOfLiveInsertedDisks) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_TRUE(mgr_->Assign("web", "vdb", "monitor"));
  // The live XML (what libvirt would send) has no filter: it was inserted
  // live.  The migration XML has both, numbered as the destination will.
  EXPECT_TRUE(libvirt::ParseInstalledFilters(lv_.domains[kWeb].live_xml)->empty());
  auto x = migrator_->MigrationXml("web");
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
  auto off = migrator_->MigrationXml("web");
  ASSERT_FALSE(off);
  EXPECT_EQ(off.error().code, ErrorCode::kFailedPrecondition);
}

TEST_F(SsdTest, AfterALiveMigrationAwayTheTierStartsOverBlank) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_TRUE(Tier()->formatted);
  // The VM left; its QEMU here wrote everything back, dropped the tier and
  // closed it.
  testing::WriteSsdSuperblock(File(), 9, 1, Origin());
  lv_.domains[kWeb].active = false;
  lv_.domains[kWeb].qemu = testing::FakeQemu{};
  // (What the coordinator does when the VM has left.)
  migration::Coordinator(*mgr_, registry_, *migrator_, lv_, clock_)
      .OnEvent(kWeb, "web", libvirt::Lifecycle::kMigratedAway);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank) << "ready for a migration back";
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
  // So a stale file removed by hand is no lost tier.
  std::filesystem::remove(File());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

}  // namespace
}  // namespace hc::core
