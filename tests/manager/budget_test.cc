// The host's cache budgets: the pure functions of budget.h (sums and
// verdicts over assignments and policies), over a real SQLite store, and
// through the Manager (409 with a clear message, nothing stored).
#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/core/budget.h"
#include "manager/store/sqlite_store.h"
#include "manager_fixture.h"

namespace hc::core {
namespace {

using nlohmann::json;
using store::Assignment;
using testing::kWeb;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

policy::Policy Pol(const std::string& name, uint64_t ram, uint64_t ssd = 0) {
  policy::Policy p{name, "", {}};
  p.rules.ram_size = ram;
  p.rules.ssd_size = ssd;
  if (ssd > 0) p.rules.ssd_dir = "/var/lib/hostcache/ssd";
  return p;
}

Assignment On(const std::string& uuid, const std::string& target, const std::string& policy) {
  return Assignment{uuid, "vm-" + uuid, target, policy, "hc-" + target};
}

TEST(Budget, UsageSumsEachDiskAtItsPolicysSizes) {
  const std::vector<policy::Policy> pols{Pol("small", 64 * kMiB), Pol("big", kGiB, 4 * kGiB)};
  const std::vector<Assignment> as{On("a", "vda", "small"), On("a", "vdb", "big"),
                                   On("b", "vda", "big")};
  Usage u = AssignedUsage(as, pols);
  EXPECT_EQ(u.ram, 64 * kMiB + 2 * kGiB);
  EXPECT_EQ(u.ssd, 8 * kGiB);
  EXPECT_EQ(u.disks, 3);
  EXPECT_EQ(u.users, 0);  // no policy changed
}

TEST(Budget, UsageLeavesOutTheDiskBeingAssigned) {
  const std::vector<policy::Policy> pols{Pol("big", kGiB)};
  const std::vector<Assignment> as{On("a", "vda", "big"), On("a", "vdb", "big"),
                                   On("b", "vda", "big")};
  Usage u = AssignedUsage(as, pols, nullptr, "a", "vda");
  EXPECT_EQ(u.ram, 2 * kGiB);
  EXPECT_EQ(u.disks, 2);
  // Only that disk: the same target of another VM counts.
  EXPECT_EQ(AssignedUsage(as, pols, nullptr, "a", "vdc").disks, 3);
}

TEST(Budget, AChangedPolicyCountsAtItsNewRules) {
  const std::vector<policy::Policy> pols{Pol("p", 64 * kMiB), Pol("q", 128 * kMiB)};
  const std::vector<Assignment> as{On("a", "vda", "p"), On("b", "vda", "p"), On("b", "vdb", "q")};
  const policy::Policy changed = Pol("p", kGiB, kGiB);
  Usage u = AssignedUsage(as, pols, &changed);
  EXPECT_EQ(u.ram, 2 * kGiB + 128 * kMiB);
  EXPECT_EQ(u.ssd, 2 * kGiB);
  EXPECT_EQ(u.users, 2);
}

TEST(Budget, APolicyMissingFromTheCatalogueCountsAtTheDefaultRules) {
  Usage u = AssignedUsage({On("a", "vda", "gone")}, {});
  EXPECT_EQ(u.ram, policy::Rules{}.ram_size);
  EXPECT_EQ(u.ssd, 0u);
}

TEST(Budget, ADiskFitsUpToTheLimitExactly) {
  const BudgetLimits limits{kGiB, 2 * kGiB};
  Usage others{512 * kMiB, kGiB, 2, 0};
  EXPECT_TRUE(FitsDisk(others, Pol("p", 512 * kMiB, kGiB).rules, limits, "web/vda"));
  auto ram = FitsDisk(others, Pol("p", 512 * kMiB + 1).rules, limits, "web/vda");
  ASSERT_FALSE(ram);
  EXPECT_EQ(ram.error().code, ErrorCode::kConflict);
  EXPECT_NE(ram.error().message.find("not enough cache RAM: web/vda would need"),
            std::string::npos)
      << ram.error().message;
  EXPECT_NE(ram.error().message.find("already assigned to 2 disk(s)"), std::string::npos);
  EXPECT_NE(ram.error().message.find("raise ram-budget"), std::string::npos);
  auto ssd = FitsDisk(others, Pol("p", kMiB, kGiB + 1).rules, limits, "web/vda");
  ASSERT_FALSE(ssd);
  EXPECT_EQ(ssd.error().code, ErrorCode::kConflict);
  EXPECT_NE(ssd.error().message.find("not enough SSD cache space"), std::string::npos);
}

TEST(Budget, NoSsdTierNeedsNoSsdBudget) {
  // A host without SSD budget, already over it (a lowered configuration):
  // RAM-only disks still fit.
  EXPECT_TRUE(FitsDisk(Usage{0, 10 * kGiB, 1, 0}, Pol("p", kMiB).rules, BudgetLimits{kGiB, 0},
                       "web/vda"));
}

TEST(Budget, APolicyNobodyUsesAlwaysFits) {
  const BudgetLimits limits{kGiB, kGiB};
  EXPECT_TRUE(FitsPolicy(Usage{100 * kGiB, 100 * kGiB, 3, 0}, "p", limits));
  auto over = FitsPolicy(Usage{2 * kGiB, 0, 3, 2}, "p", limits);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::kConflict);
  EXPECT_NE(over.error().message.find("the 2 disk(s) using policy 'p'"), std::string::npos)
      << over.error().message;
  EXPECT_NE(over.error().message.find("nothing was changed"), std::string::npos);
  auto ssd = FitsPolicy(Usage{0, 2 * kGiB, 3, 1}, "p", limits);
  ASSERT_FALSE(ssd);
  EXPECT_NE(ssd.error().message.find("SSD cache space"), std::string::npos);
}

TEST(Budget, UsageOverARealStore) {
  testing::FakeClock clock;
  auto store = std::move(*store::SqliteStore::Open(":memory:", clock.now_ms));
  ASSERT_TRUE(store->CreatePolicy(Pol("p", 64 * kMiB, kGiB), 0));
  for (const char* t : {"vda", "vdb"}) {
    auto s = store->PutAssignment(On("a", t, "p"));
    ASSERT_TRUE(s) << s.error().message;
  }
  auto u = AssignedUsage(*store);
  ASSERT_TRUE(u) << ErrorCodeName(u.error().code) << ": " << u.error().message;
  EXPECT_EQ(u->ram, 128 * kMiB);
  EXPECT_EQ(u->ssd, 2 * kGiB);
  const policy::Policy bigger = Pol("p", kGiB);
  auto w = AssignedUsage(*store, &bigger, "a", "vdb");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->ram, kGiB);
  EXPECT_EQ(w->ssd, 0u);
  EXPECT_EQ(w->users, 1);
}

// ---- through the Manager ------------------------------------------------------

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

}  // namespace
}  // namespace hc::core
