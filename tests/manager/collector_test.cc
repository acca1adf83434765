// The statistics collector and the Prometheus exposition.
#include <atomic>
#include <fstream>
#include <future>
#include <iterator>
#include <regex>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>

#include "common/subprocess.h"
#include "fakes.h"
#include "manager/core/manager.h"
#include "manager/metrics/prometheus.h"
#include "manager/stats/collector.h"
#include "manager/store/sqlite_store.h"

namespace hc::stats {
namespace {

using nlohmann::json;
using testing::TestData;

constexpr const char* kWeb = "6a2f3b4c-1d2e-4f50-8a9b-0c1d2e3f4a5b";
constexpr const char* kDb = "11111111-2222-3333-4444-555555555555";

class CollectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(*store::SqliteStore::Open(":memory:", clock_.now_ms));
    lv_.Add(kWeb, "web", TestData("web.inactive.xml"), TestData("web.live.xml"));
    std::string db_live = TestData("web.live.xml"), db_inactive = TestData("web.inactive.xml");
    for (std::string* x : {&db_live, &db_inactive}) {
      x->replace(x->find("<name>web</name>"), 16, "<name>db</name>");
      x->replace(x->find(kWeb), 36, kDb);
    }
    lv_.Add(kDb, "db", db_inactive, db_live);
    core::ManagerConfig cfg;
    cfg.ram_budget = 4ull << 30;
    core::Manager mgr(*store_, lv_, tools_, clock_, cfg);
    ASSERT_TRUE(mgr.Assign("web", "vda", "balanced"));
    ASSERT_TRUE(mgr.Assign("db", "vdb", "read-mostly"));
  }
  testing::FakeClock clock_;
  testing::FakeLibvirt lv_;
  testing::FakeQemuTools tools_;
  std::unique_ptr<store::SqliteStore> store_;
};

TEST_F(CollectorTest, SamplesEveryCachedDiskIntoTheStore) {
  StatsCollector c(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  for (int i = 0; i < 3; i++) {
    clock_.now_ms += 10000;
    c.CollectOnce();
  }
  auto web = store_->ListStats(kWeb, "vda", 100);
  ASSERT_EQ(web->size(), 3u);
  EXPECT_EQ(web->back().counters["read-hits"], 10);
  EXPECT_EQ(web->back().counters["mode"], "write-through");
  EXPECT_FALSE(web->back().counters.contains("driver"));
  EXPECT_EQ(store_->ListStats(kDb, "vdb", 100)->size(), 3u);
  auto latest = c.Latest();
  ASSERT_EQ(latest.size(), 2u);
}

TEST_F(CollectorTest, AFinishedWarmUpIsAWarmedEventWithItsDuration) {
  StatsCollector c(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  auto warmed = [&] {
    std::vector<store::Event> out;
    auto evs = store_->ListEvents(0, 100, "");
    for (const auto& e : *evs) {
      if (e.action == "warmed") out.push_back(e);
    }
    return out;
  };
  auto& counters = lv_.domains[kWeb].qemu.counters["hc-vda"];
  counters = json{{"warm-up-state", "done"}, {"warm-up-blocks", 8}, {"warm-up-done", 8}};
  c.CollectOnce();
  EXPECT_TRUE(warmed().empty()) << "a warm-up never seen running is not announced";
  counters = json{{"warm-up-state", "running"}, {"warm-up-blocks", 400}, {"warm-up-done", 10},
                  {"warm-up-bytes-received", 0}};
  c.CollectOnce();
  clock_.now_ms += 10000;
  counters["warm-up-done"] = 200;
  c.CollectOnce();
  EXPECT_TRUE(warmed().empty());
  clock_.now_ms += 5000;
  counters["warm-up-state"] = "done";
  counters["warm-up-done"] = 400;
  c.CollectOnce();
  auto ev = warmed();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].vm, "web");
  EXPECT_EQ(ev[0].target, "vda");
  EXPECT_NE(ev[0].message.find("400 of 400 blocks warmed"), std::string::npos) << ev[0].message;
  EXPECT_NE(ev[0].message.find("ran for 15.0 s or less"), std::string::npos) << ev[0].message;
  c.CollectOnce();
  EXPECT_EQ(warmed().size(), 1u) << "said once";
}

TEST_F(CollectorTest, TheSsdTiersStateIsInTheSeriesAndTheMetrics) {
  // A driver that reports the journal and a failed tier; web's disk has an
  // SSD tier that failed, db's does not report those fields (an older
  // driver): no samples for it, no error.
  auto& q = lv_.domains[kWeb].qemu;
  q.report_options = true;
  q.nodes["hc-vda-ssd"] = testing::FakeQemu::Node{"file", "", {}, "", "/ssd/x.hcssd"};
  q.nodes["hc-vda"].ssd = "hc-vda-ssd";
  q.nodes["hc-vda"].options["mode"] = "write-back";
  q.nodes["hc-vda"].options["origin-id"] = std::string(kWeb) + "/vda";
  q.ssd_failed.insert("hc-vda");
  StatsCollector c(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  c.CollectOnce();
  auto web = store_->ListStats(kWeb, "vda", 10);
  ASSERT_EQ(web->size(), 1u);
  const json& got = web->back().counters;
  EXPECT_EQ(got["ssd-dirty-bytes"], 8192);
  EXPECT_EQ(got["ssd-failed"], true);
  EXPECT_EQ(got["origin-id"], std::string(kWeb) + "/vda");
  EXPECT_EQ(got["admit-after"], 1);
  metrics::Snapshot snap;
  snap.disks = c.Latest();
  snap.assignments = *store_->ListAssignments();
  std::string text = metrics::Render(snap);
  const std::string web_labels = "{domain=\"web\",target_device=\"vda\",policy=\"balanced\"}";
  EXPECT_NE(text.find("hostcache_ssd_dirty_bytes" + web_labels + " 8192"), std::string::npos)
      << text;
  EXPECT_NE(text.find("hostcache_ssd_failed" + web_labels + " 1"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE hostcache_ssd_failed gauge"), std::string::npos);
  EXPECT_EQ(text.find("hostcache_ssd_failed{domain=\"db\""), std::string::npos) << text;
  EXPECT_EQ(text.find("hostcache_ssd_dirty_bytes{domain=\"db\""), std::string::npos) << text;
  // Nothing reports them: no family at all (no header without samples).
  q.report_options = false;
  clock_.now_ms += 10000;
  c.CollectOnce();
  snap.disks = c.Latest();
  text = metrics::Render(snap);
  EXPECT_EQ(text.find("hostcache_ssd_failed"), std::string::npos) << text;
  EXPECT_EQ(text.find("hostcache_ssd_dirty_bytes"), std::string::npos) << text;
}

TEST_F(CollectorTest, AStoppedVmsLastSampleIsNotCurrent) {
  StatsCollector c(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  c.CollectOnce();
  ASSERT_EQ(c.Latest().size(), 2u);
  lv_.domains[kDb].active = false;
  clock_.now_ms += 10000;
  c.CollectOnce();
  auto latest = c.Latest();
  ASSERT_EQ(latest.size(), 1u);
  EXPECT_EQ(latest[0].vm_uuid, kWeb);
  // The series stays in the store.
  EXPECT_EQ(store_->ListStats(kDb, "vdb", 10)->size(), 1u);
}

TEST_F(CollectorTest, AHungVmDoesNotStopTheOthers) {
  boost::asio::thread_pool pool(2);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> blocked{0};
  lv_.on_qmp = [&](const std::string& uuid) {
    if (uuid == kWeb) {
      blocked++;
      released.wait();
    }
  };
  StatsCollector c(*store_, lv_, clock_,
                   [&](std::function<void()> fn) { boost::asio::post(pool, std::move(fn)); });
  c.CollectOnce();
  // db's sample arrives while web hangs.
  for (int i = 0; i < 500 && store_->ListStats(kDb, "vdb", 10)->empty(); i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(store_->ListStats(kDb, "vdb", 10)->size(), 1u);
  clock_.now_ms += 10000;
  c.CollectOnce();  // web is still in flight: skipped, db collected again
  for (int i = 0; i < 500 && store_->ListStats(kDb, "vdb", 10)->size() < 2; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(store_->ListStats(kDb, "vdb", 10)->size(), 2u);
  EXPECT_EQ(c.VmStates()["web"].skipped, 1u);
  EXPECT_EQ(blocked.load(), 1);
  release.set_value();
  c.Drain();
  pool.join();
  EXPECT_EQ(store_->ListStats(kWeb, "vda", 10)->size(), 1u);
}

TEST_F(CollectorTest, AFailingVmIsCountedAndOthersContinue) {
  lv_.domains[kWeb].qemu.fail["query-blockstats"] = "monitor socket closed";
  StatsCollector c(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  c.CollectOnce();
  EXPECT_EQ(c.VmStates()["web"].errors, 1u);
  EXPECT_NE(c.VmStates()["web"].last_error.find("monitor socket closed"), std::string::npos);
  EXPECT_EQ(store_->ListStats(kDb, "vdb", 10)->size(), 1u);
}

TEST_F(CollectorTest, RepliesOfAnUnexpectedShapeAreCountedNotThrown) {
  const std::function<void(json&)> changes[] = {
      [](json& r) {
        for (auto& e : r["return"]) e["node-name"] = 1;
      },
      [](json& r) {
        for (auto& e : r["return"]) e["driver-specific"] = json{{"driver", 7}, {"mode", 1}};
      },
      [](json& r) { r["return"] = 5; },
      [](json& r) { r = json{{"error", json::array()}}; },
  };
  StatsCollector c(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  uint64_t errors = 0;
  for (const auto& change : changes) {
    lv_.domains[kWeb].qemu.mangle = [&](const std::string&, json& reply) { change(reply); };
    clock_.now_ms += 10000;
    EXPECT_NO_THROW(c.CollectOnce());
    errors = c.VmStates()["web"].errors;
  }
  EXPECT_EQ(errors, 2u) << "a reply that is no list and a QMP error";
  EXPECT_TRUE(store_->ListStats(kWeb, "vda", 10)->empty());
  // db went on being sampled.
  EXPECT_EQ(store_->ListStats(kDb, "vdb", 10)->size(), 4u);
  // The exposition copes with what was stored.
  metrics::Snapshot snap;
  snap.disks = {DiskSnapshot{kWeb, "web", "vda", "balanced", 1, json{{"mode", 3}}}};
  EXPECT_NO_THROW(metrics::Render(snap));
}

TEST_F(CollectorTest, PrometheusUsesLibvirtExporterLabels) {
  StatsCollector c(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  c.CollectOnce();
  metrics::Snapshot snap;
  snap.disks = c.Latest();
  ASSERT_FALSE(snap.disks.empty());
  // A disk with an SSD tier, switched off by an SSD error.
  auto& sd = snap.disks[0];
  sd.counters["ssd-hits"] = 7;
  sd.counters["ssd-active"] = false;
  const std::string sd_labels = "{domain=\"" + sd.vm_name + "\",target_device=\"" + sd.target +
                                "\",policy=\"" + sd.policy + "\"}";
  snap.assignments = *store_->ListAssignments();
  snap.libvirt_connected = true;
  std::string text = metrics::Render(snap);
  EXPECT_NE(text.find("hostcache_ssd_hits_total" + sd_labels + " 7"), std::string::npos) << text;
  EXPECT_NE(text.find("hostcache_ssd_active" + sd_labels + " 0"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE hostcache_read_hits_total counter"), std::string::npos);
  EXPECT_NE(text.find("hostcache_read_hits_total{domain=\"web\",target_device=\"vda\","
                      "policy=\"balanced\"} 10"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("hostcache_mode_info{domain=\"db\",target_device=\"vdb\","
                      "policy=\"read-mostly\",mode=\"write-around\"} 1"),
            std::string::npos)
      << text;
  // Every sample line is NAME{labels} VALUE or NAME VALUE.
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    EXPECT_NO_THROW(std::stod(line.substr(sp + 1))) << line;
  }
  EXPECT_EQ(metrics::EscapeLabel("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

// Every statistic the driver reports: the members of
// BlockStatsSpecificHostcache in its QAPI schema, each with a value.
json EveryDriverStatistic(int disk) {
  const std::string patch = std::string(HC_SOURCE_ROOT) +
                            "/qemu-block-driver/patches/0001-hostcache-qapi-and-build.patch";
  std::ifstream in(patch);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string head = "'struct': 'BlockStatsSpecificHostcache'";
  const size_t at = text.find(head);
  EXPECT_NE(at, std::string::npos) << patch;
  if (at == std::string::npos) return json::object();
  const size_t end = text.find("} }", at);
  const std::regex member(R"('\*?([a-z0-9-]+)': '(\w+)')");
  json c = json::object();
  int i = 0;
  for (auto it = std::sregex_iterator(text.begin() + static_cast<long>(at + head.size()),
                                      text.begin() + static_cast<long>(end), member);
       it != std::sregex_iterator(); ++it, ++i) {
    const std::string name = (*it)[1], type = (*it)[2];
    if (type == "bool") {
      c[name] = (i + disk) % 2 == 0;
    } else if (type == "str") {
      c[name] = "origin \"" + std::to_string(disk) + "\"";
    } else if (type == "HostcacheMode") {
      c[name] = disk % 2 ? "write-back" : "write-through";
    } else {
      c[name] = uint64_t{1000003} * (i + 1) * (disk + 1);
    }
  }
  EXPECT_GT(c.size(), 40u) << "members of BlockStatsSpecificHostcache in " << patch;
  return c;
}

// The exposition with several disks (every statistic, awkward names)
// passes `promtool check metrics`: the format parses, HELP and TYPE are
// there once per family, counters end in _total, units are base units.
TEST_F(CollectorTest, TheExpositionPassesPromtool) {
  const char* promtool = "/usr/bin/promtool";
  ASSERT_EQ(access(promtool, X_OK), 0)
      << promtool << " missing: scripts/setup-deps.sh installs it (Debian package prometheus)";
  metrics::Snapshot snap;
  const std::vector<std::array<std::string, 4>> disks = {
      {kWeb, "web", "vda", "balanced"},
      {kWeb, "web", "vdb", "balanced"},
      {kDb, "db", "vdb", "read-mostly"},
      {"0f0f0f0f-1d2e-4f50-8a9b-0c1d2e3f4a5b", "we\"ird\\vm\nname", "sda", "p-1"}};
  for (size_t i = 0; i < disks.size(); i++) {
    const auto& [uuid, name, target, policy] = disks[i];
    snap.disks.push_back(stats::DiskSnapshot{uuid, name, target, policy,
                                             1700000000000 + static_cast<int64_t>(i),
                                             EveryDriverStatistic(static_cast<int>(i))});
    store::Assignment a;
    a.vm_uuid = uuid;
    a.vm_name = name;
    a.target = target;
    a.policy = policy;
    a.state = i % 2 ? store::Compliance::kPendingRestart : store::Compliance::kCompliant;
    snap.assignments.push_back(a);
  }
  snap.collectors["web"] = VmCollectorState{2, 1, "boom"};
  snap.collectors["we\"ird\\vm\nname"] = VmCollectorState{};
  snap.budget = core::BudgetView{4ull << 30, 1ull << 30, 8ull << 30, 0};
  snap.libvirt_connected = true;
  const std::string text = metrics::Render(snap);
  for (const char* family : {"hostcache_read_hits_total", "hostcache_ssd_hits_total",
                             "hostcache_flush_latency_p99_seconds", "hostcache_ssd_failed",
                             "hostcache_mode_info", "hostcached_stats_errors_total"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
  }
  const testing::ScratchDir dir("hcprom-");
  const std::string path = dir.path() + "/metrics.txt";
  std::ofstream(path) << text;
  auto r = RunProcess({"/bin/sh", "-c", std::string("exec ") + promtool + " check metrics < \"$0\"",
                       path},
                      60000);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->exit_code, 0) << r->out << r->err << "\n--- the text ---\n" << text;
  EXPECT_EQ(r->out + r->err, "") << text;
}

}  // namespace
}  // namespace hc::stats
