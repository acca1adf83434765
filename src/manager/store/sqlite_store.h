// SqliteStore: the Store on one SQLite file (WAL journal, foreign keys on,
// schema version in PRAGMA user_version, migrated forward at open).
//
// Bounded growth: each disk keeps at most `max_samples` statistics samples and
// the event log at most `max_events` rows; older rows go on insert.
//
// Thread-safety: one connection, serialised by an internal mutex.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <mutex>
#include <string>

#include "manager/store/store.h"

namespace hc::store {

// Move-only owner of a sqlite3 connection.
struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using SqliteHandle = std::unique_ptr<sqlite3, SqliteCloser>;

struct SqliteOptions {
  size_t max_samples = 720;   // per disk: 2 h at one sample per 10 s
  size_t max_events = 10000;
};

class SqliteStore final : public Store {
 public:
  static constexpr int kSchemaVersion = 3;

  // Opens (creating when absent) the database at `path` (":memory:" for
  // tests).  A new database gets the default policies.
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path, int64_t now_ms,
                                                   SqliteOptions opts = {});

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Result<std::vector<policy::Policy>> ListPolicies() override;
  Result<policy::Policy> GetPolicy(const std::string& name) override;
  Status CreatePolicy(const policy::Policy& p, int64_t now_ms) override;
  Status UpdatePolicy(const policy::Policy& p, int64_t now_ms) override;
  Status DeletePolicy(const std::string& name) override;

  Result<std::vector<Assignment>> ListAssignments() override;
  Result<std::optional<Assignment>> GetAssignment(const std::string& vm_uuid,
                                                  const std::string& target) override;
  Status PutAssignment(const Assignment& a) override;
  Status DeleteAssignment(const std::string& vm_uuid, const std::string& target) override;

  Result<std::optional<SsdTier>> GetSsdTier(const std::string& vm_uuid,
                                            const std::string& target) override;
  Result<std::vector<SsdTier>> ListSsdTiers() override;
  Status PutSsdTier(const SsdTier& t) override;
  Status DeleteSsdTier(const std::string& vm_uuid, const std::string& target) override;

  Result<int64_t> AppendEvent(const Event& e) override;
  using Store::ListEvents;
  Result<std::vector<Event>> ListEvents(const EventQuery& q) override;

  Status AppendStats(const std::string& vm_uuid, const std::string& target,
                     const StatSample& s) override;
  Result<std::vector<StatSample>> ListStats(const std::string& vm_uuid, const std::string& target,
                                            size_t limit) override;
  Status DeleteStats(const std::string& vm_uuid, const std::string& target) override;

  // The journal mode in force ("wal"), for tests and the health check.
  Result<std::string> JournalMode();

 private:
  SqliteStore(SqliteHandle db, SqliteOptions opts) : db_(std::move(db)), opts_(opts) {}
  Status Migrate(int64_t now_ms);

  std::mutex mu_;
  SqliteHandle db_;  // guarded by mu_
  const SqliteOptions opts_;
};

}  // namespace hc::store
