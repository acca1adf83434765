// The reconciler thread: events kept per VM however fast they come, and
// nothing a handler throws ends the thread.
#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/core/reconciler.h"
#include "manager/store/sqlite_store.h"

namespace hc::core {
namespace {

using libvirt::Lifecycle;

class ReconcilerTest : public ::testing::Test {
 protected:
  struct Seen {
    std::string uuid;
    Lifecycle ev;
    std::string detail;
  };
  void SetUp() override {
    store_ = std::move(*store::SqliteStore::Open(":memory:", clock_.now_ms));
    mgr_ = std::make_unique<Manager>(*store_, lv_, tools_, clock_, ManagerConfig{});
    rec_ = std::make_unique<Reconciler>(*mgr_, 3600);
  }
  void TearDown() override {
    Release();
    rec_->Stop();
  }
  // The handler records each event; while `hold_` is set the first one
  // waits (a check that takes long), so events pile up meanwhile.
  void RecordEvents(std::function<void(const Seen&)> also = nullptr) {
    rec_->SetHandler([this, also](const std::string& uuid, const std::string&, Lifecycle ev,
                                  const std::string& detail) {
      std::unique_lock lock(mu_);
      seen_.push_back(Seen{uuid, ev, detail});
      cv_.notify_all();
      cv_.wait(lock, [&] { return !hold_; });
      lock.unlock();
      if (also) also(seen_.back());
    });
  }
  void WaitSeen(size_t n) {
    std::unique_lock lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(30), [&] { return seen_.size() >= n; }))
        << seen_.size() << " events handled";
  }
  void Release() {
    std::lock_guard lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }

  testing::FakeClock clock_;
  testing::FakeLibvirt lv_;
  testing::FakeQemuTools tools_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<Manager> mgr_;
  std::unique_ptr<Reconciler> rec_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Seen> seen_;  // guarded by mu_
  bool hold_ = true;        // guarded by mu_
};

TEST_F(ReconcilerTest, AFloodOfEventsLosesNoVmsLastEventNorAnyMigrationEvent) {
  RecordEvents();
  rec_->Start();
  rec_->Enqueue("vm-0", "vm-0", Lifecycle::kStarted);
  WaitSeen(1);  // the handler now holds the thread
  // 30000 events for three VMs while the first is handled; each VM's
  // migration events and hot-unplugs in between.
  const Lifecycle plain[] = {Lifecycle::kStarted, Lifecycle::kStopped, Lifecycle::kDefined,
                             Lifecycle::kSuspended, Lifecycle::kResumed};
  std::map<std::string, std::vector<std::string>> ordered;  // per VM: the ordered ones sent
  std::map<std::string, Lifecycle> last;
  for (int i = 0; i < 30000; i++) {
    const std::string vm = "vm-" + std::to_string(i % 3);
    Lifecycle ev = plain[(i / 3) % 5];
    std::string detail;
    if (i % 5000 == 7) {
      ev = Lifecycle::kMigrationOut;
    } else if (i % 7001 == 11) {
      ev = Lifecycle::kDeviceRemoved;
      detail = "ua-disk" + std::to_string(i);
    }
    if (ev == Lifecycle::kMigrationOut || ev == Lifecycle::kDeviceRemoved) {
      ordered[vm].push_back(std::string(libvirt::LifecycleName(ev)) + detail);
    }
    rec_->Enqueue(vm, vm, ev, detail);
    last[vm] = ev;
  }
  rec_->Enqueue("vm-1", "vm-1", Lifecycle::kUndefined);
  last["vm-1"] = Lifecycle::kUndefined;
  const size_t sent_ordered = ordered["vm-0"].size() + ordered["vm-1"].size() +
                              ordered["vm-2"].size();
  ASSERT_GE(sent_ordered, 8u);
  Release();
  // Every ordered event, in order, and each VM's last event, last.
  for (int round = 0; round < 3000; round++) {
    std::map<std::string, Lifecycle> final_seen;
    size_t seen_ordered = 0;
    {
      std::lock_guard lock(mu_);
      for (size_t i = 1; i < seen_.size(); i++) final_seen[seen_[i].uuid] = seen_[i].ev;
      for (const auto& s : seen_) {
        seen_ordered += s.ev == Lifecycle::kMigrationOut || s.ev == Lifecycle::kDeviceRemoved;
      }
    }
    if (final_seen == last && seen_ordered == sent_ordered) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard lock(mu_);
  std::map<std::string, std::vector<std::string>> got;
  std::map<std::string, Lifecycle> final_seen;
  for (size_t i = 1; i < seen_.size(); i++) {
    const auto& s = seen_[i];
    final_seen[s.uuid] = s.ev;
    if (s.ev == Lifecycle::kMigrationOut || s.ev == Lifecycle::kDeviceRemoved) {
      got[s.uuid].push_back(std::string(libvirt::LifecycleName(s.ev)) + s.detail);
    }
  }
  EXPECT_EQ(got, ordered);
  EXPECT_EQ(final_seen, last);
  // Coalesced: a few events per VM and ordered event, not 30000.
  EXPECT_LT(seen_.size(), 200u) << "events handled";
}

TEST_F(ReconcilerTest, AHandlerThatThrowsDoesNotEndTheThread) {
  RecordEvents([](const Seen& s) {
    if (s.uuid == "bad") throw std::runtime_error("[json.exception.type_error.302] type must be "
                                                  "string, but is number");
  });
  Release();
  rec_->Start();
  rec_->Enqueue("bad", "bad", Lifecycle::kStarted);
  rec_->Enqueue("good", "good", Lifecycle::kStarted);
  WaitSeen(2);
  rec_->Enqueue("bad", "bad", Lifecycle::kDefined);
  rec_->Enqueue("good", "good", Lifecycle::kStopped);
  WaitSeen(4);
  std::lock_guard lock(mu_);
  EXPECT_EQ(seen_.back().uuid, "good");
  EXPECT_EQ(seen_.back().ev, Lifecycle::kStopped);
}

}  // namespace
}  // namespace hc::core
