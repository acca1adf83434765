// The migration coordinator (src/migration) against the fake libvirt: what
// it records and checks on the source and on the destination of a live
// migration.
#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/core/manager.h"
#include "manager/store/sqlite_store.h"
#include "migration/coordinator.h"

namespace hc::migration {
namespace {

using libvirt::Lifecycle;
using store::Compliance;
using testing::FakeClock;
using testing::FakeLibvirt;
using testing::FakeQemuTools;
using testing::TestData;

constexpr const char* kWeb = "6a2f3b4c-1d2e-4f50-8a9b-0c1d2e3f4a5b";
constexpr const char* kVdaDev = "/machine/peripheral/virtio-disk0/virtio-backend";

class MigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(*store::SqliteStore::Open(":memory:", clock_.now_ms));
    tools_.chains["/var/lib/libvirt/images/web-top.qcow2"] = 3;
    lv_.Add(kWeb, "web", TestData("web.inactive.xml"), TestData("web.live.xml"));
    core::ManagerConfig cfg;
    cfg.emulator = "/opt/hostcache/qemu-system-x86_64";
    cfg.ram_budget = 2ull << 30;
    mgr_ = std::make_unique<core::Manager>(*store_, lv_, tools_, clock_, cfg);
    coord_ = std::make_unique<Coordinator>(*mgr_, lv_, clock_);
  }
  testing::FakeQemu& Qemu() { return lv_.domains[kWeb].qemu; }
  std::vector<store::Event> Events(const std::string& action) {
    std::vector<store::Event> out;
    auto evs = store_->ListEvents(0, 1000, "");  // (kept: *temporary in a range-for dangles)
    for (const auto& e : *evs) {
      if (e.action == action) out.push_back(e);
    }
    return out;
  }

  FakeClock clock_;
  FakeLibvirt lv_;
  FakeQemuTools tools_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<core::Manager> mgr_;
  std::unique_ptr<Coordinator> coord_;
};

TEST_F(MigrationTest, SourceRecordsTheSwitchOverAndLeavesTheVmAloneMeanwhile) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationOut);
  ASSERT_EQ(Events("migrate-out").size(), 1u);
  EXPECT_NE(Events("migrate-out")[0].message.find("vda (policy 'balanced')"), std::string::npos);
  EXPECT_TRUE(mgr_->Migrating(kWeb));
  // Neither the periodic check nor the API touches the inactive nodes.
  Qemu().log.clear();
  mgr_->CheckAll();
  EXPECT_TRUE(Qemu().log.empty());
  auto busy = mgr_->Assign("web", "vdb", "balanced");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(busy.error().message.find("migrated"), std::string::npos);
  EXPECT_EQ(mgr_->Unassign("web", "vda").error().code, ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(Qemu().log.empty());
  // Gone: QEMU exited here, the VM is shut off (still defined).
  clock_.now_ms += 1500;
  lv_.domains[kWeb].active = false;
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigratedAway);
  auto away = Events("migrated-away");
  ASSERT_EQ(away.size(), 1u);
  EXPECT_NE(away[0].message.find("1.5 s"), std::string::npos) << away[0].message;
  EXPECT_FALSE(mgr_->Migrating(kWeb));
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(MigrationTest, DestinationVerifiesAfterResumeNotWhileIncoming) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  // As on a destination: QEMU started from the definition that came with
  // the VM (the filter in place), paused, nodes inactive.
  Qemu().log.clear();
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationIn);
  EXPECT_TRUE(Qemu().log.empty()) << "nothing may change while the VM is incoming";
  ASSERT_EQ(Events("migrate-in").size(), 1u);
  EXPECT_NE(Events("migrate-in")[0].message.find("verified when it resumes"), std::string::npos)
      << Events("migrate-in")[0].message;
  // Resumed: checked from QEMU's graph; a filter that did not come along
  // (live-inserted, not in the definition) is put in.
  Qemu().fail["qom-set"] = "x";  // (one shot) undo the earlier insertion below
  Qemu().devs[kVdaDev] = "libvirt-4-format";
  Qemu().nodes.erase("hc-vda");
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationResumed);
  // First attempt failed (qom-set), so pending; the next check fixes it.
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationResumed);
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  auto in = Events("migrate-in");
  ASSERT_EQ(in.size(), 3u);
  EXPECT_NE(in[0].message.find("re-verified"), std::string::npos) << in[0].message;
  EXPECT_NE(in[0].message.find("vda compliant"), std::string::npos) << in[0].message;
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(MigrationTest, AVmArrivingWithFiltersButNoAssignmentHereIsReported) {
  // The source's hostcached put the filter into the definition; this
  // host's has no assignment for it.
  auto& d = lv_.domains[kWeb];
  nlohmann::json opts{{"driver", "hostcache"}, {"node-name", "hc-vda"},
                      {"file", "libvirt-4-format"}};
  d.live_xml = *libvirt::ApplyFilters(d.live_xml, {{"vda", "hc-vda", opts}}, "");
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationIn);
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationResumed);
  auto in = Events("migrate-in");
  ASSERT_EQ(in.size(), 2u);
  EXPECT_EQ(in[0].level, "warning");
  EXPECT_NE(in[0].message.find("no policy on this host"), std::string::npos) << in[0].message;
  EXPECT_TRUE(store_->ListAssignments()->empty());
}

TEST_F(MigrationTest, MigrateSendsTheXmlWithTheFilters) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  EXPECT_EQ(mgr_->Migrate("web", {}).error().code, ErrorCode::kInvalidArgument);
  libvirt::MigrateRequest req;
  req.destination = "qemu+ssh://host2/system";
  req.unsafe = true;
  // A failure: reported, the VM stays.
  lv_.migrate_error = "the migration failed: unable to connect";
  auto bad = mgr_->Migrate("web", req);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(lv_.domains[kWeb].active);
  lv_.migrate_error.clear();
  auto secs = mgr_->Migrate("web", req);
  ASSERT_TRUE(secs) << secs.error().message;
  ASSERT_EQ(lv_.migrations.size(), 2u);
  const auto& sent = lv_.migrations.back();
  EXPECT_EQ(sent.destination, "qemu+ssh://host2/system");
  EXPECT_TRUE(sent.unsafe && sent.persistent && !sent.undefine_source);
  auto f = *libvirt::ParseInstalledFilters(sent.dest_xml);
  ASSERT_EQ(f.count("vda"), 1u) << sent.dest_xml;
  EXPECT_EQ(f["vda"].options["file"], "libvirt-4-format");
  auto evs = Events("migrate");
  ASSERT_EQ(evs.size(), 4u);  // requested, failed, requested, done
  EXPECT_NE(evs[0].message.find("migrated to qemu+ssh://host2/system"), std::string::npos)
      << evs[0].message;
  EXPECT_EQ(evs[2].level, "error");
}

TEST_F(MigrationTest, OtherEventsGoToTheManagerAndEndAMigration) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationOut);
  ASSERT_TRUE(mgr_->Migrating(kWeb));
  // The migration failed and the source runs on (reported as plain Resumed).
  Qemu().devs[kVdaDev] = "libvirt-4-format";  // as if the filter was lost
  Qemu().nodes.erase("hc-vda");
  coord_->OnEvent(kWeb, "web", Lifecycle::kResumed);
  EXPECT_FALSE(mgr_->Migrating(kWeb));
  mgr_->CheckAll();
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  // VMs without cached disks: no migration events at all.
  lv_.Add("00000000-0000-0000-0000-000000000001", "plain", TestData("web.inactive.xml"));
  coord_->OnEvent("00000000-0000-0000-0000-000000000001", "plain", Lifecycle::kMigrationOut);
  EXPECT_EQ(Events("migrate-out").size(), 1u);
  // A missed end event does not hold a VM for ever.
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationIn);
  ASSERT_TRUE(mgr_->Migrating(kWeb));
  clock_.now_ms += 2 * 3600 * 1000;
  EXPECT_FALSE(mgr_->Migrating(kWeb));
}

}  // namespace
}  // namespace hc::migration
