// EtcdCatalogue: the policies of a cluster of hosts, kept in etcd under
// /hostcache/policies/NAME (the policy as JSON, policy::PolicyToJson), with
// this host's copy in its Store's `policies` table.
//
// - Writes go to etcd first, as transactions that compare the key's
//   create_revision (create: the name is free) or mod_revision (update,
//   delete: nobody changed it since this host read it); then the local
//   copy.  When no member answers they fail with kUnavailable ("etcd at
//   URL is unreachable ...") and nothing changes.
// - A thread polls the prefix every poll interval (no watch: etcd's JSON
//   gateway streams watches as chunked JSON; a poll of a few small keys
//   is simpler and catches up after any outage the same way).  What
//   changed elsewhere is written to the local copy and reported to the
//   handler (the Manager re-applies the policy to this host's disks).
//   A policy deleted elsewhere that disks of this host still use is kept
//   locally ("retained") until they no longer use it.
// - Reads are the local copy's: a host without etcd keeps its policies,
//   also across a restart.
//
// Thread-safety: every method may be called from any thread; writes and
// the poll are serialised by one mutex; the handler runs on the poll
// thread (or SyncNow's caller) without it held.  Start and Stop from one
// thread.  Ownership: borrows the Store and the Clock (must outlive it);
// owns its EtcdClient and thread.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "common/clock.h"
#include "manager/cluster/etcd_client.h"
#include "manager/store/policy_catalogue.h"

namespace hc::cluster {

class EtcdCatalogue final : public store::PolicyCatalogue {
 public:
  using Handler = std::function<void(const store::PolicyChange&)>;

  EtcdCatalogue(store::Store& store, EtcdClient client, const Clock& clock,
                std::chrono::milliseconds poll_interval = std::chrono::seconds(1),
                std::string prefix = "/hostcache/policies/");
  ~EtcdCatalogue() override;

  // Starts the poll thread (the first poll at once); `handler` gets each
  // change made elsewhere.  Stop() ends it (also done by the destructor).
  void Start(Handler handler);
  void Stop();
  // One poll now (on the caller's thread; for tests and start-up).
  // Returns the changes it applied (also given to the handler).
  std::vector<store::PolicyChange> SyncNow();

  Result<std::vector<policy::Policy>> List() override;
  Result<policy::Policy> Get(const std::string& name) override;
  Status Create(const policy::Policy& p, int64_t now_ms) override;
  Status Update(const policy::Policy& p, int64_t now_ms) override;
  Status Delete(const std::string& name) override;
  store::CatalogueState State() override;

 private:
  std::vector<store::PolicyChange> SyncLocked();
  // kUnavailable with what is down, and the state set to disconnected.
  Error Down(const Error& e);
  // Down, and the refusal of a policy change that says so.
  tl::unexpected<Error> Refused(const Error& e);
  std::string Key(const std::string& name) const { return prefix_ + name; }

  store::Store& store_;
  EtcdClient client_;
  const Clock& clock_;
  const std::chrono::milliseconds poll_interval_;
  const std::string prefix_;

  std::mutex mu_;  // guards everything below, and the local copy's writes
  std::map<std::string, int64_t> mod_revision_;  // name -> etcd mod_revision seen
  bool connected_ = false;
  std::string problem_ = "not yet read from etcd";
  int64_t revision_ = 0;
  int64_t synced_ms_ = 0;
  std::vector<std::string> retained_;

  std::mutex thread_mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  Handler handler_;
  std::thread thread_;
};

}  // namespace hc::cluster
