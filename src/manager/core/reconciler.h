// Reconciler: the thread that keeps assignments compliant.  It re-checks a
// VM when libvirt reports a lifecycle event for it, every VM after a
// (re)connection to libvirtd and at start-up, and every VM periodically.
//
// Enqueue* are thread-safe and never block (they are called from libvirt's
// event-loop thread); the checks run on the reconciler's own thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "manager/core/manager.h"

namespace hc::core {

class Reconciler {
 public:
  Reconciler(Manager& manager, int interval_s) : manager_(manager), interval_s_(interval_s) {}
  ~Reconciler() { Stop(); }
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  void Start();  // the first pass checks every VM
  void Stop();

  void Enqueue(const std::string& uuid, const std::string& name, libvirt::Lifecycle ev,
               const std::string& detail = "");
  void EnqueueAll();

  // Who handles a queued event (on the reconciler thread); default:
  // Manager::OnLifecycle.  Set before Start().
  using Handler = std::function<void(const std::string& uuid, const std::string& name,
                                     libvirt::Lifecycle ev, const std::string& detail)>;
  void SetHandler(Handler h) { handler_ = std::move(h); }

 private:
  struct Item {
    std::string uuid, name;
    libvirt::Lifecycle ev;
    std::string detail;
  };
  void Run();

  Manager& manager_;  // not owned
  Handler handler_;
  const int interval_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;  // guarded by mu_
  bool all_ = true;         // guarded by mu_: a full pass is due
  bool stop_ = false;       // guarded by mu_
  std::thread thread_;
};

}  // namespace hc::core
