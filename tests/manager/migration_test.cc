// The migration coordinator (src/migration) against the fake libvirt: what
// it records and checks on the source and on the destination of a live
// migration.
#include <gtest/gtest.h>

#include <algorithm>

#include "migration/coordinator.h"
#include "web_vm_fixture.h"

namespace hc::migration {
namespace {

using libvirt::Lifecycle;
using store::Compliance;
using testing::FakeLibvirt;
using testing::kVdaDev;
using testing::kWeb;
using testing::TestData;

class MigrationTest : public testing::WebVmTest {
 protected:
  void SetUp() override {
    WebVmTest::SetUp();
    coord_ = std::make_unique<Coordinator>(*mgr_, registry_, *migrator_, lv_, clock_);
  }
  std::vector<store::Event> Events(const std::string& action) {
    std::vector<store::Event> out;
    auto evs = store_->ListEvents(0, 1000, "");  // (kept: *temporary in a range-for dangles)
    for (const auto& e : *evs) {
      if (e.action == action) out.push_back(e);
    }
    return out;
  }

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

TEST_F(MigrationTest, AVmThatLeftWithItsDefinitionHasItsAssignmentsForgotten) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationOut);
  lv_.domains[kWeb].active = false;
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigratedAway);
  ASSERT_TRUE(*store_->GetAssignment(kWeb, "vda")) << "still defined here: kept";
  // --undefinesource: the definition goes after the departure.
  lv_.domains.erase(kWeb);
  coord_->OnEvent(kWeb, "web", Lifecycle::kUndefined);
  EXPECT_FALSE(*store_->GetAssignment(kWeb, "vda"));
  auto away = Events("migrated-away");
  ASSERT_EQ(away.size(), 2u);
  EXPECT_NE(away[0].message.find("forgotten here"), std::string::npos) << away[0].message;
}

TEST_F(MigrationTest, AnUndefineWithoutADepartureKeepsTheAssignments) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationOut);
  lv_.domains[kWeb].active = false;
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigratedAway);
  // It came back (and runs here) before its definition was removed.
  lv_.domains[kWeb].active = true;
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationIn);
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationResumed);
  lv_.domains[kWeb].persistent = false;
  coord_->OnEvent(kWeb, "web", Lifecycle::kUndefined);
  EXPECT_TRUE(*store_->GetAssignment(kWeb, "vda"));
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
  EXPECT_EQ(migrator_->Migrate("web", {}).error().code, ErrorCode::kInvalidArgument);
  libvirt::MigrateRequest req;
  req.destination = "host2";
  req.unsafe = true;
  // A failure: reported, the VM stays.
  lv_.migrate_error = "the migration failed: unable to connect";
  auto bad = migrator_->Migrate("web", req);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(lv_.domains[kWeb].active);
  lv_.migrate_error.clear();
  auto secs = migrator_->Migrate("web", req);
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
  EXPECT_NE(evs[0].message.find("migrated to peer 'host2' (qemu+ssh://host2/system)"),
            std::string::npos)
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

// ---- draining write-back disks before the migration -------------------------

class DrainTest : public MigrationTest {
 protected:
  void SetUp() override {
    MigrationTest::SetUp();
    auto wb = policy::PolicyFromJson(
        nlohmann::json{{"name", "wb"}, {"rules", {{"mode", "write-back"}, {"max-dirty-age-ms", 7000}}}});
    ASSERT_TRUE(wb);
    ASSERT_TRUE(mgr_->CreatePolicy(*wb));
    ASSERT_TRUE(mgr_->Assign("web", "vda", "wb"));
    ASSERT_TRUE(mgr_->Assign("web", "vdb", "balanced"));
    ASSERT_EQ(Qemu().nodes["hc-vda"].options["mode"], "write-back");
    Qemu().dirty["hc-vda"] = 64ull << 20;
    req_.destination = "host2";
  }
  uint64_t Age(const std::string& node) {
    return Qemu().nodes[node].options.value("max-dirty-age-ms", uint64_t{0});
  }
  // The driver as far as the drain sees it: with max-dirty-age-ms 1 the
  // destager writes back `destage` per poll interval while the guest
  // writes `guest`; with the policy's age nothing is written back yet.
  void Model(uint64_t destage, uint64_t guest) {
    clock_.on_sleep = [this, destage, guest](int64_t) {
      uint64_t& d = Qemu().dirty["hc-vda"];
      if (Age("hc-vda") == 1) d -= std::min(d, destage);
      d += guest;
      EXPECT_TRUE(lv_.migrations.empty()) << "the migration started during the drain";
    };
  }
  libvirt::MigrateRequest req_;
};

TEST_F(DrainTest, WriteBackDisksAreDrainedWhileTheGuestRunsThenTheMigrationStarts) {
  Model(16ull << 20, 256 << 10);
  // A periodic check in the middle of the drain must not re-assert the
  // policy's age (the VM is marked migrating from the start).
  int polls = 0;
  auto model = clock_.on_sleep;
  clock_.on_sleep = [&](int64_t ms) {
    model(ms);
    if (++polls == 2) mgr_->CheckAll();
    EXPECT_EQ(Age("hc-vda"), 1u);
  };
  Qemu().log.clear();
  auto secs = migrator_->Migrate("web", req_);
  ASSERT_TRUE(secs) << secs.error().message;
  // Reopened once (vda only: vdb is write-through), polled, then migrated.
  auto& log = Qemu().log;
  EXPECT_EQ(std::count(log.begin(), log.end(), "blockdev-reopen"), 1);
  EXPECT_EQ(Age("hc-vdb"), 5000u) << "a write-through disk is not touched";
  // The reopen kept the policy's other options.
  const auto& o = Qemu().nodes["hc-vda"].options;
  EXPECT_EQ(o["mode"], "write-back");
  EXPECT_EQ(o["file"], "libvirt-4-format");
  EXPECT_EQ(o["ram-size"], 256u << 20);
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  // 64 MiB at 16 MiB per 200 ms (the guest adding 256 KiB): 4 polls.
  EXPECT_EQ(Qemu().dirty["hc-vda"], 1u << 20);
  EXPECT_EQ(clock_.sleeps, 4);
  ASSERT_EQ(lv_.migrations.size(), 1u);
  // The destination starts with the policy's value, not the drain's.
  auto f = *libvirt::ParseInstalledFilters(lv_.migrations[0].dest_xml);
  EXPECT_EQ(f["vda"].options["max-dirty-age-ms"], 7000);
  auto evs = Events("migrate-drain");  // newest first
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[1].target, "");
  EXPECT_NE(evs[1].message.find("vda (64 MiB)"), std::string::npos) << evs[1].message;
  EXPECT_EQ(evs[0].target, "vda");
  EXPECT_EQ(evs[0].level, "info");
  EXPECT_NE(evs[0].message.find("64 MiB dirty before, 1 MiB after, in 0.8 s"),
            std::string::npos)
      << evs[0].message;
  EXPECT_FALSE(mgr_->Migrating(kWeb));
  EXPECT_EQ(Events("migrate")[0].message.find("migrated to"), 0u);
}

TEST_F(DrainTest, TheDrainEndsAtTheTimeoutAndTheMigrationStartsAnyway) {
  Model(8ull << 20, 8ull << 20);  // the guest dirties as fast as it is written back
  auto secs = migrator_->Migrate("web", req_, 2000);
  ASSERT_TRUE(secs) << secs.error().message;
  ASSERT_EQ(lv_.migrations.size(), 1u);
  EXPECT_EQ(clock_.sleeps, 10);  // 2 s in 200 ms polls
  auto evs = Events("migrate-drain");
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[0].level, "warning");
  EXPECT_NE(evs[0].message.find("the drain timeout of 2.0 s passed"), std::string::npos)
      << evs[0].message;
  EXPECT_NE(evs[0].message.find("64 MiB dirty before, 64 MiB after, in 2.0 s"),
            std::string::npos)
      << evs[0].message;
  EXPECT_NE(evs[0].message.find("written back at switch-over"), std::string::npos);
}

TEST_F(DrainTest, AFailedMigrationGivesTheFiltersThePolicysAgeBack) {
  Model(64ull << 20, 0);
  lv_.migrate_error = "the migration failed: unable to connect";
  Qemu().log.clear();
  auto bad = migrator_->Migrate("web", req_);
  ASSERT_FALSE(bad);
  EXPECT_TRUE(lv_.domains[kWeb].active);
  EXPECT_EQ(Age("hc-vda"), 7000u);
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["mode"], "write-back");
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), 2);
  auto evs = Events("migrate-drain");
  ASSERT_EQ(evs.size(), 3u);
  EXPECT_NE(evs[0].message.find("max-dirty-age-ms 7000 again"), std::string::npos)
      << evs[0].message;
  EXPECT_FALSE(mgr_->Migrating(kWeb));
  // A filter the drain could not reopen is reported and left as it is
  // (nothing to restore).
  Qemu().fail["blockdev-reopen"] = "x";  // (one shot: the drain's reopen)
  Qemu().log.clear();
  ASSERT_FALSE(migrator_->Migrate("web", req_));
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), 1);
  evs = Events("migrate-drain");
  ASSERT_EQ(evs.size(), 4u);
  EXPECT_EQ(evs[0].level, "warning");
  EXPECT_NE(evs[0].message.find("not drained"), std::string::npos) << evs[0].message;
  EXPECT_EQ(Age("hc-vda"), 7000u);
}

TEST_F(DrainTest, NoDrainWhenTheTimeoutIsZeroOrAlreadyMigrating) {
  Qemu().log.clear();
  ASSERT_TRUE(migrator_->Migrate("web", req_, 0));
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), 0);
  EXPECT_TRUE(Events("migrate-drain").empty());
  EXPECT_EQ(clock_.sleeps, 0);
  // Already migrating (the switch-over seen): refused, nothing touched.
  lv_.domains[kWeb].active = true;
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationOut);
  Qemu().log.clear();
  auto busy = migrator_->Migrate("web", req_);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), 0);
  EXPECT_TRUE(mgr_->Migrating(kWeb)) << "the running migration keeps its mark";
}

// ---- progress: GET /vms/{vm}/migration ---------------------------------------

TEST_F(DrainTest, ProgressFollowsTheDrainAndTheMigrationWithTheDriversFigures) {
  auto idle = migrator_->Progress("web");
  ASSERT_TRUE(idle) << idle.error().message;
  EXPECT_EQ(idle->phase, "none");
  EXPECT_EQ(idle->seconds, 0);
  ASSERT_EQ(idle->disks.size(), 2u);
  EXPECT_EQ(idle->disks[0].target, "vda");
  EXPECT_TRUE(idle->disks[0].reported);
  EXPECT_EQ(idle->disks[0].dirty_bytes, 64ull << 20);
  // While it drains, then while libvirt migrates: the phase, the time, and
  // what the driver reports.
  std::vector<MigrationProgress> seen;
  Model(32ull << 20, 0);
  auto model = clock_.on_sleep;
  clock_.on_sleep = [&](int64_t ms) {
    model(ms);
    Qemu().counters["hc-vda"] = nlohmann::json{{"migration-drained-bytes", 5 << 20}};
    seen.push_back(*migrator_->Progress("web"));
  };
  lv_.on_migrate = [&] { seen.push_back(*migrator_->Progress(kWeb)); };
  ASSERT_TRUE(migrator_->Migrate("web", req_));
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front().phase, "draining");
  EXPECT_EQ(seen.front().disks[0].dirty_bytes, 32ull << 20);
  EXPECT_EQ(seen.front().disks[0].drained_bytes, 5u << 20);
  EXPECT_EQ(seen.back().phase, "migrating");
  EXPECT_GT(seen.back().seconds, 0);
  EXPECT_EQ(migrator_->Progress("web")->phase, "none");
}

TEST_F(MigrationTest, ProgressShowsTheSwitchOverTheIncomingVmAndItsWarmUp) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationOut);
  clock_.now_ms += 2500;
  auto out = migrator_->Progress("web");
  ASSERT_TRUE(out);
  EXPECT_EQ(out->phase, "switch-over");
  EXPECT_DOUBLE_EQ(out->seconds, 2.5);
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationResumed);  // (failed: the source resumed)
  // The destination: incoming, then running while its warm-up runs.
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationIn);
  Qemu().counters["hc-vda"] = nlohmann::json{{"warm-up-state", "received"}};
  EXPECT_EQ(migrator_->Progress("web")->phase, "incoming");
  clock_.now_ms += 1200;
  coord_->OnEvent(kWeb, "web", Lifecycle::kMigrationResumed);
  auto in = Events("migrate-in");
  ASSERT_FALSE(in.empty());
  EXPECT_NE(in[0].message.find("(incoming for 1.2 s)"), std::string::npos) << in[0].message;
  Qemu().counters["hc-vda"] = nlohmann::json{
      {"warm-up-state", "running"}, {"warm-up-blocks", 400}, {"warm-up-done", 100},
      {"warm-up-bytes-received", 0}};
  auto warm = migrator_->Progress("web");
  ASSERT_TRUE(warm);
  EXPECT_EQ(warm->phase, "warming-up");
  EXPECT_EQ(warm->disks[0].warm_up_blocks, 400u);
  EXPECT_EQ(warm->disks[0].warm_up_done, 100u);
  Qemu().counters["hc-vda"]["warm-up-state"] = "done";
  EXPECT_EQ(migrator_->Progress("web")->phase, "none");
  // A shut-off VM's disks have no figures; an unknown VM is 404.
  lv_.domains[kWeb].active = false;
  auto off = migrator_->Progress("web");
  ASSERT_TRUE(off);
  EXPECT_FALSE(off->disks[0].reported);
  EXPECT_EQ(migrator_->Progress("nope").error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace hc::migration
