#include "manager/cluster/etcd_catalogue.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "common/util.h"

namespace hc::cluster {
namespace {

using store::PolicyChange;

const char* kRefused =
    "; policy changes are refused until it is back (this host keeps "
    "caching with its last catalogue)";

// A revision compare that failed: someone else wrote the key since.
tl::unexpected<Error> ChangedElsewhere(const std::string& name, int64_t seen) {
  return Fail(ErrorCode::kConflict, "policy '" + name +
                                        "' was changed or deleted on another host since this host "
                                        "read it (etcd revision " +
                                        std::to_string(seen) +
                                        "); nothing was changed: read it again and retry");
}

}  // namespace

EtcdCatalogue::EtcdCatalogue(store::Store& store, EtcdClient client, const Clock& clock,
                             std::chrono::milliseconds poll_interval, std::string prefix)
    : store_(store),
      client_(std::move(client)),
      clock_(clock),
      poll_interval_(poll_interval),
      prefix_(std::move(prefix)) {}

EtcdCatalogue::~EtcdCatalogue() { Stop(); }

void EtcdCatalogue::Start(Handler handler) {
  handler_ = std::move(handler);
  thread_ = std::thread([this] {
    std::unique_lock lock(thread_mu_);
    while (!stop_) {
      lock.unlock();
      SyncNow();
      lock.lock();
      cv_.wait_for(lock, poll_interval_, [this] { return stop_; });
    }
  });
}

void EtcdCatalogue::Stop() {
  {
    std::lock_guard lock(thread_mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<PolicyChange> EtcdCatalogue::SyncNow() {
  std::vector<PolicyChange> changes;
  {
    std::lock_guard lock(mu_);
    changes = SyncLocked();
  }
  if (handler_) {
    for (const auto& c : changes) handler_(c);
  }
  return changes;
}

Error EtcdCatalogue::Down(const Error& e) {
  if (connected_ || problem_ != e.message) {
    spdlog::warn("cluster catalogue: {}; keeping the last catalogue (revision {})", e.message,
                 revision_);
  }
  connected_ = false;
  problem_ = e.message;
  return e;
}

tl::unexpected<Error> EtcdCatalogue::Refused(const Error& e) {
  return Fail(ErrorCode::kUnavailable, Down(e).message + kRefused);
}

std::vector<PolicyChange> EtcdCatalogue::SyncLocked() {
  std::vector<PolicyChange> changes;
  auto range = client_.RangePrefix(prefix_);
  if (!range) {
    Down(range.error());
    return changes;
  }
  auto local = store_.ListPolicies();
  if (range->kvs.empty() && synced_ms_ == 0 && local && !local->empty()) {
    // The first host to reach an empty catalogue publishes its policies
    // (create-if-absent: hosts doing this at once do not overwrite each
    // other), so a new cluster starts with the default policies.
    int published = 0;
    for (const auto& p : *local) {
      auto t = client_.PutIf(Key(p.name), policy::PolicyToJson(p).dump(), 0);
      if (!t) {
        Down(t.error());
        return changes;
      }
      published += t->succeeded ? 1 : 0;
    }
    spdlog::info("cluster catalogue: etcd at {} held no policies; published this host's {}",
                 client_.Describe(), published);
    range = client_.RangePrefix(prefix_);
    if (!range) {
      Down(range.error());
      return changes;
    }
  }
  auto assignments = store_.ListAssignments();
  if (!local || !assignments) {
    spdlog::error("cluster catalogue: cannot read the local copy: {}",
                  (!local ? local.error() : assignments.error()).message);
    return changes;
  }
  std::map<std::string, policy::Policy> mine;
  for (auto& p : *local) mine.emplace(p.name, std::move(p));
  std::set<std::string> used;
  for (const auto& a : *assignments) used.insert(a.policy);

  const int64_t now = clock_.NowMs();
  std::set<std::string> remote;
  for (const auto& kv : range->kvs) {
    const std::string name = kv.key.substr(prefix_.size());
    auto j = nlohmann::json::parse(kv.value, nullptr, false);
    auto p =
        j.is_discarded()
            ? Result<policy::Policy>(tl::unexpected(Error{ErrorCode::kInvalidArgument, "not JSON"}))
            : policy::PolicyFromJson(j);
    if (p && p->name != name) {
      p = tl::unexpected(Error{ErrorCode::kInvalidArgument, "its name is '" + p->name + "'"});
    }
    if (p) {
      if (auto s = policy::Validate(*p); !s) p = tl::unexpected(s.error());
    }
    if (!p) {
      spdlog::warn("cluster catalogue: ignoring etcd key {} ({}); this host keeps its copy",
                   ToValidUtf8(kv.key), p.error().message);
      if (mine.count(name)) remote.insert(name);  // not deleted: unreadable
      continue;
    }
    remote.insert(name);
    auto it = mine.find(name);
    if (it == mine.end()) {
      if (auto s = store_.CreatePolicy(*p, now); !s) {
        spdlog::error("cluster catalogue: storing policy '{}': {}", name, s.error().message);
        continue;
      }
      changes.push_back({name, PolicyChange::Kind::kCreated, kv.mod_revision});
    } else if (!(it->second == *p)) {
      if (auto s = store_.UpdatePolicy(*p, now); !s) {
        spdlog::error("cluster catalogue: storing policy '{}': {}", name, s.error().message);
        continue;
      }
      changes.push_back({name, PolicyChange::Kind::kUpdated, kv.mod_revision});
    }
    mod_revision_[name] = kv.mod_revision;
  }
  std::vector<std::string> retained;
  for (const auto& [name, p] : mine) {
    if (remote.count(name)) continue;
    mod_revision_.erase(name);
    if (used.count(name)) {
      if (std::find(retained_.begin(), retained_.end(), name) == retained_.end()) {
        changes.push_back({name, PolicyChange::Kind::kRetained, range->revision});
      }
      retained.push_back(name);
      continue;
    }
    if (auto s = store_.DeletePolicy(name); !s) {
      spdlog::error("cluster catalogue: deleting policy '{}': {}", name, s.error().message);
      continue;
    }
    changes.push_back({name, PolicyChange::Kind::kDeleted, range->revision});
  }
  retained_ = std::move(retained);
  if (!connected_) {
    spdlog::info("cluster catalogue: following etcd at {} (revision {})", client_.Describe(),
                 range->revision);
  }
  connected_ = true;
  problem_.clear();
  revision_ = range->revision;
  synced_ms_ = now;
  return changes;
}

Result<std::vector<policy::Policy>> EtcdCatalogue::List() { return store_.ListPolicies(); }

Result<policy::Policy> EtcdCatalogue::Get(const std::string& name) {
  return store_.GetPolicy(name);
}

Status EtcdCatalogue::Create(const policy::Policy& p, int64_t now_ms) {
  std::lock_guard lock(mu_);
  const std::string value = policy::PolicyToJson(p).dump();
  auto t = client_.PutIf(Key(p.name), value, 0);
  if (!t) return Refused(t.error());
  if (!t->succeeded) {
    return Fail(ErrorCode::kAlreadyExists,
                "policy '" + p.name +
                    "' exists already in the cluster's catalogue in etcd "
                    "(perhaps created on another host); nothing was changed");
  }
  auto local = store_.GetPolicy(p.name);
  Status s = local ? store_.UpdatePolicy(p, now_ms) : store_.CreatePolicy(p, now_ms);
  if (!s) return s;
  mod_revision_[p.name] = t->revision;
  retained_.erase(std::remove(retained_.begin(), retained_.end(), p.name), retained_.end());
  return {};
}

Status EtcdCatalogue::Update(const policy::Policy& p, int64_t now_ms) {
  std::lock_guard lock(mu_);
  auto known = mod_revision_.find(p.name);
  if (known == mod_revision_.end()) {
    if (!store_.GetPolicy(p.name)) {
      return Fail(ErrorCode::kNotFound, "no policy '" + p.name + "'");
    }
    if (!connected_) return Refused(Error{ErrorCode::kUnavailable, problem_});
    return Fail(ErrorCode::kConflict,
                "policy '" + p.name +
                    "' is no longer in the cluster's catalogue (deleted on "
                    "another host); this host keeps it only for the disks that use it: unassign "
                    "them, or create the policy again");
  }
  auto t = client_.PutIf(Key(p.name), policy::PolicyToJson(p).dump(), known->second);
  if (!t) return Refused(t.error());
  if (!t->succeeded) return ChangedElsewhere(p.name, known->second);
  if (auto s = store_.UpdatePolicy(p, now_ms); !s) return s;
  known->second = t->revision;
  return {};
}

Status EtcdCatalogue::Delete(const std::string& name) {
  std::lock_guard lock(mu_);
  auto known = mod_revision_.find(name);
  if (known == mod_revision_.end()) {
    if (!store_.GetPolicy(name)) return Fail(ErrorCode::kNotFound, "no policy '" + name + "'");
    if (!connected_) return Refused(Error{ErrorCode::kUnavailable, problem_});
    // Deleted elsewhere and kept here for disks that no longer use it.
    return store_.DeletePolicy(name);
  }
  auto t = client_.DeleteIf(Key(name), known->second);
  if (!t) return Refused(t.error());
  if (!t->succeeded) return ChangedElsewhere(name, known->second);
  if (auto s = store_.DeletePolicy(name); !s) return s;
  mod_revision_.erase(known);
  return {};
}

store::CatalogueState EtcdCatalogue::State() {
  std::lock_guard lock(mu_);
  store::CatalogueState s;
  s.kind = "etcd";
  s.connected = connected_;
  for (const auto& e : client_.endpoints()) s.endpoints.push_back(e.url);
  s.problem = problem_;
  s.revision = revision_;
  s.synced_ms = synced_ms_;
  s.retained = retained_;
  return s;
}

}  // namespace hc::cluster
