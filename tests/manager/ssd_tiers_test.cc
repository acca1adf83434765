// The SSD tier lifecycle (core/ssd_tiers.h) without libvirt: real tier
// files in a scratch SSD root (superblocks written with the driver's own
// encoder), a real SQLite store, and a VM that is only a TierVm whose
// "does QEMU have this file open" answer the test sets.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/core/event_log.h"
#include "manager/core/ssd_files.h"
#include "manager/core/ssd_tiers.h"
#include "manager/store/sqlite_store.h"

namespace hc::core {
namespace {

using nlohmann::json;
using store::Assignment;

constexpr const char* kUuid = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
constexpr uint64_t kSize = 1 << 20;

class SsdTiersTest : public ::testing::Test {
 protected:
  SsdTiersTest() { rules_.ssd_size = kSize, rules_.ssd_dir = dir_; }

  std::string File() const { return SsdFilePath(dir_, kUuid, "vda"); }
  static std::string Origin() { return std::string(kUuid) + "/vda"; }
  std::optional<store::SsdTier> Record() { return *store_->GetSsdTier(kUuid, "vda"); }
  int Count(const std::string& action) {
    int n = 0;
    for (const auto& e : *store_->ListEvents(0, 1000, "")) n += e.action == action;
    return n;
  }
  // The VM, running or not; `open_` answers whether its QEMU has a file open.
  TierVm Vm(bool active) {
    return TierVm{kUuid, "db", active, true,
                  [this](const std::string&) { return open_; }};
  }
  SsdPlan Plan(bool active = true, bool may_replace = false) {
    return tiers_.Plan(Vm(active), a_, rules_, may_replace);
  }
  // The tier as the driver left it: formatted for the disk, in `state`
  // (1 closed cleanly, 2 in use), and recorded as formatted by a plan.
  void Formatted(uint32_t state) {
    ASSERT_TRUE(Plan().spec);
    testing::WriteSsdSuperblock(File(), 5, state, Origin());
    ASSERT_TRUE(Plan(false).spec);  // (a shut-off VM: nothing is stale)
    ASSERT_TRUE(Record() && Record()->formatted);
  }

  testing::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_ =
      std::move(*store::SqliteStore::Open(":memory:", clock_.now_ms));
  const testing::ScratchDir scratch_{"hcmgr-tiers-"};
  const std::string dir_ = scratch_.path() + "/tier";
  const SsdRoots roots_ = *SsdRoots::Make({scratch_.path()});
  EventLog log_{*store_, clock_};
  SsdTiers tiers_{*store_, log_, clock_, roots_, [] { return nullptr; }};
  policy::Rules rules_;
  const Assignment a_{kUuid, "db", "vda", "p", "hc-vda"};
  std::optional<bool> open_ = false;
};

TEST_F(SsdTiersTest, NoSsdSizeNoTier) {
  rules_.ssd_size = 0;
  SsdPlan p = Plan();
  EXPECT_FALSE(p.spec);
  EXPECT_EQ(p.problem, "");
  EXPECT_FALSE(std::filesystem::exists(dir_));
}

TEST_F(SsdTiersTest, ADirOutsideTheRootsGetsNoTierAndSaysWhy) {
  rules_.ssd_dir = "/var/tmp/elsewhere";
  SsdPlan p = Plan();
  EXPECT_FALSE(p.spec);
  EXPECT_NE(p.problem.find("policy 'p' has ssd-dir /var/tmp/elsewhere"), std::string::npos)
      << p.problem;
  EXPECT_NE(p.problem.find("cached in RAM only"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists("/var/tmp/elsewhere"));
}

TEST_F(SsdTiersTest, ANewTierIsMadeBlankAndRecordedUnformatted) {
  SsdPlan p = Plan();
  ASSERT_TRUE(p.spec);
  EXPECT_EQ(p.spec->filename, File());
  EXPECT_EQ(p.spec->origin_id, Origin());
  EXPECT_TRUE(p.spec->create);  // the driver formats it
  EXPECT_EQ(*SsdFileSize(File()), kSize);
  ASSERT_TRUE(Record());
  EXPECT_FALSE(Record()->formatted);
}

TEST_F(SsdTiersTest, OnceTheDriverFormattedItTheTierIsOpenedWithSsdCreateOff) {
  Formatted(1);
  EXPECT_EQ(Count("ssd"), 1);
  SsdPlan p = Plan();
  ASSERT_TRUE(p.spec);
  EXPECT_FALSE(p.spec->create);
  EXPECT_EQ(p.lost, "");
  EXPECT_EQ(Count("ssd"), 1);  // said once
}

TEST_F(SsdTiersTest, AFormattedTierThatGoesMissingIsLostNotMadeAgain) {
  Formatted(1);
  std::filesystem::remove(File());
  SsdPlan p = Plan();
  EXPECT_NE(p.lost.find("is missing"), std::string::npos) << p.lost;
  EXPECT_NE(p.lost.find("hostcachectl disk forget-tier db vda"), std::string::npos);
  ASSERT_TRUE(p.spec);
  EXPECT_FALSE(p.spec->create);  // the VM does not start without it
  EXPECT_FALSE(std::filesystem::exists(File()));
  // Another disk's tier in its place is lost just the same.
  std::ofstream(File()).close();
  std::filesystem::resize_file(File(), kSize);
  testing::WriteSsdSuperblock(File(), 5, 1, "someone/else");
  EXPECT_NE(Plan().lost.find("another origin"), std::string::npos);
}

TEST_F(SsdTiersTest, ATierLeftOpenIsStaleOnlyWhenTheRunningVmLacksIt) {
  Formatted(2);
  open_ = true;  // the running filter has it
  EXPECT_EQ(Plan().stale, "");
  open_ = std::nullopt;  // cannot tell: nothing is decided
  EXPECT_EQ(Plan().stale, "");
  EXPECT_EQ(Plan(false).stale, "");  // shut off: its next start recovers it
  EXPECT_FALSE(Record()->stale);
  open_ = false;  // the VM runs without its filter
  SsdPlan p = Plan();
  EXPECT_NE(p.stale.find("was not closed cleanly"), std::string::npos) << p.stale;
  EXPECT_FALSE(p.spec);
  EXPECT_TRUE(Record()->stale);
  open_ = true;  // once marked, it stays stale
  EXPECT_NE(Plan().stale, "");
}

TEST_F(SsdTiersTest, ForgettingNeedsALostOrStaleTier) {
  const TierVm vm = Vm(true);
  auto none = tiers_.Forget(&vm, a_);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound);
  Formatted(1);
  auto intact = tiers_.Forget(&vm, a_);
  ASSERT_FALSE(intact);
  EXPECT_EQ(intact.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(intact.error().message.find("nothing to forget"), std::string::npos);
  EXPECT_TRUE(Record());
  std::filesystem::remove(File());
  ASSERT_TRUE(tiers_.Forget(&vm, a_));
  EXPECT_FALSE(Record());
  EXPECT_EQ(Count("ssd-forget"), 1);
  // Forgotten: a plan makes a new blank tier for the driver to format.
  SsdPlan p = Plan();
  ASSERT_TRUE(p.spec);
  EXPECT_TRUE(p.spec->create);
  EXPECT_EQ(p.lost, "");
}

TEST_F(SsdTiersTest, AStaleTierIsForgottenWithItsFile) {
  Formatted(2);
  open_ = false;
  ASSERT_NE(Plan().stale, "");
  const TierVm vm = Vm(true);
  ASSERT_TRUE(tiers_.Forget(&vm, a_));
  EXPECT_FALSE(std::filesystem::exists(File()));
  EXPECT_FALSE(Record());
}

TEST_F(SsdTiersTest, EmptyingMakesTheTierBlankAgain) {
  Formatted(1);
  SsdPlan p = Plan();
  ASSERT_TRUE(p.spec);
  auto create = tiers_.Empty(Vm(true), "vda", p, kSize, "for the test", true);
  ASSERT_TRUE(create) << create.error().message;
  EXPECT_TRUE(*create);
  EXPECT_TRUE(p.spec->create);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  EXPECT_FALSE(Record()->formatted);
  EXPECT_EQ(Count("ssd-emptied"), 1);
}

TEST_F(SsdTiersTest, UnassigningDeletesTheFileAndTheRecord) {
  ASSERT_TRUE(store_->CreatePolicy(policy::Policy{"p", "", rules_}, 0));
  Formatted(1);
  tiers_.ForgetFile(a_);
  EXPECT_FALSE(std::filesystem::exists(File()));
  EXPECT_FALSE(Record());
}

TEST_F(SsdTiersTest, AShutOffVmsTierNotClosedCleanlyHoldsItsFilter) {
  Formatted(2);
  const json held = {{"mode", "write-back"}, {"block-size", 4096}, {"ssd", {{"filename", File()}}}};
  const std::map<std::string, libvirt::InstalledFilter> installed{
      {"vda", libvirt::InstalledFilter{"vda", "virtio-disk0", held}}};
  const TierVm off = Vm(false);
  EXPECT_TRUE(tiers_.Held(off, &installed, "vda"));
  EXPECT_FALSE(tiers_.Held(Vm(true), &installed, "vda"));  // a running QEMU has it
  auto un = tiers_.CheckJournalKept(off, &installed, "vda", nullptr, "unassign");
  ASSERT_FALSE(un);
  EXPECT_EQ(un.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(un.error().message.find("start VM 'db' once"), std::string::npos)
      << un.error().message;
  policy::Rules same = rules_;
  same.mode = policy::CacheMode::kWriteBack;
  EXPECT_TRUE(tiers_.CheckJournalKept(off, &installed, "vda", &same, "change it"));
  policy::Rules through = same;
  through.mode = policy::CacheMode::kWriteThrough;
  EXPECT_FALSE(tiers_.CheckJournalKept(off, &installed, "vda", &through, "change it"));
  // Once closed cleanly, nothing is held.
  testing::WriteSsdSuperblock(File(), 7, 1, Origin());
  EXPECT_TRUE(tiers_.CheckJournalKept(off, &installed, "vda", nullptr, "unassign"));
}

TEST(JournalRisk, NamesWhatWouldLoseTheJournal) {
  const json held = {{"mode", "write-back"}, {"block-size", 4096}, {"ssd", {{"filename", "/t/f"}}}};
  policy::Rules wb;
  wb.mode = policy::CacheMode::kWriteBack;
  wb.block_size = 4096;
  EXPECT_EQ(JournalRisk(held, &wb, "/t/f"), "");
  EXPECT_NE(JournalRisk(held, nullptr, "").find("unassigning"), std::string::npos);
  EXPECT_NE(JournalRisk(held, &wb, "").find("without this SSD tier"), std::string::npos);
  EXPECT_NE(JournalRisk(held, &wb, "/t/g").find("move the disk's SSD tier to /t/g"),
            std::string::npos);
  policy::Rules wt = wb;
  wt.mode = policy::CacheMode::kWriteThrough;
  EXPECT_NE(JournalRisk(held, &wt, "/t/f").find("not write-back"), std::string::npos);
  policy::Rules big = wb;
  big.block_size = 65536;
  EXPECT_NE(JournalRisk(held, &big, "/t/f").find("block-size"), std::string::npos);
  // A write-through tier's filter may change mode.
  const json held_wt = {{"mode", "write-through"}, {"ssd", {{"filename", "/t/f"}}}};
  EXPECT_EQ(JournalRisk(held_wt, &wt, "/t/f"), "");
}

TEST(OurSsdFile, OnlyTheDisksOwnName) {
  EXPECT_TRUE(OurSsdFile(std::string("/ssd/") + kUuid + "-vda.hcssd", kUuid, "vda"));
  EXPECT_FALSE(OurSsdFile(std::string("/ssd/") + kUuid + "-vdb.hcssd", kUuid, "vda"));
  EXPECT_FALSE(OurSsdFile(std::string("/ssd/x") + kUuid + "-vda.hcssd.bak", kUuid, "vda"));
  EXPECT_FALSE(OurSsdFile(std::string("/") + kUuid + "-vda.hcssd", "other", "vda"));
}

}  // namespace
}  // namespace hc::core
