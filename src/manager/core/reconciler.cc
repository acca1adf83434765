#include "manager/core/reconciler.h"

#include <chrono>

namespace hc::core {

void Reconciler::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Reconciler::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Reconciler::Enqueue(const std::string& uuid, const std::string& name,
                         libvirt::Lifecycle ev, const std::string& detail) {
  {
    std::lock_guard lock(mu_);
    if (queue_.size() > 10000) {
      all_ = true;  // too much to keep apart: check everything instead
      queue_.clear();
    } else {
      queue_.push_back(Item{uuid, name, ev, detail});
    }
  }
  cv_.notify_all();
}

void Reconciler::EnqueueAll() {
  {
    std::lock_guard lock(mu_);
    all_ = true;
  }
  cv_.notify_all();
}

void Reconciler::Run() {
  auto next_full = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (std::chrono::steady_clock::now() >= next_full) all_ = true;
    if (all_) {
      all_ = false;
      // The full pass checks every VM; events that mean more than "check
      // it" (a hot-unplug, a migration) stay queued.
      std::erase_if(queue_, [](const Item& i) {
        return i.ev != libvirt::Lifecycle::kDeviceRemoved &&
               i.ev != libvirt::Lifecycle::kMigrationOut &&
               i.ev != libvirt::Lifecycle::kMigratedAway &&
               i.ev != libvirt::Lifecycle::kMigrationIn &&
               i.ev != libvirt::Lifecycle::kMigrationResumed;
      });
      lock.unlock();
      manager_.CheckAll();
      lock.lock();
      next_full = std::chrono::steady_clock::now() + std::chrono::seconds(interval_s_);
      continue;
    }
    if (!queue_.empty()) {
      Item it = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      if (handler_) {
        handler_(it.uuid, it.name, it.ev, it.detail);
      } else {
        manager_.OnLifecycle(it.uuid, it.name, it.ev, it.detail);
      }
      lock.lock();
      continue;
    }
    cv_.wait_until(lock, next_full, [&] { return stop_ || all_ || !queue_.empty(); });
  }
}

}  // namespace hc::core
