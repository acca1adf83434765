#include "manager/store/sqlite_store.h"

#include <utility>

#include "common/util.h"

namespace hc::store {
namespace {

using nlohmann::json;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

// A prepared statement with bound parameters.  Values are only ever bound,
// never spliced into SQL text.
class Stmt {
 public:
  static Result<Stmt> Prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) {
      return Fail(ErrorCode::kInternal,
                  std::string("preparing SQL failed: ") + sqlite3_errmsg(db));
    }
    return Stmt(db, s);
  }
  // SQLite's TEXT is UTF-8: a byte that is not well-formed UTF-8 (from a
  // tier file, libvirt or QEMU) is stored as U+FFFD, so every string read
  // back can be sent as JSON.
  Stmt& Bind(int i, const std::string& v) {
    if (IsValidUtf8(v)) {
      sqlite3_bind_text(s_.get(), i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    } else {
      const std::string valid = ToValidUtf8(v);
      sqlite3_bind_text(s_.get(), i, valid.data(), static_cast<int>(valid.size()),
                        SQLITE_TRANSIENT);
    }
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_.get(), i, v);
    return *this;
  }
  // SQLITE_ROW -> true, SQLITE_DONE -> false.
  Result<bool> Step() {
    int rc = sqlite3_step(s_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    int ext = sqlite3_extended_errcode(db_);
    ErrorCode code = ErrorCode::kIOError;
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE) {
      code = ErrorCode::kAlreadyExists;
    } else if (ext == SQLITE_CONSTRAINT_FOREIGNKEY ||
               ((ext & 0xff) == SQLITE_CONSTRAINT &&
                std::string_view(sqlite3_errmsg(db_)).find("FOREIGN KEY") !=
                    std::string_view::npos)) {
      // RESTRICT actions report a plain SQLITE_CONSTRAINT.
      code = ErrorCode::kConflict;
    }
    return Fail(code, std::string("database: ") + sqlite3_errmsg(db_));
  }
  Status Run() {
    auto r = Step();
    if (!r) return tl::unexpected(r.error());
    return {};
  }
  std::string Text(int col) {
    const unsigned char* t = sqlite3_column_text(s_.get(), col);
    int n = sqlite3_column_bytes(s_.get(), col);
    // (Records written before Bind made them valid may hold other bytes.)
    return t ? ToValidUtf8(std::string_view(reinterpret_cast<const char*>(t),
                                            static_cast<size_t>(n)))
             : "";
  }
  int64_t Int(int col) { return sqlite3_column_int64(s_.get(), col); }

 private:
  Stmt(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  sqlite3* db_;
  std::unique_ptr<sqlite3_stmt, StmtFinalizer> s_;
};

Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return Fail(ErrorCode::kIOError, "database: " + msg);
  }
  return {};
}

// Runs `fn` inside BEGIN IMMEDIATE ... COMMIT, rolling back on failure.
template <typename Fn>
auto InTransaction(sqlite3* db, Fn&& fn) -> decltype(fn()) {
  if (auto s = Exec(db, "BEGIN IMMEDIATE"); !s) return tl::unexpected(s.error());
  auto r = fn();
  if (!r) {
    Exec(db, "ROLLBACK");
    return r;
  }
  if (auto s = Exec(db, "COMMIT"); !s) {
    Exec(db, "ROLLBACK");
    return tl::unexpected(s.error());
  }
  return r;
}

// Schema migrations: kMigrations[i] brings user_version i to i + 1.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE policies (
  name        TEXT PRIMARY KEY NOT NULL,
  description TEXT NOT NULL,
  rules       TEXT NOT NULL,           -- JSON, the rule names of the API
  created_ms  INTEGER NOT NULL,
  updated_ms  INTEGER NOT NULL
);
CREATE TABLE assignments (
  vm_uuid    TEXT NOT NULL,
  target     TEXT NOT NULL,
  vm_name    TEXT NOT NULL,
  policy     TEXT NOT NULL REFERENCES policies(name) ON UPDATE RESTRICT ON DELETE RESTRICT,
  node_name  TEXT NOT NULL,
  state      TEXT NOT NULL,
  reason     TEXT NOT NULL,
  updated_ms INTEGER NOT NULL,
  checked_ms INTEGER NOT NULL,
  PRIMARY KEY (vm_uuid, target)
);
CREATE INDEX assignments_policy ON assignments(policy);
CREATE TABLE events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms INTEGER NOT NULL,
  level   TEXT NOT NULL,
  vm      TEXT NOT NULL,
  target  TEXT NOT NULL,
  action  TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE TABLE stats (
  vm_uuid TEXT NOT NULL,
  target  TEXT NOT NULL,
  time_ms INTEGER NOT NULL,
  data    TEXT NOT NULL,                -- JSON object of counters
  PRIMARY KEY (vm_uuid, target, time_ms)
) WITHOUT ROWID;
)sql",
    // 2: the SSD tier files hostcached made, and whether the driver has
    // formatted them (a database from before starts empty: each tier is
    // recorded at the next check from what its file holds).
    R"sql(
CREATE TABLE ssd_tiers (
  vm_uuid    TEXT NOT NULL,
  target     TEXT NOT NULL,
  path       TEXT NOT NULL,
  origin_id  TEXT NOT NULL,
  formatted  INTEGER NOT NULL,        -- 1: the driver's superblock was seen in it
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (vm_uuid, target)
);
)sql",
    // 3: a tier whose journal is older than the disk (the VM ran without
    // its filter while the file was not closed cleanly): never attached
    // again, only given up (Manager::ForgetSsdTier).
    R"sql(
ALTER TABLE ssd_tiers ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;
)sql",
};
constexpr int kNumMigrations = sizeof(kMigrations) / sizeof(kMigrations[0]);
static_assert(kNumMigrations == SqliteStore::kSchemaVersion);

Result<policy::Policy> PolicyFromRow(Stmt& st) {
  policy::Policy p;
  p.name = st.Text(0);
  p.description = st.Text(1);
  json rules = json::parse(st.Text(2), nullptr, /*allow_exceptions=*/false);
  if (rules.is_discarded()) {
    return Fail(ErrorCode::kInternal, "policy '" + p.name + "' has unreadable rules in the database");
  }
  auto r = policy::RulesFromJson(rules);
  if (!r) return tl::unexpected(Annotate(r.error(), "policy '" + p.name + "' in the database"));
  p.rules = *r;
  return p;
}

Assignment AssignmentFromRow(Stmt& st) {
  Assignment a;
  a.vm_uuid = st.Text(0);
  a.target = st.Text(1);
  a.vm_name = st.Text(2);
  a.policy = st.Text(3);
  a.node_name = st.Text(4);
  a.state = ParseCompliance(st.Text(5));
  a.reason = st.Text(6);
  a.updated_ms = st.Int(7);
  a.checked_ms = st.Int(8);
  return a;
}

constexpr const char* kAssignmentCols =
    "vm_uuid, target, vm_name, policy, node_name, state, reason, updated_ms, checked_ms";

constexpr const char* kSsdTierCols =
    "vm_uuid, target, path, origin_id, formatted, created_ms, updated_ms, stale";

SsdTier SsdTierFromRow(Stmt& st) {
  return SsdTier{st.Text(0), st.Text(1), st.Text(2), st.Text(3), st.Int(4) != 0,
                 st.Int(5), st.Int(6), st.Int(7) != 0};
}

// Every remaining row of st, each converted by from(st).
template <typename From>
auto AllRows(Stmt& st, From from) -> Result<std::vector<decltype(from(st))>> {
  std::vector<decltype(from(st))> out;
  for (;;) {
    auto row = st.Step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return out;
    out.push_back(from(st));
  }
}

}  // namespace

std::string_view ComplianceName(Compliance c) {
  switch (c) {
    case Compliance::kUnknown: return "unknown";
    case Compliance::kCompliant: return "compliant";
    case Compliance::kPendingRestart: return "pending-restart";
    case Compliance::kNotCompliant: return "not-compliant";
    case Compliance::kError: return "error";
  }
  return "unknown";
}

Compliance ParseCompliance(std::string_view s) {
  for (auto c : {Compliance::kCompliant, Compliance::kPendingRestart, Compliance::kNotCompliant,
                 Compliance::kError}) {
    if (ComplianceName(c) == s) return c;
  }
  return Compliance::kUnknown;
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, int64_t now_ms,
                                                       SqliteOptions opts) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  SqliteHandle db(raw);
  if (rc != SQLITE_OK) {
    return Fail(ErrorCode::kIOError, "cannot open database " + path + ": " +
                                         (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db.get(), 5000);
  sqlite3_extended_result_codes(db.get(), 1);
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"}) {
    if (auto s = Exec(db.get(), pragma); !s) {
      return tl::unexpected(Annotate(s.error(), "opening " + path));
    }
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(std::move(db), opts));
  if (auto s = store->Migrate(now_ms); !s) {
    return tl::unexpected(Annotate(s.error(), "database " + path));
  }
  return store;
}

Status SqliteStore::Migrate(int64_t now_ms) {
  std::lock_guard lock(mu_);
  sqlite3* db = db_.get();
  auto st = Stmt::Prepare(db, "PRAGMA user_version");
  if (!st) return tl::unexpected(st.error());
  auto row = st->Step();
  if (!row) return tl::unexpected(row.error());
  int version = static_cast<int>(st->Int(0));
  if (version > kSchemaVersion) {
    return Fail(ErrorCode::kFailedPrecondition,
                "schema version " + std::to_string(version) + " is newer than this hostcached (" +
                    std::to_string(kSchemaVersion) + "); run a newer hostcached");
  }
  const bool fresh = version == 0;
  for (; version < kSchemaVersion; version++) {
    Status s = InTransaction(db, [&]() -> Status {
      if (auto e = Exec(db, kMigrations[version]); !e) return e;
      std::string set = "PRAGMA user_version=" + std::to_string(version + 1);
      return Exec(db, set.c_str());
    });
    if (!s) return tl::unexpected(Annotate(s.error(), "migrating to schema " + std::to_string(version + 1)));
  }
  if (fresh) {
    for (const auto& p : policy::DefaultPolicies()) {
      auto ins = Stmt::Prepare(db,
                               "INSERT INTO policies(name, description, rules, created_ms, "
                               "updated_ms) VALUES (?1, ?2, ?3, ?4, ?4)");
      if (!ins) return tl::unexpected(ins.error());
      ins->Bind(1, p.name).Bind(2, p.description).Bind(3, policy::RulesToJson(p.rules).dump());
      ins->Bind(4, now_ms);
      if (auto s = ins->Run(); !s) return s;
    }
  }
  return {};
}

Result<std::string> SqliteStore::JournalMode() {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(), "PRAGMA journal_mode");
  if (!st) return tl::unexpected(st.error());
  auto row = st->Step();
  if (!row) return tl::unexpected(row.error());
  return st->Text(0);
}

Result<std::vector<policy::Policy>> SqliteStore::ListPolicies() {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(),
                          "SELECT name, description, rules FROM policies ORDER BY name");
  if (!st) return tl::unexpected(st.error());
  std::vector<policy::Policy> out;
  for (;;) {
    auto row = st->Step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) break;
    auto p = PolicyFromRow(*st);
    if (!p) return tl::unexpected(p.error());
    out.push_back(std::move(*p));
  }
  return out;
}

Result<policy::Policy> SqliteStore::GetPolicy(const std::string& name) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(),
                          "SELECT name, description, rules FROM policies WHERE name = ?1");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, name);
  auto row = st->Step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return Fail(ErrorCode::kNotFound, "there is no policy named '" + name + "'");
  return PolicyFromRow(*st);
}

Status SqliteStore::CreatePolicy(const policy::Policy& p, int64_t now_ms) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(),
                          "INSERT INTO policies(name, description, rules, created_ms, updated_ms) "
                          "VALUES (?1, ?2, ?3, ?4, ?4)");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, p.name).Bind(2, p.description).Bind(3, policy::RulesToJson(p.rules).dump());
  st->Bind(4, now_ms);
  auto s = st->Run();
  if (!s && s.error().code == ErrorCode::kAlreadyExists) {
    return Fail(ErrorCode::kAlreadyExists, "a policy named '" + p.name + "' already exists");
  }
  return s;
}

Status SqliteStore::UpdatePolicy(const policy::Policy& p, int64_t now_ms) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(),
                          "UPDATE policies SET description = ?2, rules = ?3, updated_ms = ?4 "
                          "WHERE name = ?1");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, p.name).Bind(2, p.description).Bind(3, policy::RulesToJson(p.rules).dump());
  st->Bind(4, now_ms);
  if (auto s = st->Run(); !s) return s;
  if (sqlite3_changes(db_.get()) == 0) {
    return Fail(ErrorCode::kNotFound, "there is no policy named '" + p.name + "'");
  }
  return {};
}

Status SqliteStore::DeletePolicy(const std::string& name) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(), "DELETE FROM policies WHERE name = ?1");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, name);
  auto s = st->Run();
  if (!s && s.error().code == ErrorCode::kConflict) {
    return Fail(ErrorCode::kConflict,
                "policy '" + name + "' is assigned to disks; unassign it from them first");
  }
  if (!s) return s;
  if (sqlite3_changes(db_.get()) == 0) {
    return Fail(ErrorCode::kNotFound, "there is no policy named '" + name + "'");
  }
  return {};
}

Result<std::vector<Assignment>> SqliteStore::ListAssignments() {
  std::lock_guard lock(mu_);
  std::string sql =
      std::string("SELECT ") + kAssignmentCols + " FROM assignments ORDER BY vm_name, target";
  auto st = Stmt::Prepare(db_.get(), sql.c_str());
  if (!st) return tl::unexpected(st.error());
  return AllRows(*st, AssignmentFromRow);
}

Result<std::optional<Assignment>> SqliteStore::GetAssignment(const std::string& vm_uuid,
                                                             const std::string& target) {
  std::lock_guard lock(mu_);
  std::string sql = std::string("SELECT ") + kAssignmentCols +
                    " FROM assignments WHERE vm_uuid = ?1 AND target = ?2";
  auto st = Stmt::Prepare(db_.get(), sql.c_str());
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, vm_uuid).Bind(2, target);
  auto row = st->Step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<Assignment>();
  return std::optional<Assignment>(AssignmentFromRow(*st));
}

Status SqliteStore::PutAssignment(const Assignment& a) {
  std::lock_guard lock(mu_);
  std::string sql = std::string("INSERT OR REPLACE INTO assignments(") + kAssignmentCols +
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
  auto st = Stmt::Prepare(db_.get(), sql.c_str());
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, a.vm_uuid).Bind(2, a.target).Bind(3, a.vm_name).Bind(4, a.policy);
  st->Bind(5, a.node_name).Bind(6, std::string(ComplianceName(a.state))).Bind(7, a.reason);
  st->Bind(8, a.updated_ms).Bind(9, a.checked_ms);
  auto s = st->Run();
  if (!s && s.error().code == ErrorCode::kConflict) {
    return Fail(ErrorCode::kNotFound, "there is no policy named '" + a.policy + "'");
  }
  return s;
}

Status SqliteStore::DeleteAssignment(const std::string& vm_uuid, const std::string& target) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(), "DELETE FROM assignments WHERE vm_uuid = ?1 AND target = ?2");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, vm_uuid).Bind(2, target);
  if (auto s = st->Run(); !s) return s;
  if (sqlite3_changes(db_.get()) == 0) {
    return Fail(ErrorCode::kNotFound, "disk " + target + " has no policy assigned");
  }
  return {};
}

Result<std::optional<SsdTier>> SqliteStore::GetSsdTier(const std::string& vm_uuid,
                                                       const std::string& target) {
  std::lock_guard lock(mu_);
  std::string sql = std::string("SELECT ") + kSsdTierCols +
                    " FROM ssd_tiers WHERE vm_uuid = ?1 AND target = ?2";
  auto st = Stmt::Prepare(db_.get(), sql.c_str());
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, vm_uuid).Bind(2, target);
  auto row = st->Step();
  if (!row) return tl::unexpected(row.error());
  if (!*row) return std::optional<SsdTier>();
  return std::optional<SsdTier>(SsdTierFromRow(*st));
}

Result<std::vector<SsdTier>> SqliteStore::ListSsdTiers() {
  std::lock_guard lock(mu_);
  std::string sql =
      std::string("SELECT ") + kSsdTierCols + " FROM ssd_tiers ORDER BY vm_uuid, target";
  auto st = Stmt::Prepare(db_.get(), sql.c_str());
  if (!st) return tl::unexpected(st.error());
  return AllRows(*st, SsdTierFromRow);
}

Status SqliteStore::PutSsdTier(const SsdTier& t) {
  std::lock_guard lock(mu_);
  std::string sql = std::string("INSERT OR REPLACE INTO ssd_tiers(") + kSsdTierCols +
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
  auto st = Stmt::Prepare(db_.get(), sql.c_str());
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, t.vm_uuid).Bind(2, t.target).Bind(3, t.path).Bind(4, t.origin_id);
  st->Bind(5, int64_t{t.formatted ? 1 : 0}).Bind(6, t.created_ms).Bind(7, t.updated_ms);
  st->Bind(8, int64_t{t.stale ? 1 : 0});
  return st->Run();
}

Status SqliteStore::DeleteSsdTier(const std::string& vm_uuid, const std::string& target) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(), "DELETE FROM ssd_tiers WHERE vm_uuid = ?1 AND target = ?2");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, vm_uuid).Bind(2, target);
  return st->Run();
}

Result<int64_t> SqliteStore::AppendEvent(const Event& e) {
  std::lock_guard lock(mu_);
  sqlite3* db = db_.get();
  return InTransaction(db, [&]() -> Result<int64_t> {
    auto st = Stmt::Prepare(db,
                            "INSERT INTO events(time_ms, level, vm, target, action, message) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st) return tl::unexpected(st.error());
    st->Bind(1, e.time_ms).Bind(2, e.level).Bind(3, e.vm).Bind(4, e.target);
    st->Bind(5, e.action).Bind(6, e.message);
    if (auto s = st->Run(); !s) return tl::unexpected(s.error());
    int64_t id = sqlite3_last_insert_rowid(db);
    auto prune = Stmt::Prepare(db, "DELETE FROM events WHERE id <= ?1");
    if (!prune) return tl::unexpected(prune.error());
    prune->Bind(1, id - static_cast<int64_t>(opts_.max_events));
    if (auto s = prune->Run(); !s) return tl::unexpected(s.error());
    return id;
  });
}

Result<std::vector<Event>> SqliteStore::ListEvents(const EventQuery& q) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(),
                          "SELECT id, time_ms, level, vm, target, action, message FROM events "
                          "WHERE id > ?1 AND (?2 = '' OR vm = ?2) AND (?4 = '' OR action = ?4) "
                          "ORDER BY id DESC LIMIT ?3");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, q.since_id).Bind(2, q.vm).Bind(3, static_cast<int64_t>(q.limit)).Bind(4, q.action);
  return AllRows(*st, [](Stmt& r) {
    return Event{r.Int(0), r.Int(1), r.Text(2), r.Text(3), r.Text(4), r.Text(5), r.Text(6)};
  });
}

Status SqliteStore::AppendStats(const std::string& vm_uuid, const std::string& target,
                                const StatSample& s) {
  std::lock_guard lock(mu_);
  sqlite3* db = db_.get();
  return InTransaction(db, [&]() -> Status {
    auto st = Stmt::Prepare(
        db, "INSERT OR REPLACE INTO stats(vm_uuid, target, time_ms, data) VALUES (?1, ?2, ?3, ?4)");
    if (!st) return tl::unexpected(st.error());
    st->Bind(1, vm_uuid).Bind(2, target).Bind(3, s.time_ms).Bind(4, s.counters.dump());
    if (auto r = st->Run(); !r) return r;
    // Keep the newest max_samples of this disk.
    auto prune = Stmt::Prepare(db,
                               "DELETE FROM stats WHERE vm_uuid = ?1 AND target = ?2 AND "
                               "time_ms < (SELECT time_ms FROM stats WHERE vm_uuid = ?1 AND "
                               "target = ?2 ORDER BY time_ms DESC LIMIT 1 OFFSET ?3)");
    if (!prune) return tl::unexpected(prune.error());
    prune->Bind(1, vm_uuid).Bind(2, target).Bind(3, static_cast<int64_t>(opts_.max_samples - 1));
    return prune->Run();
  });
}

Result<std::vector<StatSample>> SqliteStore::ListStats(const std::string& vm_uuid,
                                                       const std::string& target, size_t limit) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(),
                          "SELECT time_ms, data FROM (SELECT time_ms, data FROM stats WHERE "
                          "vm_uuid = ?1 AND target = ?2 ORDER BY time_ms DESC LIMIT ?3) "
                          "ORDER BY time_ms");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, vm_uuid).Bind(2, target).Bind(3, static_cast<int64_t>(limit));
  return AllRows(*st, [](Stmt& r) {
    json data = json::parse(r.Text(1), nullptr, false);
    if (data.is_discarded()) data = json::object();
    return StatSample{r.Int(0), std::move(data)};
  });
}

Status SqliteStore::DeleteStats(const std::string& vm_uuid, const std::string& target) {
  std::lock_guard lock(mu_);
  auto st = Stmt::Prepare(db_.get(), "DELETE FROM stats WHERE vm_uuid = ?1 AND target = ?2");
  if (!st) return tl::unexpected(st.error());
  st->Bind(1, vm_uuid).Bind(2, target);
  return st->Run();
}

}  // namespace hc::store
