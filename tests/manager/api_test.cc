// The REST API without sockets: routing, authentication, problem documents,
// input validation, and the OpenAPI document against the router.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include <gtest/gtest.h>

#include "common/util.h"
#include "fakes.h"
#include "manager/http/api.h"
#include "manager/http/static_files.h"
#include "manager/stats/collector.h"
#include "manager/store/sqlite_store.h"

namespace hc::http {
namespace {

using nlohmann::json;
using testing::TestData;

constexpr const char* kToken = "0123456789abcdef0123456789abcdef";
constexpr const char* kWeb = "6a2f3b4c-1d2e-4f50-8a9b-0c1d2e3f4a5b";

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(*store::SqliteStore::Open(":memory:", clock_.now_ms));
    lv_.Add(kWeb, "web", TestData("web.inactive.xml"), TestData("web.live.xml"));
    core::ManagerConfig cfg;
    cfg.ram_budget = 1ull << 30;
    cfg.ssd_roots = *core::SsdRoots::Make({ssd_root_.path()});
    mgr_ = std::make_unique<core::Manager>(*store_, lv_, tools_, clock_, cfg, nullptr, &locks_,
                                           &registry_);
    migration::MigratorConfig mcfg;
    mcfg.peers = *core::Peers::Parse({"host2=qemu+ssh://host2/system"},
                                     {"host2=tcp://10.0.0.2"});
    migrator_ = std::make_unique<migration::Migrator>(*mgr_, registry_, *store_, lv_, tools_,
                                                      clock_, mcfg);
    api_ = std::make_unique<Api>(*mgr_, *store_, nullptr, kToken, "test", nullptr,
                                 migrator_.get());
  }
  Response Call(const std::string& method, const std::string& target, const std::string& body = "",
                bool auth = true) {
    return api_->Handle(
        Request{method, target, auth ? std::string("Bearer ") + kToken : "", body});
  }
  json Body(const Response& r) { return json::parse(r.body); }
  // With an SSD budget: policy "ssd" (a 1M tier in `dir`) assigned to vda
  // of web, shut off; the answer to the assignment.
  Response AssignSsdPolicy(const std::string& dir) {
    core::ManagerConfig cfg;
    cfg.ram_budget = 1ull << 30;
    cfg.ssd_budget = 1ull << 30;
    cfg.ssd_roots = *core::SsdRoots::Make({dir});
    mgr_ = std::make_unique<core::Manager>(*store_, lv_, tools_, clock_, cfg);
    api_ = std::make_unique<Api>(*mgr_, *store_, nullptr, kToken, "test");
    json pol{{"name", "ssd"}, {"rules", {{"ssd-size", "1M"}, {"ssd-dir", dir}}}};
    EXPECT_EQ(Call("POST", "/api/v1/policies", pol.dump()).status, 201);
    lv_.domains[kWeb].active = false;
    return Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"ssd"})");
  }
  std::string Snapshot() {
    json j;
    auto pols = store_->ListPolicies();
    auto as = store_->ListAssignments();
    for (const auto& p : *pols) j["p"].push_back(policy::PolicyToJson(p));
    for (const auto& a : *as) j["a"].push_back(a.vm_uuid + a.target + a.policy);
    return j.dump();
  }

  const testing::ScratchDir ssd_root_{"hcapi-ssd-root-"};
  testing::FakeClock clock_;
  testing::FakeLibvirt lv_;
  testing::FakeQemuTools tools_;
  std::unique_ptr<store::SqliteStore> store_;
  core::VmLocks locks_;
  migration::Registry registry_{locks_, clock_};
  std::unique_ptr<core::Manager> mgr_;
  std::unique_ptr<migration::Migrator> migrator_;
  std::unique_ptr<Api> api_;
};

TEST_F(ApiTest, HealthNeedsNoTokenEverythingElseDoes) {
  auto h = Call("GET", "/api/v1/health", "", false);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(Body(h)["libvirt"], "connected");
  for (const auto& r : Api::Routes()) {
    if (!r.auth) continue;
    std::string target = r.pattern;
    for (auto [from, to] : {std::pair{"{name}", "balanced"}, {"{vm}", "web"}, {"{target}", "vda"}}) {
      auto pos = target.find(from);
      if (pos != std::string::npos) target.replace(pos, std::string(from).size(), to);
    }
    for (const std::string& auth : {std::string(""), std::string("Bearer wrong"),
                                    std::string(kToken), std::string("Basic ") + kToken}) {
      auto resp = api_->Handle(Request{r.method, target, auth, "{}"});
      EXPECT_EQ(resp.status, 401) << r.method << " " << target << " with '" << auth << "'";
      EXPECT_EQ(resp.content_type, "application/problem+json");
    }
  }
}

TEST_F(ApiTest, ErrorsAreProblemDocuments) {
  auto r = Call("GET", "/api/v1/policies/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/problem+json");
  auto j = Body(r);
  EXPECT_EQ(j["status"], 404);
  EXPECT_EQ(j["title"], "Not Found");
  EXPECT_EQ(j["code"], "not-found");
  EXPECT_NE(j["detail"].get<std::string>().find("nope"), std::string::npos);
  EXPECT_EQ(Call("GET", "/api/v1/nothing").status, 404);
  EXPECT_EQ(Call("GET", "/other").status, 404);
  auto m = Call("PATCH", "/api/v1/policies/balanced");
  EXPECT_EQ(m.status, 405);
  ASSERT_FALSE(m.headers.empty());
  EXPECT_EQ(m.headers[0].first, "Allow");
  EXPECT_NE(m.headers[0].second.find("PUT"), std::string::npos);
}

TEST_F(ApiTest, PolicyCrud) {
  auto c = Call("POST", "/api/v1/policies",
                R"({"name":"db","description":"databases","rules":{"mode":"write-around","ram-size":"512M"}})");
  ASSERT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(Body(c)["rules"]["ram-size"], 512 << 20);
  EXPECT_EQ(c.headers[0], (std::pair<std::string, std::string>{"Location", "/api/v1/policies/db"}));
  EXPECT_EQ(Call("POST", "/api/v1/policies", R"({"name":"db"})").status, 409);
  auto list = Body(Call("GET", "/api/v1/policies"));
  EXPECT_EQ(list["policies"].size(), 4u);
  auto u = Call("PUT", "/api/v1/policies/db", R"({"rules":{"admit-after":3}})");
  ASSERT_EQ(u.status, 200) << u.body;
  auto g = Body(Call("GET", "/api/v1/policies/db"));
  EXPECT_EQ(g["rules"]["admit-after"], 3);
  EXPECT_EQ(g["rules"]["mode"], "write-around") << "rules not given keep their value";
  EXPECT_EQ(g["description"], "databases");
  EXPECT_EQ(Call("DELETE", "/api/v1/policies/db").status, 204);
  EXPECT_EQ(Call("GET", "/api/v1/policies/db").status, 404);
  EXPECT_EQ(Call("DELETE", "/api/v1/policies/db").status, 404);
}

TEST_F(ApiTest, HostileInputIsRefusedAndChangesNothing) {
  std::string before = Snapshot();
  const char* bodies[] = {
      "", "not json", "[1,2]", "{\"name\": 5}", "{\"name\":\"a b\"}",
      "{\"name\":\"x\",\"rules\":{\"block-size\":3000}}",
      "{\"name\":\"x\",\"rules\":{\"ram-size\":-5}}",
      "{\"name\":\"x\",\"rules\":{\"mode\":\"write-back\",\"bogus\":1}}",
      "{\"name\":\"x'); DROP TABLE policies;--\"}",
      "{\"name\":\"x\",\"extra\":true}",
      "{\"name\":\"x\",\"rules\":{\"ram-size\":\"99999999999999999999999T\"}}",
      "{\"name\":\"x\",\"rules\":{\"admit-after\":1e99}}",
  };
  for (const char* b : bodies) {
    auto r = Call("POST", "/api/v1/policies", b);
    EXPECT_EQ(r.status, 400) << b << " -> " << r.body;
    EXPECT_EQ(r.content_type, "application/problem+json");
  }
  for (const char* b : {"{\"rules\":{\"block-size\":100}}", "{\"name\":\"other\"}",
                        "{\"rules\":{\"mode\":\"fast\"}}", "{\"description\":[]}", "nope"}) {
    EXPECT_EQ(Call("PUT", "/api/v1/policies/balanced", b).status, 400) << b;
  }
  for (const char* b : {"", "{}", "{\"policy\":1}", "{\"policy\":\"nope\"}",
                        "{\"policy\":\"balanced\",\"x\":1}"}) {
    EXPECT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", b).status, 400) << b;
  }
  EXPECT_EQ(Call("PUT", "/api/v1/vms/web/disks/..%2F..%2Fetc/policy", "{\"policy\":\"balanced\"}")
                .status,
            400);
  EXPECT_EQ(Call("PUT", "/api/v1/vms/nope/disks/vda/policy", "{\"policy\":\"balanced\"}").status,
            404);
  EXPECT_EQ(Call("GET", "/api/v1/events?limit=0").status, 400);
  EXPECT_EQ(Call("GET", "/api/v1/events?since=-1").status, 400);
  EXPECT_EQ(Call("GET", "/api/v1/events?limit=1;DROP").status, 400);
  EXPECT_EQ(Call("GET", "/api/v1/vms/web/disks/vda/stats?points=100000").status, 400);
  EXPECT_EQ(Call("GET", "/api/v1/%zz").status, 400);
  EXPECT_EQ(Snapshot(), before);
  EXPECT_TRUE(lv_.domains[kWeb].qemu.log.empty());
}

TEST_F(ApiTest, NamesWithANulOrBytesThatAreNotUtf8AreRefused) {
  // libvirt's C API would see "web" (the name ends at the NUL).
  for (const char* target :
       {"/api/v1/vms/web%00zzz", "/api/v1/vms/%FF", "/api/v1/vms/web/disks/vda%00/policy",
        "/api/v1/vms/web%C3/migration-xml", "/api/v1/policies/balanced%00x",
        "/api/v1/events?vm=web%00x", "/api/v1/events?vm=%ED%A0%80"}) {
    auto r = Call("GET", target);
    EXPECT_EQ(r.status, 400) << target << " -> " << r.body;
    EXPECT_EQ(r.content_type, "application/problem+json");
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_NE(j["detail"].get<std::string>().find("NUL"), std::string::npos) << r.body;
  }
  EXPECT_EQ(Call("PUT", "/api/v1/vms/web%00x/disks/vda/policy", R"({"policy":"balanced"})").status,
            400);
  EXPECT_EQ(Call("DELETE", "/api/v1/vms/web%00/disks/vda/policy").status, 400);
  EXPECT_TRUE(store_->ListAssignments()->empty());
  // Well-formed UTF-8 is a name like any other.
  EXPECT_EQ(Call("GET", "/api/v1/vms/%C3%A9t%C3%A9").status, 404);
  EXPECT_EQ(Call("GET", "/api/v1/vms/web").status, 200);
}

TEST_F(ApiTest, ATierFileWhoseOriginIdIsNotUtf8IsReportedNotAnError500) {
  const testing::ScratchDir dir("hcapi-utf8-");
  const std::string file = dir.path() + "/" + kWeb + "-vda.hcssd";
  ASSERT_EQ(AssignSsdPolicy(dir.path()).status, 200);
  testing::WriteSsdSuperblock(file, 3, 1, std::string(kWeb) + "/vda");
  mgr_->CheckVm(kWeb);
  // The file now holds a tier whose origin-id (anyone who can write the
  // file chooses it) is not UTF-8; the check quotes it in the disk's reason
  // and the event log.
  testing::WriteSsdSuperblock(file, 4, 1, "\xff\xfe\xc3(other)");
  mgr_->CheckVm(kWeb);
  for (const char* target : {"/api/v1/vms", "/api/v1/vms/web", "/api/v1/vms/web/disks/vda/policy",
                             "/api/v1/events?limit=1000"}) {
    auto r = Call("GET", target);
    ASSERT_EQ(r.status, 200) << target << " -> " << r.body;
    EXPECT_TRUE(IsValidUtf8(r.body)) << target;
    EXPECT_NE(r.body.find("another origin"), std::string::npos) << target << " -> " << r.body;
    EXPECT_NE(r.body.find("\xef\xbf\xbd"), std::string::npos) << "U+FFFD in " << target;
  }
}

TEST_F(ApiTest, AssignShowAndUnassign) {
  auto a = Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})");
  ASSERT_EQ(a.status, 200) << a.body;
  auto j = Body(a);
  EXPECT_EQ(j["compliance"]["state"], "compliant") << j.dump();
  EXPECT_EQ(j["vm_uuid"], kWeb);
  auto vm = Body(Call("GET", std::string("/api/v1/vms/") + kWeb));
  EXPECT_EQ(vm["name"], "web");
  EXPECT_EQ(vm["state"], "running");
  ASSERT_EQ(vm["disks"].size(), 4u);
  EXPECT_EQ(vm["disks"][1]["target"], "vda");
  EXPECT_EQ(vm["disks"][1]["policy"], "balanced");
  EXPECT_EQ(vm["disks"][1]["source"], "/var/lib/libvirt/images/web-top.qcow2");
  EXPECT_EQ(vm["disks"][1]["compliance"]["state"], "compliant");
  EXPECT_TRUE(vm["disks"][2]["policy"].is_null());
  auto vms = Body(Call("GET", "/api/v1/vms"));
  ASSERT_EQ(vms["vms"].size(), 1u);
  EXPECT_EQ(vms["vms"][0]["disks"][0]["policy"], "balanced");
  auto dp = Body(Call("GET", "/api/v1/vms/web/disks/vda/policy"));
  EXPECT_EQ(dp["policy"], "balanced");
  // The XML to migrate it with: XML, carrying the filter.
  auto mx = Call("GET", "/api/v1/vms/web/migration-xml");
  ASSERT_EQ(mx.status, 200) << mx.body;
  EXPECT_EQ(mx.content_type, "application/xml");
  EXPECT_EQ(libvirt::ParseInstalledFilters(mx.body)->count("vda"), 1u) << mx.body;
  EXPECT_EQ(Call("GET", "/api/v1/vms/nope/migration-xml").status, 404);
  // Where its migration is: none, with the driver's figures per disk.
  auto mp = Call("GET", "/api/v1/vms/web/migration");
  ASSERT_EQ(mp.status, 200) << mp.body;
  auto mpj = Body(mp);
  EXPECT_EQ(mpj["phase"], "none");
  ASSERT_EQ(mpj["disks"].size(), 1u);
  EXPECT_EQ(mpj["disks"][0]["target"], "vda");
  EXPECT_EQ(mpj["disks"][0]["reported"], true);
  EXPECT_EQ(mpj["disks"][0]["warm_up"]["state"], "none");
  registry_.Set(kWeb, true, "switch-over");
  EXPECT_EQ(Body(Call("GET", "/api/v1/vms/web/migration"))["phase"], "switch-over");
  registry_.Set(kWeb, false);
  EXPECT_EQ(Call("GET", "/api/v1/vms/nope/migration").status, 404);
  EXPECT_EQ(Call("DELETE", "/api/v1/policies/balanced").status, 409);
  auto big = Call("POST", "/api/v1/policies", R"({"name":"big","rules":{"ram-size":"1G"}})");
  ASSERT_EQ(big.status, 201);
  auto over = Call("PUT", "/api/v1/vms/web/disks/vdb/policy", R"({"policy":"big"})");
  EXPECT_EQ(over.status, 409);
  EXPECT_NE(Body(over)["detail"].get<std::string>().find("budget"), std::string::npos);
  EXPECT_EQ(Call("DELETE", "/api/v1/vms/web/disks/vda/policy").status, 204);
  EXPECT_EQ(Call("GET", "/api/v1/vms/web/disks/vda/policy").status, 404);
  EXPECT_EQ(Call("DELETE", "/api/v1/vms/web/disks/vda/policy").status, 404);
}

TEST_F(ApiTest, LibvirtDownIs503ButPoliciesStillWork) {
  lv_.alive = false;
  auto r = Call("GET", "/api/v1/vms");
  EXPECT_EQ(r.status, 503);
  bool retry = false;
  for (const auto& [k, v] : r.headers) retry |= k == "Retry-After";
  EXPECT_TRUE(retry);
  EXPECT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})").status,
            503);
  EXPECT_EQ(Call("GET", "/api/v1/policies").status, 200);
  auto h = Call("GET", "/api/v1/health", "", false);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(Body(h)["libvirt"], "disconnected");
}

// A cluster's catalogue whose etcd cannot be reached (the real one is
// tested against etcd in etcd_test.cc and test_cluster_etcd.py).
class DownCatalogue final : public store::PolicyCatalogue {
 public:
  explicit DownCatalogue(store::Store& s) : store_(s) {}
  Result<std::vector<policy::Policy>> List() override { return store_.ListPolicies(); }
  Result<policy::Policy> Get(const std::string& n) override { return store_.GetPolicy(n); }
  Status Create(const policy::Policy&, int64_t) override { return Down(); }
  Status Update(const policy::Policy&, int64_t) override { return Down(); }
  Status Delete(const std::string&) override { return Down(); }
  store::CatalogueState State() override {
    store::CatalogueState s;
    s.kind = "etcd";
    s.connected = false;
    s.endpoints = {"http://10.0.0.9:2379"};
    s.problem = "etcd at http://10.0.0.9:2379 is unreachable (Connection refused)";
    return s;
  }

 private:
  Status Down() {
    return Fail(ErrorCode::kUnavailable, State().problem + "; policy changes are refused");
  }
  store::Store& store_;
};

TEST_F(ApiTest, CatalogueDownIs503ForPolicyChangesAndReportedInHealthAndMetrics) {
  auto local = Body(Call("GET", "/api/v1/health", "", false));
  EXPECT_EQ(local["catalogue"], (json{{"kind", "local"}, {"state", "connected"}})) << local;
  EXPECT_EQ(local["status"], "ok");

  DownCatalogue cat(*store_);
  core::ManagerConfig cfg;
  cfg.ram_budget = 1ull << 30;
  mgr_ = std::make_unique<core::Manager>(*store_, lv_, tools_, clock_, cfg, &cat);
  api_ = std::make_unique<Api>(*mgr_, *store_, nullptr, kToken, "test");
  const std::string before = Snapshot();
  for (auto [method, target, body] :
       {std::tuple{"POST", "/api/v1/policies", R"({"name":"new","rules":{}})"},
        {"PUT", "/api/v1/policies/balanced", R"({"rules":{"ram-size":"64M"}})"},
        {"DELETE", "/api/v1/policies/balanced", ""}}) {
    auto r = Call(method, target, body);
    EXPECT_EQ(r.status, 503) << method << " " << target;
    EXPECT_NE(Body(r)["detail"].get<std::string>().find(
                  "etcd at http://10.0.0.9:2379 is unreachable"),
              std::string::npos)
        << r.body;
  }
  EXPECT_EQ(Snapshot(), before);
  EXPECT_EQ(Call("GET", "/api/v1/policies").status, 200);
  // Caching goes on: assignments still work with the policies this host has.
  EXPECT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})").status,
            200);
  auto h = Call("GET", "/api/v1/health", "", false);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(Body(h)["status"], "degraded");
  EXPECT_EQ(Body(h)["catalogue"]["state"], "disconnected");
  EXPECT_NE(Body(h)["catalogue"]["problem"].get<std::string>().find("unreachable"),
            std::string::npos);
  auto m = Call("GET", "/api/v1/metrics");
  EXPECT_NE(m.body.find("hostcached_catalogue_connected{kind=\"etcd\"} 0"), std::string::npos)
      << m.body;
}

TEST_F(ApiTest, APolicyChangedInTheClusterIsReappliedAndABudgetOverrunReported) {
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})").status,
            200);
  auto p = store_->GetPolicy("balanced");
  ASSERT_TRUE(p);
  p->rules.ram_size = 2ull << 30;  // over the 1 GiB budget, as another host wrote it
  ASSERT_TRUE(store_->UpdatePolicy(*p, clock_.now_ms));
  mgr_->OnCatalogueChange({"balanced", store::PolicyChange::Kind::kUpdated, 42});
  auto ev = Body(Call("GET", "/api/v1/events?action=policy-sync"))["events"];
  bool reapplied = false, over = false;
  for (const auto& e : ev) {
    const std::string m = e["message"];
    reapplied |= m.find("re-applying it to 1 disk(s)") != std::string::npos &&
                 m.find("revision 42") != std::string::npos;
    over |= e["level"] == "warning" && m.find("over this host's budget") != std::string::npos;
  }
  EXPECT_TRUE(reapplied) << ev;
  EXPECT_TRUE(over) << ev;
  // The running VM's filter was reopened with the cluster's rules.
  auto reopen = Body(Call("GET", "/api/v1/events?action=reopen-live"))["events"];
  ASSERT_EQ(reopen.size(), 1u) << reopen;
  EXPECT_NE(reopen[0]["message"].get<std::string>().find("the policy says 2G"), std::string::npos)
      << reopen;
}

TEST_F(ApiTest, StatsAndEventsAndMetrics) {
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})").status, 200);
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(store_->AppendStats(kWeb, "vda", store::StatSample{1000 + i * 10,
                                                                  json{{"read-hits", 3 * i},
                                                                       {"read-misses", i}}}));
  }
  auto s = Body(Call("GET", "/api/v1/vms/web/disks/vda/stats?points=3"));
  ASSERT_EQ(s["series"].size(), 3u);
  EXPECT_EQ(s["series"][2]["counters"]["read-hits"], 12);
  EXPECT_DOUBLE_EQ(s["current"]["hit_ratio"].get<double>(), 0.75);
  EXPECT_EQ(Call("GET", "/api/v1/vms/web/disks/vdb/stats").status, 404);
  auto ev = Body(Call("GET", "/api/v1/events?limit=2"));
  EXPECT_EQ(ev["events"].size(), 2u);
  auto m = Call("GET", "/api/v1/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.content_type.rfind("text/plain; version=0.0.4", 0), 0u);
  EXPECT_NE(m.body.find("hostcache_disk_compliance{domain=\"web\",target_device=\"vda\","
                        "policy=\"balanced\",state=\"compliant\"} 1"),
            std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("hostcached_ram_assigned_bytes 268435456"), std::string::npos);
  EXPECT_NE(m.body.find("hostcached_libvirt_connected 1"), std::string::npos);
  // Where Prometheus scrapes by default: the same text, the same token rule.
  auto root = Call("GET", "/metrics");
  EXPECT_EQ(root.status, 200);
  EXPECT_EQ(root.content_type, m.content_type);
  EXPECT_EQ(root.body, m.body);
  EXPECT_EQ(Call("GET", "/metrics", "", false).status, 401);
  EXPECT_EQ(Call("GET", "/metrics", "", false).content_type, "application/problem+json");
  EXPECT_EQ(Call("POST", "/metrics").status, 405);
  EXPECT_EQ(Call("GET", "/metrics/x").status, 404);
  EXPECT_EQ(Call("GET", "/health").status, 404);  // only /metrics is at the root
  // with a dashboard served at the root too, /metrics stays the API's
  StaticFiles web("/nonexistent-web-dir");
  Api with_web(*mgr_, *store_, nullptr, kToken, "test", &web);
  EXPECT_EQ(with_web.Handle(Request{"GET", "/metrics", "", ""}).status, 401);
  EXPECT_EQ(with_web.Handle(Request{"GET", "/metrics", std::string("Bearer ") + kToken, ""})
                .status, 200);
}

TEST_F(ApiTest, OpenApiDocumentMatchesTheRouter) {
  const json& doc = Api::OpenApi();
  EXPECT_EQ(doc["openapi"].get<std::string>().rfind("3.0", 0), 0u);
  std::set<std::pair<std::string, std::string>> routes, documented;
  for (const auto& r : Api::Routes()) {
    std::string m = r.method;
    std::transform(m.begin(), m.end(), m.begin(), ::tolower);
    routes.insert({r.pattern, m});
    ASSERT_TRUE(doc["paths"].contains(r.pattern)) << r.pattern;
    const json& op = doc["paths"][r.pattern][m];
    ASSERT_TRUE(op.is_object()) << r.method << " " << r.pattern;
    EXPECT_TRUE(op.contains("operationId"));
    EXPECT_TRUE(op.contains("responses"));
    bool public_op = op.contains("security") && op["security"].empty();
    EXPECT_EQ(public_op, !r.auth) << r.pattern;
    if (r.auth) {
      EXPECT_TRUE(op["responses"].contains("401")) << r.pattern;
    }
    // Every {placeholder} is a documented path parameter.
    size_t pos = 0;
    while ((pos = r.pattern.find('{', pos)) != std::string::npos) {
      std::string name = r.pattern.substr(pos + 1, r.pattern.find('}', pos) - pos - 1);
      bool found = false;
      for (const auto& p : op.value("parameters", json::array())) {
        found |= p["in"] == "path" && p["name"] == name && p["required"] == true;
      }
      EXPECT_TRUE(found) << r.pattern << " {" << name << "}";
      pos++;
    }
  }
  for (auto it = doc["paths"].begin(); it != doc["paths"].end(); ++it) {
    for (auto op = it.value().begin(); op != it.value().end(); ++op) {
      documented.insert({it.key(), op.key()});
    }
  }
  EXPECT_EQ(routes, documented);
  // Every $ref resolves.
  std::function<void(const json&)> check = [&](const json& j) {
    if (j.is_object()) {
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "$ref") {
          std::string ref = it.value();
          ASSERT_EQ(ref.rfind("#/components/schemas/", 0), 0u);
          EXPECT_TRUE(doc["components"]["schemas"].contains(ref.substr(21))) << ref;
        } else {
          check(it.value());
        }
      }
    } else if (j.is_array()) {
      for (const auto& e : j) check(e);
    }
  };
  check(doc);
  // The rule names in the schema are exactly the ones the policy code takes.
  std::set<std::string> rule_props, rule_names(policy::RuleNames().begin(),
                                               policy::RuleNames().end());
  for (auto it = doc["components"]["schemas"]["Rules"]["properties"].begin();
       it != doc["components"]["schemas"]["Rules"]["properties"].end(); ++it) {
    rule_props.insert(it.key());
  }
  EXPECT_EQ(rule_props, rule_names);
  auto served = Call("GET", "/api/v1/openapi.json");
  EXPECT_EQ(served.status, 200);
  EXPECT_EQ(json::parse(served.body), doc);
}

TEST_F(ApiTest, ALostSsdTierIsForgottenOverTheApi) {
  const testing::ScratchDir dir("hcapi-ssd-");
  const std::string file = dir.path() + "/" + kWeb + "-vda.hcssd";
  auto a = AssignSsdPolicy(dir.path());
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(Body(a)["ssd_tier"]["path"], file);
  EXPECT_EQ(Body(a)["ssd_tier"]["formatted"], false);
  // Not a lost tier (nothing formatted it yet), but the disk without a
  // tier has none to forget.
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vdb/policy", R"({"policy":"balanced"})").status,
            200);
  EXPECT_EQ(Body(Call("GET", "/api/v1/vms/web/disks/vdb/policy"))["ssd_tier"], nullptr);
  auto none = Call("POST", "/api/v1/vms/web/disks/vdb/ssd-tier/forget");
  EXPECT_EQ(none.status, 404) << none.body;
  EXPECT_NE(Body(none)["detail"].get<std::string>().find("no SSD tier"), std::string::npos);
  // The VM ran (the driver formatted the tier), then the file was lost.
  testing::WriteSsdSuperblock(file, 3, 2, std::string(kWeb) + "/vda");
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Body(Call("GET", "/api/v1/vms/web/disks/vda/policy"))["ssd_tier"]["formatted"], true);
  auto intact = Call("POST", "/api/v1/vms/web/disks/vda/ssd-tier/forget");
  EXPECT_EQ(intact.status, 409) << intact.body;
  std::filesystem::remove(file);
  mgr_->CheckVm(kWeb);
  auto g = Body(Call("GET", "/api/v1/vms/web/disks/vda/policy"));
  EXPECT_EQ(g["compliance"]["state"], "error");
  EXPECT_NE(g["compliance"]["reason"].get<std::string>().find("forget"), std::string::npos);
  EXPECT_EQ(Call("POST", "/api/v1/vms/web/disks/vda/ssd-tier/forget", "[1]").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/vms/web/disks/vda/ssd-tier/forget", "", false).status, 401);
  auto f = Call("POST", "/api/v1/vms/web/disks/vda/ssd-tier/forget", "{}");
  ASSERT_EQ(f.status, 200) << f.body;
  EXPECT_EQ(Body(f)["compliance"]["state"], "pending-restart");
  EXPECT_EQ(Body(f)["ssd_tier"]["formatted"], false);
  EXPECT_TRUE(std::filesystem::exists(file)) << "a new blank tier";
  auto evs = Body(Call("GET", "/api/v1/events?vm=web&limit=100"))["events"];
  EXPECT_TRUE(std::any_of(evs.begin(), evs.end(),
                          [](const json& e) { return e["action"] == "ssd-forget"; }));
  EXPECT_EQ(Call("GET", "/api/v1/vms/web/disks/vda/ssd-tier/forget").status, 405);
}

TEST_F(ApiTest, MigrateTakesADrainTimeout) {
  ASSERT_EQ(Call("POST", "/api/v1/policies", R"({"name":"wb","rules":{"mode":"write-back"}})")
                .status,
            201);
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"wb"})").status, 200);
  for (const char* bad : {R"({"destination":"qemu:///x","drain_timeout_s":-1})",
                          R"({"destination":"qemu:///x","drain_timeout_s":"5"})",
                          R"({"destination":"qemu:///x","drain_timeout_s":4000})"}) {
    auto r = Call("POST", "/api/v1/vms/web/migrate", bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_NE(r.body.find("drain_timeout_s"), std::string::npos) << r.body;
  }
  EXPECT_TRUE(lv_.migrations.empty());
  // 0: no drain (the filter is not reopened), the migration happens.
  auto& q = lv_.domains[kWeb].qemu;
  q.log.clear();
  auto r = Call("POST", "/api/v1/vms/web/migrate",
                R"({"destination":"host2","drain_timeout_s":0})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["destination"], "host2");
  EXPECT_EQ(lv_.migrations[0].destination, "qemu+ssh://host2/system");
  ASSERT_EQ(lv_.migrations.size(), 1u);
  EXPECT_EQ(std::count(q.log.begin(), q.log.end(), "blockdev-reopen"), 0);
  // The document describes the field.
  const json& body = Api::OpenApi()["paths"]["/api/v1/vms/{vm}/migrate"]["post"]["requestBody"];
  EXPECT_TRUE(body["content"]["application/json"]["schema"]["properties"].contains(
      "drain_timeout_s"))
      << body.dump();
}


TEST_F(ApiTest, SummaryAddsUpTheHost) {
  core::ManagerConfig cfg;
  cfg.ram_budget = 4ull << 30;
  mgr_ = std::make_unique<core::Manager>(*store_, lv_, tools_, clock_, cfg);
  stats::StatsCollector collector(*store_, lv_, clock_, [](std::function<void()> fn) { fn(); });
  api_ = std::make_unique<Api>(*mgr_, *store_, &collector, kToken, "test");
  // Before any assignment or sample.
  auto empty = Body(Call("GET", "/api/v1/summary"));
  EXPECT_EQ(empty["disks"]["total"], 0);
  EXPECT_EQ(empty["disks"]["states"]["compliant"], 0);
  EXPECT_EQ(empty["io"]["hit_ratio"], nullptr);
  EXPECT_EQ(empty["io"]["hit_latency_avg_ns"], nullptr);
  EXPECT_EQ(empty["ram"]["free"], 4ull << 30);
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})").status, 200);
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vdb/policy", R"({"policy":"read-mostly"})").status,
            200);
  auto& q = lv_.domains[kWeb].qemu;
  q.counters["hc-vda"] = json{{"read-hits", 30},          {"read-misses", 10},
                              {"hit-latency-avg-ns", 2000}, {"miss-latency-avg-ns", 5000000},
                              {"hit-latency-p99-ns", 8000}, {"miss-latency-p99-ns", 9000000},
                              {"ram-used", 1 << 20}};
  q.counters["hc-vdb"] = json{{"read-hits", 10},          {"read-misses", 30},
                              {"hit-latency-avg-ns", 4000}, {"miss-latency-avg-ns", 3000000},
                              {"hit-latency-p99-ns", 20000}, {"miss-latency-p99-ns", 4000000},
                              {"ram-used", 2 << 20},      {"dirty-bytes", 4096}};
  collector.CollectOnce();
  auto r = Call("GET", "/api/v1/summary");
  ASSERT_EQ(r.status, 200) << r.body;
  auto s = Body(r);
  EXPECT_EQ(s["version"], "test");
  EXPECT_EQ(s["libvirt"], "connected");
  const uint64_t reserved = (256ull << 20) + (1ull << 30);
  EXPECT_EQ(s["ram"]["budget"], 4ull << 30);
  EXPECT_EQ(s["ram"]["reserved"], reserved);
  EXPECT_EQ(s["ram"]["used"], 3 << 20);
  EXPECT_EQ(s["ram"]["free"], (4ull << 30) - reserved);
  EXPECT_EQ(s["ssd"]["budget"], 0);
  EXPECT_EQ(s["ssd"]["free"], 0);
  EXPECT_EQ(s["disks"]["total"], 2);
  EXPECT_EQ(s["disks"]["states"]["compliant"], 2);
  EXPECT_EQ(s["disks"]["states"]["error"], 0);
  EXPECT_EQ(s["io"]["disks_sampled"], 2);
  EXPECT_EQ(s["io"]["read_hits"], 40);
  EXPECT_EQ(s["io"]["read_misses"], 40);
  EXPECT_DOUBLE_EQ(s["io"]["hit_ratio"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(s["io"]["hit_latency_avg_ns"].get<double>(), 2500.0);
  EXPECT_DOUBLE_EQ(s["io"]["miss_latency_avg_ns"].get<double>(), 3500000.0);
  EXPECT_EQ(s["io"]["hit_latency_p99_ns"], 20000);
  EXPECT_EQ(s["io"]["miss_latency_p99_ns"], 9000000);
  EXPECT_EQ(s["io"]["dirty_bytes"], 4096);
  std::map<std::string, int> counts;
  for (const auto& p : s["policies"]) counts[p["name"]] = p["assigned_disks"];
  EXPECT_EQ(counts, (std::map<std::string, int>{{"balanced", 1}, {"monitor", 0},
                                                {"read-mostly", 1}}));
  // An unassigned disk leaves the figures at once.
  ASSERT_EQ(Call("DELETE", "/api/v1/vms/web/disks/vdb/policy").status, 204);
  s = Body(Call("GET", "/api/v1/summary"));
  EXPECT_EQ(s["io"]["read_hits"], 30);
  EXPECT_EQ(s["ram"]["used"], 1 << 20);
  EXPECT_EQ(s["ram"]["reserved"], 256 << 20);
  EXPECT_EQ(Call("GET", "/api/v1/summary", "", false).status, 401);
}

TEST_F(ApiTest, EventsFilterByVmAndAction) {
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})").status, 200);
  ASSERT_EQ(Call("DELETE", "/api/v1/vms/web/disks/vda/policy").status, 204);
  auto all = Body(Call("GET", "/api/v1/events?vm=web"))["events"];
  std::set<std::string> actions;
  for (const auto& e : all) actions.insert(e["action"]);
  ASSERT_TRUE(actions.count("assign") && actions.count("unassign")) << all.dump();
  auto assigns = Body(Call("GET", "/api/v1/events?vm=web&action=assign"))["events"];
  ASSERT_FALSE(assigns.empty());
  for (const auto& e : assigns) EXPECT_EQ(e["action"], "assign");
  EXPECT_TRUE(Body(Call("GET", "/api/v1/events?vm=other&action=assign"))["events"].empty());
  EXPECT_TRUE(Body(Call("GET", "/api/v1/events?action=no%27%20OR%201=1"))["events"].empty());
}

TEST_F(ApiTest, TheDashboardIsServedOutsideTheApiOnly) {
  const testing::ScratchDir dir("hcapi-web-");
  std::ofstream(dir.path() + "/index.html") << "<!doctype html>dashboard";
  StaticFiles web(dir.path());
  Api with_web(*mgr_, *store_, nullptr, kToken, "test", &web);
  auto call = [&](const std::string& target, bool auth = false) {
    return with_web.Handle(Request{"GET", target, auth ? std::string("Bearer ") + kToken : "", ""});
  };
  auto index = call("/");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.body, "<!doctype html>dashboard");
  EXPECT_EQ(index.content_type, "text/html; charset=utf-8");
  EXPECT_EQ(call("/api/v1/health").status, 200);
  EXPECT_EQ(call("/api/v1/policies").status, 401);
  EXPECT_EQ(call("/api/v1/policies", true).status, 200);
  // Unknown API paths stay the API's (not the dashboard's) 404.
  for (const char* t : {"/api", "/api/", "/api/v1/nope", "/api/index.html", "/api?x"}) {
    auto r = call(t, true);
    EXPECT_EQ(r.status, 404) << t;
    EXPECT_NE(r.body.find("openapi.json"), std::string::npos) << t << ": " << r.body;
  }
  EXPECT_EQ(call("/../index.html").status, 404);
  // Without a dashboard, / is the API's 404.
  auto none = Call("GET", "/");
  EXPECT_EQ(none.status, 404);
  EXPECT_NE(none.body.find("/api/v1"), std::string::npos);
}

TEST_F(ApiTest, MigrateGoesOnlyToAConfiguredPeer) {
  ASSERT_EQ(Call("PUT", "/api/v1/vms/web/disks/vda/policy", R"({"policy":"balanced"})").status,
            200);
  // (The issue's reproduction: libvirt's ext transport runs the command.)
  for (const char* bad :
       {R"({"destination":"qemu+ext:///system?command=/dev/shm/x"})",
        R"({"destination":"qemu+ssh://host2/system"})", R"({"destination":"host3"})",
        R"({"destination":""})", R"({"unsafe":true})"}) {
    auto r = Call("POST", "/api/v1/vms/web/migrate", bad);
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
    const std::string detail = Body(r).value("detail", "");
    EXPECT_NE(detail.find("the configured ones are host2"), std::string::npos) << detail;
    EXPECT_NE(detail.find("peer = NAME=qemu+tls://HOST/system"), std::string::npos) << detail;
  }
  // The stream goes to the peer's migration host, nowhere else.
  for (const char* bad : {R"({"destination":"host2","migrate_uri":"tcp://evil.example:4444"})",
                          R"({"destination":"host2","migrate_uri":"rdma://10.0.0.2"})",
                          R"({"destination":"host2","migrate_uri":"exec:/bin/sh"})"}) {
    auto r = Call("POST", "/api/v1/vms/web/migrate", bad);
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
  }
  EXPECT_TRUE(lv_.migrations.empty());
  auto ok = Call("POST", "/api/v1/vms/web/migrate", R"({"destination":"host2"})");
  ASSERT_EQ(ok.status, 200) << ok.body;
  ASSERT_EQ(lv_.migrations.size(), 1u);
  EXPECT_EQ(lv_.migrations[0].destination, "qemu+ssh://host2/system");
  EXPECT_EQ(lv_.migrations[0].migrate_uri, "tcp://10.0.0.2") << "the peer's peer-migrate-uri";
  lv_.domains[kWeb].active = true;
  auto port = Call("POST", "/api/v1/vms/web/migrate",
                   R"({"destination":"host2","migrate_uri":"tcp://10.0.0.2:49200"})");
  ASSERT_EQ(port.status, 200) << port.body;
  EXPECT_EQ(lv_.migrations.back().migrate_uri, "tcp://10.0.0.2:49200");
}

TEST_F(ApiTest, SsdDirMustLieUnderAnSsdRoot) {
  const std::string root = ssd_root_.path();
  for (const std::string& dir : {std::string("/etc"), root + "/../etc", std::string("/"),
                                 root + "-elsewhere"}) {
    json pol{{"name", "ssd"}, {"rules", {{"ssd-size", "1M"}, {"ssd-dir", dir}}}};
    auto r = Call("POST", "/api/v1/policies", pol.dump());
    EXPECT_EQ(r.status, 400) << dir << ": " << r.body;
    const std::string detail = Body(r).value("detail", "");
    EXPECT_NE(detail.find("not under an SSD root (" + root + ")"), std::string::npos) << detail;
    EXPECT_NE(detail.find("ssd-root = DIR"), std::string::npos) << detail;
  }
  // A link below the root to elsewhere is resolved and refused too.
  const testing::ScratchDir elsewhere("hcapi-elsewhere-");
  std::filesystem::create_directory_symlink(elsewhere.path(), root + "/link");
  json linked{{"name", "ssd"}, {"rules", {{"ssd-size", "1M"}, {"ssd-dir", root + "/link/t"}}}};
  EXPECT_EQ(Call("POST", "/api/v1/policies", linked.dump()).status, 400);
  // Under the root: stored canonical.
  json pol{{"name", "ssd"}, {"rules", {{"ssd-size", "1M"}, {"ssd-dir", root + "//fast/"}}}};
  auto c = Call("POST", "/api/v1/policies", pol.dump());
  ASSERT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(Body(c)["rules"]["ssd-dir"], root + "/fast");
  EXPECT_EQ(mgr_->GetPolicy("ssd")->rules.ssd_dir, root + "/fast");
  // A change to outside a root is refused and changes nothing.
  const std::string before = Snapshot();
  auto u = Call("PUT", "/api/v1/policies/ssd", R"({"rules":{"ssd-dir":"/var/tmp"}})");
  EXPECT_EQ(u.status, 400) << u.body;
  EXPECT_EQ(Snapshot(), before);
  auto ok = Call("PUT", "/api/v1/policies/ssd",
                 json{{"rules", {{"ssd-dir", root + "/./slow"}}}}.dump());
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(Body(ok)["rules"]["ssd-dir"], root + "/slow");
}

}  // namespace
}  // namespace hc::http
