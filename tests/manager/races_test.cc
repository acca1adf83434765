// Operations on one VM from several threads (the VM lock and the migrating
// mark).
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
    registry_.Set(kWeb, false);
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
    Async mark([&] { registry_.Set(kWeb, true); });
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
    (void)migrator_->Migrate("web", req, 0);
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
