#include "migration/peer_health.h"

#include <chrono>

namespace hc::migration {

PeerHealth::PeerHealth(const core::Peers& peers, libvirt::LibvirtClient& lv, const Clock& clock)
    : lv_(lv), clock_(clock) {
  for (const auto& p : peers.all()) {
    PeerState s;
    s.peer = p;
    states_.push_back(std::move(s));
  }
}

void PeerHealth::ProbeAll() {
  std::vector<core::Peer> peers;
  {
    std::lock_guard lock(mu_);
    for (const auto& s : states_) peers.push_back(s.peer);
  }
  for (size_t i = 0; i < peers.size(); i++) {
    Status st = lv_.ProbePeer(peers[i].uri);
    const int64_t now = clock_.NowMs();
    std::lock_guard lock(mu_);
    PeerState& s = states_[i];
    s.reachable = st.has_value();
    s.checked_ms = now;
    if (st) {
      s.last_ok_ms = now;
    } else {
      s.last_error = st.error().message;
    }
  }
}

std::vector<PeerState> PeerHealth::Snapshot() {
  std::lock_guard lock(mu_);
  return states_;
}

void PeerHealth::Start(int interval_s) {
  {
    std::lock_guard lock(mu_);
    if (states_.empty() || thread_.joinable()) return;
    stop_ = false;
  }
  thread_ = std::thread([this, interval_s] {
    for (;;) {
      ProbeAll();
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, std::chrono::seconds(interval_s), [&] { return stop_; })) return;
    }
  });
}

void PeerHealth::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace hc::migration
