// Reconciler: the thread that keeps assignments compliant.  It re-checks a
// VM when libvirt reports a lifecycle event for it, every VM after a
// (re)connection to libvirtd and at start-up, and every VM periodically.
//
// Events are kept per VM, none dropped: migration events and hot-unplugs
// each in their order; the others (started, stopped, defined, ...) only
// mean "check this VM", so one of each kind is kept since the VM's last
// migration event or hot-unplug, a newer one moving to the end.  The last
// event of a VM is always handled, and however fast events come, the queue
// holds a few per VM.  VMs take turns.  An exception from a handler or a
// check is logged and the thread goes on.
//
// Enqueue* are thread-safe and never block (they are called from libvirt's
// event-loop thread); the checks run on the reconciler's own thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
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
  // Runs first in every full pass (on the reconciler thread), before every
  // VM is checked: the adoption of VMs found with carried assignments.
  // Set before Start().
  void SetFullPassHandler(std::function<void()> h) { full_pass_ = std::move(h); }

 private:
  struct Item {
    std::string uuid, name;
    libvirt::Lifecycle ev;
    std::string detail;
  };
  // Whether each event of this kind is handled, in order (not coalesced).
  static bool Ordered(libvirt::Lifecycle ev);
  void Run();
  void Handle(const Item& it);  // on the reconciler thread; catches everything
  void CheckAll();              // likewise

  Manager& manager_;  // not owned
  Handler handler_;
  std::function<void()> full_pass_;
  const int interval_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_: the VMs with pending events, in turn, each once, and
  // each one's events (see above).
  std::deque<std::string> turns_;
  std::map<std::string, std::deque<Item>> pending_;
  bool all_ = true;         // guarded by mu_: a full pass is due
  bool stop_ = false;       // guarded by mu_
  std::thread thread_;
};

}  // namespace hc::core
