// PeerHealth: whether each configured migration peer (core/peers.h) can be
// reached, probed in the background: its libvirt URI opened read-only and
// asked for libvirt's version (LibvirtClient::ProbePeer), every interval,
// on a thread of its own so that an unreachable peer (a TCP or ssh time-out)
// never holds an API worker.  GET /api/v1/peers and `hostcachectl peer
// list` report the last result.
//
// Thread-safety: Snapshot() and ProbeAll() are thread-safe; Start/Stop
// from the owner's thread.  Borrows the client and the clock.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "manager/core/peers.h"
#include "manager/libvirt/libvirt_client.h"

namespace hc::migration {

struct PeerState {
  core::Peer peer;
  std::optional<bool> reachable;  // none until the first probe ends
  std::string last_error;         // of the last failed probe ("" none yet)
  int64_t checked_ms = 0;         // when the last probe ended (0 never)
  int64_t last_ok_ms = 0;         // when a probe last succeeded (0 never)
};

class PeerHealth {
 public:
  PeerHealth(const core::Peers& peers, libvirt::LibvirtClient& lv, const Clock& clock);
  ~PeerHealth() { Stop(); }
  PeerHealth(const PeerHealth&) = delete;
  PeerHealth& operator=(const PeerHealth&) = delete;

  // Probes at once, then every `interval_s` seconds.
  void Start(int interval_s);
  void Stop();

  // Probes every peer now, one after the other (blocks).
  void ProbeAll();
  // The peers in configuration order with their last results.
  std::vector<PeerState> Snapshot();

 private:
  libvirt::LibvirtClient& lv_;  // not owned
  const Clock& clock_;          // not owned
  std::mutex mu_;
  std::vector<PeerState> states_;  // guarded by mu_
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace hc::migration
