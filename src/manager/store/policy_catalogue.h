// PolicyCatalogue: where a host's storage policies come from, the seam
// behind which the Manager creates, changes, deletes and reads policies.
//
// - LocalCatalogue (here): a single host; the policies are the Store's own
//   (the SQLite `policies` table).  The default.
// - cluster::EtcdCatalogue (manager/cluster/etcd_catalogue.h): a cluster of
//   hosts shares one catalogue in etcd; each host keeps a copy of it in the
//   same Store table, so a host without etcd (and a restart without it)
//   still has its policies.
//
// Either way the Store's `policies` table holds the policies this host
// uses; only the catalogue writes it (the Manager reads it through the
// catalogue; per-host state, assignments, tiers, events and statistics,
// stays the Store's alone).
//
// Thread-safety: implementations are thread-safe (HTTP workers, the
// reconciler and the catalogue's own thread call them).  Returned values
// are copies owned by the caller.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "manager/policy/policy.h"
#include "manager/store/store.h"

namespace hc::store {

// What the catalogue is and whether it can take changes now.
struct CatalogueState {
  std::string kind = "local";          // "local" or "etcd"
  bool connected = true;               // etcd: the local copy follows etcd now
  std::vector<std::string> endpoints;  // etcd: the member URLs configured
  std::string problem;                 // why not connected ("" when connected)
  int64_t revision = 0;                // etcd: the revision the local copy reflects
  int64_t synced_ms = 0;               // etcd: when it last matched etcd (0: never)
  // etcd: policies deleted from the cluster's catalogue that this host
  // keeps because disks here still use them.
  std::vector<std::string> retained;
};

// A change of the catalogue made elsewhere (on another host), already in
// the local copy when reported.
struct PolicyChange {
  enum class Kind { kCreated, kUpdated, kDeleted, kRetained };
  std::string name;
  Kind kind = Kind::kUpdated;
  int64_t revision = 0;  // etcd revision of the change
};

inline std::string_view PolicyChangeName(PolicyChange::Kind k) {
  switch (k) {
    case PolicyChange::Kind::kCreated:
      return "created";
    case PolicyChange::Kind::kUpdated:
      return "changed";
    case PolicyChange::Kind::kDeleted:
      return "deleted";
    case PolicyChange::Kind::kRetained:
      return "retained";
  }
  return "changed";
}

class PolicyCatalogue {
 public:
  virtual ~PolicyCatalogue() = default;

  virtual Result<std::vector<policy::Policy>> List() = 0;
  // kNotFound when absent.
  virtual Result<policy::Policy> Get(const std::string& name) = 0;
  // kAlreadyExists when the name is taken; kUnavailable when the catalogue
  // cannot take changes now (the message says what is down).
  virtual Status Create(const policy::Policy& p, int64_t now_ms) = 0;
  // kNotFound when absent; kConflict when it changed elsewhere since this
  // host last saw it; kUnavailable as above.
  virtual Status Update(const policy::Policy& p, int64_t now_ms) = 0;
  // kNotFound when absent, kConflict when a disk of this host uses it (or
  // it changed elsewhere); kUnavailable as above.
  virtual Status Delete(const std::string& name) = 0;

  virtual CatalogueState State() = 0;
};

// The Store's own policies: a single host.
class LocalCatalogue final : public PolicyCatalogue {
 public:
  // `store` is borrowed and must outlive the catalogue.
  explicit LocalCatalogue(Store& store) : store_(store) {}

  Result<std::vector<policy::Policy>> List() override { return store_.ListPolicies(); }
  Result<policy::Policy> Get(const std::string& name) override { return store_.GetPolicy(name); }
  Status Create(const policy::Policy& p, int64_t now_ms) override {
    return store_.CreatePolicy(p, now_ms);
  }
  Status Update(const policy::Policy& p, int64_t now_ms) override {
    return store_.UpdatePolicy(p, now_ms);
  }
  Status Delete(const std::string& name) override { return store_.DeletePolicy(name); }
  CatalogueState State() override { return CatalogueState{}; }

 private:
  Store& store_;
};

}  // namespace hc::store
