// SqliteStore against real SQLite files in a temporary directory.
#include <sqlite3.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/store/sqlite_store.h"

namespace hc::store {
namespace {

using nlohmann::json;

class StoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<SqliteStore> Open(SqliteOptions o = {}) {
    auto s = SqliteStore::Open(path_, 1000, o);
    EXPECT_TRUE(s) << s.error().message;
    return s ? std::move(*s) : nullptr;
  }
  Assignment A(const std::string& uuid, const std::string& target, const std::string& policy) {
    return Assignment{uuid, "vm-" + uuid, target, policy, "hc-" + target,
                      Compliance::kCompliant, "fine", 1, 2};
  }
  // Runs sql on the database file through a connection of its own.
  void Sql(const char* sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sql;
    sqlite3_close(db);
  }
  int UserVersion() {
    sqlite3* db = nullptr;
    sqlite3_stmt* st = nullptr;
    int v = -1;
    if (sqlite3_open(path_.c_str(), &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      v = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
  }
  const testing::ScratchDir dir_{"hc-store-test."};
  const std::string path_ = dir_.path() + "/hostcached.db";
};

TEST_F(StoreTest, NewDatabaseUsesWalAndHasTheDefaultPolicies) {
  auto s = Open();
  EXPECT_EQ(*s->JournalMode(), "wal");
  auto pols = s->ListPolicies();
  ASSERT_TRUE(pols);
  EXPECT_EQ(pols->size(), policy::DefaultPolicies().size());
  EXPECT_TRUE(s->GetPolicy("balanced"));
}

TEST_F(StoreTest, SchemaVersionIsRecordedAndANewerOneRefused) {
  { Open(); }
  EXPECT_EQ(UserVersion(), SqliteStore::kSchemaVersion);
  Sql("PRAGMA user_version=99");
  auto again = SqliteStore::Open(path_, 1000);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(again.error().message.find("newer"), std::string::npos);
}

TEST_F(StoreTest, StateSurvivesReopenAndDeletedDefaultsStayDeleted) {
  {
    auto s = Open();
    ASSERT_TRUE(s->DeletePolicy("monitor"));
    policy::Policy p{"fast", "d", {}};
    p.rules.ram_size = 1 << 30;
    ASSERT_TRUE(s->CreatePolicy(p, 5));
    ASSERT_TRUE(s->PutAssignment(A("u1", "vda", "fast")));
  }
  auto s = Open();
  EXPECT_FALSE(s->GetPolicy("monitor"));
  auto p = s->GetPolicy("fast");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->rules.ram_size, 1u << 30);
  auto as = s->ListAssignments();
  ASSERT_EQ(as->size(), 1u);
  EXPECT_EQ((*as)[0].state, Compliance::kCompliant);
  EXPECT_EQ((*as)[0].reason, "fine");
}

TEST_F(StoreTest, DuplicatesMissingAndInUse) {
  auto s = Open();
  policy::Policy p{"balanced", "", {}};
  auto dup = s->CreatePolicy(p, 1);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, ErrorCode::kAlreadyExists);
  p.name = "nope";
  EXPECT_EQ(s->UpdatePolicy(p, 1).error().code, ErrorCode::kNotFound);
  EXPECT_EQ(s->DeletePolicy("nope").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(s->PutAssignment(A("u", "vda", "nope")).error().code, ErrorCode::kNotFound);
  ASSERT_TRUE(s->PutAssignment(A("u", "vda", "balanced")));
  auto del = s->DeletePolicy("balanced");
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().code, ErrorCode::kConflict) << del.error().message;
  EXPECT_TRUE(s->GetPolicy("balanced"));
  EXPECT_EQ(s->DeleteAssignment("u", "vdz").error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(s->DeleteAssignment("u", "vda"));
  EXPECT_TRUE(s->DeletePolicy("balanced"));
}

TEST_F(StoreTest, HostileStringsAreDataNotSql) {
  auto s = Open();
  const std::string evil = "x'); DROP TABLE policies;--";
  ASSERT_TRUE(s->PutAssignment(Assignment{evil, evil, "vda", "balanced", "hc-vda",
                                          Compliance::kUnknown, evil, 1, 1}));
  auto a = s->GetAssignment(evil, "vda");
  ASSERT_TRUE(a && *a);
  EXPECT_EQ((*a)->vm_name, evil);
  EXPECT_EQ(s->ListPolicies()->size(), policy::DefaultPolicies().size());
  ASSERT_TRUE(s->AppendEvent(Event{0, 1, "info", evil, "vda", "x", evil}));
  auto evs = s->ListEvents(0, 10, evil);
  ASSERT_EQ(evs->size(), 1u);
  EXPECT_EQ((*evs)[0].message, evil);
}

TEST_F(StoreTest, TextIsStoredAndReadBackAsValidUtf8) {
  auto s = Open();
  const std::string bad = "origin '\xff\xfe\xc3' of a tier";
  ASSERT_TRUE(s->AppendEvent(Event{0, 5, "error", "web", "vda", "ssd-lost", bad}));
  Assignment a = A("u1", "vda", "balanced");
  a.reason = bad;
  ASSERT_TRUE(s->PutAssignment(a));
  ASSERT_TRUE(s->PutSsdTier(SsdTier{"u1", "vda", "/ssd/\x80.hcssd", "u1/\xc0vda", true, 1, 2}));
  const std::string fixed = "origin '\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd' of a tier";
  EXPECT_EQ((*s->ListEvents(0, 10, ""))[0].message, fixed);
  EXPECT_EQ((**s->GetAssignment("u1", "vda")).reason, fixed);
  EXPECT_EQ((**s->GetSsdTier("u1", "vda")).origin_id, "u1/\xef\xbf\xbdvda");
  s.reset();
  // A record an older hostcached wrote as it came is read back valid too.
  Sql("INSERT INTO events(time_ms, level, vm, target, action, message) "
      "VALUES (6, 'error', 'web', 'vda', 'ssd-lost', CAST(X'6f6b20ff' AS TEXT))");
  s = Open();
  EXPECT_EQ((*s->ListEvents(0, 10, ""))[0].message, "ok \xef\xbf\xbd");
}

TEST_F(StoreTest, StatisticsAreBoundedPerDisk) {
  SqliteOptions o;
  o.max_samples = 5;
  auto s = Open(o);
  for (int i = 0; i < 12; i++) {
    ASSERT_TRUE(s->AppendStats("u", "vda", StatSample{1000 + i, json{{"read-hits", i}}}));
    ASSERT_TRUE(s->AppendStats("u", "vdb", StatSample{1000 + i, json{{"read-hits", 100 + i}}}));
  }
  auto a = s->ListStats("u", "vda", 100);
  ASSERT_EQ(a->size(), 5u);
  EXPECT_EQ(a->front().time_ms, 1007);
  EXPECT_EQ(a->back().time_ms, 1011);
  EXPECT_EQ(a->back().counters["read-hits"], 11);
  auto last2 = s->ListStats("u", "vdb", 2);
  ASSERT_EQ(last2->size(), 2u);
  EXPECT_EQ(last2->front().counters["read-hits"], 110);
  EXPECT_TRUE(s->DeleteStats("u", "vda"));
  EXPECT_TRUE(s->ListStats("u", "vda", 100)->empty());
  EXPECT_EQ(s->ListStats("u", "vdb", 100)->size(), 5u);
}

TEST_F(StoreTest, EventsAreBoundedAndNewestFirst) {
  SqliteOptions o;
  o.max_events = 10;
  auto s = Open(o);
  for (int i = 0; i < 25; i++) {
    ASSERT_TRUE(s->AppendEvent(Event{0, i, "info", i % 2 ? "a" : "b", "", "t",
                                     "m" + std::to_string(i)}));
  }
  auto all = s->ListEvents(0, 100, "");
  ASSERT_EQ(all->size(), 10u);
  EXPECT_EQ(all->front().message, "m24");
  auto since = s->ListEvents(all->at(2).id, 100, "");
  EXPECT_EQ(since->size(), 2u);
  auto only_a = s->ListEvents(0, 100, "a");
  for (const auto& e : *only_a) EXPECT_EQ(e.vm, "a");
}

TEST_F(StoreTest, EventsFilterByActionAndVm) {
  auto s = Open();
  const char* actions[] = {"assign", "unassign", "assign", "define"};
  for (int i = 0; i < 4; i++) {
    ASSERT_TRUE(s->AppendEvent(Event{0, i, "info", i < 2 ? "a" : "b", "vda", actions[i],
                                     "m" + std::to_string(i)}));
  }
  auto assigns = s->ListEvents(EventQuery{0, 100, "", "assign"});
  ASSERT_EQ(assigns->size(), 2u);
  EXPECT_EQ(assigns->at(0).message, "m2");
  EXPECT_EQ(assigns->at(1).message, "m0");
  auto b_assigns = s->ListEvents(EventQuery{0, 100, "b", "assign"});
  ASSERT_EQ(b_assigns->size(), 1u);
  EXPECT_EQ(b_assigns->at(0).message, "m2");
  EXPECT_TRUE(s->ListEvents(EventQuery{0, 100, "", "assign' OR 1=1 --"})->empty());
}

TEST_F(StoreTest, SsdTiersAreRecordedPerDisk) {
  auto s = Open();
  EXPECT_FALSE(*s->GetSsdTier("u", "vda"));
  SsdTier t{"u", "vda", "/ssd/u-vda.hcssd", "u/vda", false, 5, 5, false};
  ASSERT_TRUE(s->PutSsdTier(t));
  ASSERT_TRUE(s->PutSsdTier(SsdTier{"u", "vdb", "/ssd/u-vdb.hcssd", "u/vdb", true, 6, 6, false}));
  EXPECT_EQ(**s->GetSsdTier("u", "vda"), t);
  t.formatted = true;
  t.updated_ms = 9;
  ASSERT_TRUE(s->PutSsdTier(t));  // replaces
  EXPECT_EQ(**s->GetSsdTier("u", "vda"), t);
  t.stale = true;
  ASSERT_TRUE(s->PutSsdTier(t));
  EXPECT_TRUE((*s->GetSsdTier("u", "vda"))->stale);
  auto all = s->ListSsdTiers();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].target, "vdb");
  ASSERT_TRUE(s->DeleteSsdTier("u", "vda"));
  ASSERT_TRUE(s->DeleteSsdTier("u", "vda"));  // a missing record is fine
  EXPECT_FALSE(*s->GetSsdTier("u", "vda"));
  EXPECT_EQ(s->ListSsdTiers()->size(), 1u);
}

TEST_F(StoreTest, ASchema1DatabaseIsUpgradedAndKeepsItsState) {
  // What hostcached before the tier records wrote: schema 1, no ssd_tiers.
  {
    auto s = Open();
    ASSERT_TRUE(s->PutAssignment(A("u1", "vda", "balanced")));
  }
  Sql("DROP TABLE ssd_tiers; PRAGMA user_version=1");
  auto s = Open();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->ListAssignments()->size(), 1u);
  EXPECT_TRUE(s->ListSsdTiers()->empty());
  ASSERT_TRUE(s->PutSsdTier(SsdTier{"u1", "vda", "/ssd/f", "u1/vda", true, 1, 1, true}));
  EXPECT_TRUE((*s->GetSsdTier("u1", "vda"))->stale);
  EXPECT_EQ(UserVersion(), SqliteStore::kSchemaVersion);
}

TEST_F(StoreTest, UnwritableLocationIsAClearError) {
  auto s = SqliteStore::Open("/proc/hostcache/nope.db", 1);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("/proc/hostcache/nope.db"), std::string::npos);
}

}  // namespace
}  // namespace hc::store
