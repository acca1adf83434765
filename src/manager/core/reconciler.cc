#include "manager/core/reconciler.h"

#include <chrono>

#include <spdlog/spdlog.h>

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

bool Reconciler::Ordered(libvirt::Lifecycle ev) {
  return ev == libvirt::Lifecycle::kDeviceRemoved || ev == libvirt::Lifecycle::kMigrationOut ||
         ev == libvirt::Lifecycle::kMigratedAway || ev == libvirt::Lifecycle::kMigrationIn ||
         ev == libvirt::Lifecycle::kMigrationResumed;
}

void Reconciler::Enqueue(const std::string& uuid, const std::string& name,
                         libvirt::Lifecycle ev, const std::string& detail) {
  {
    std::lock_guard lock(mu_);
    auto& q = pending_[uuid];
    if (q.empty()) turns_.push_back(uuid);
    if (!Ordered(ev)) {
      // One of each kind since the last ordered event: the older one goes,
      // the new one is last.
      for (auto it = q.rbegin(); it != q.rend() && !Ordered(it->ev); ++it) {
        if (it->ev == ev) {
          q.erase(std::next(it).base());
          break;
        }
      }
    }
    q.push_back(Item{uuid, name, ev, detail});
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

void Reconciler::Handle(const Item& it) {
  try {
    if (handler_) {
      handler_(it.uuid, it.name, it.ev, it.detail);
    } else {
      manager_.OnLifecycle(it.uuid, it.name, it.ev, it.detail);
    }
  } catch (const std::exception& e) {
    spdlog::error("VM {}: handling its event '{}' failed unexpectedly: {}; going on", it.name,
                  libvirt::LifecycleName(it.ev), e.what());
  } catch (...) {
    spdlog::error("VM {}: handling its event '{}' failed unexpectedly; going on", it.name,
                  libvirt::LifecycleName(it.ev));
  }
}

void Reconciler::CheckAll() {
  try {
    if (full_pass_) full_pass_();
    manager_.CheckAll();
  } catch (const std::exception& e) {
    spdlog::error("the full compliance check failed unexpectedly: {}; going on", e.what());
  } catch (...) {
    spdlog::error("the full compliance check failed unexpectedly; going on");
  }
}

void Reconciler::Run() {
  auto next_full = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (std::chrono::steady_clock::now() >= next_full) all_ = true;
    if (all_) {
      all_ = false;
      lock.unlock();
      CheckAll();
      lock.lock();
      next_full = std::chrono::steady_clock::now() + std::chrono::seconds(interval_s_);
      continue;
    }
    if (!turns_.empty()) {
      std::string uuid = std::move(turns_.front());
      turns_.pop_front();
      auto q = pending_.find(uuid);
      Item it = std::move(q->second.front());
      q->second.pop_front();
      if (q->second.empty()) {
        pending_.erase(q);
      } else {
        turns_.push_back(uuid);
      }
      lock.unlock();
      Handle(it);
      lock.lock();
      continue;
    }
    cv_.wait_until(lock, next_full, [&] { return stop_ || all_ || !turns_.empty(); });
  }
}

}  // namespace hc::core
