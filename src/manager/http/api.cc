#include "manager/http/api.h"

#include <algorithm>
#include <charconv>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/util.h"
#include "manager/http/static_files.h"
#include "manager/metrics/prometheus.h"
#include "manager/stats/summary.h"
#include "migration/adopt.h"
#include "migration/peer_health.h"
#include "migration/prepare.h"

namespace hc::http {

using nlohmann::json;

struct Api::Route {
  std::string method;
  std::string pattern;
  bool auth;
  Response (Api::*handler)(const Params&, const Query&, const Request&);
  bool light = false;      // never calls libvirt (Admission::light)
  bool unbounded = false;  // as long as a live migration (Admission::unbounded)
};

struct Api::Match {
  const Route* route = nullptr;
  Params params;
  Query query;
  std::optional<Response> response;  // when there is no route to run
};

namespace {

constexpr const char* kPrefix = "/api/v1";
// Where Prometheus scrapes by convention (node-exporter, libvirt-exporter):
// the same route, and token rule, as /api/v1/metrics.
constexpr const char* kRootMetrics = "/metrics";
constexpr size_t kMaxStatPoints = 720;

const char* Reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

Response Json(int status, const json& body) {
  Response r;
  r.status = status;
  // Strings are valid UTF-8 where they enter (the store, the path); a byte
  // that is not still becomes U+FFFD instead of an exception.
  r.body = body.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  return r;
}

// Whether a decoded path segment or query value can name something: no NUL
// (libvirt and the file system would see the name cut short there) and
// well-formed UTF-8 (it is stored and sent back as JSON).
bool UsableText(const std::string& s) {
  return s.find('\0') == std::string::npos && IsValidUtf8(s);
}

Response FromError(const Error& e) {
  Response r = Problem(HttpStatusFor(e.code), e.message, ErrorCodeName(e.code));
  if (r.status == 503) r.headers.emplace_back("Retry-After", "5");
  if (r.status >= 500) spdlog::warn("request failed: {}", e.message);
  return r;
}

std::string TimeIso(int64_t ms) {
  if (ms <= 0) return "";
  time_t s = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

json AssignmentJson(const store::Assignment& a) {
  return json{{"vm", a.vm_name},
              {"vm_uuid", a.vm_uuid},
              {"target", a.target},
              {"policy", a.policy},
              {"node_name", a.node_name},
              {"compliance",
               {{"state", store::ComplianceName(a.state)},
                {"reason", a.reason},
                {"changed", TimeIso(a.updated_ms)},
                {"checked", TimeIso(a.checked_ms)}}}};
}

// One disk's assignment with its SSD tier record (ssd_tier: null when
// hostcached made no tier for it).
json AssignmentJson(const store::Assignment& a, core::Manager& m) {
  json j = AssignmentJson(a);
  auto t = m.SsdTierOf(a);
  if (t && *t) {
    j["ssd_tier"] = json{{"path", (*t)->path},
                         {"origin_id", (*t)->origin_id},
                         {"formatted", (*t)->formatted},
                         {"stale", (*t)->stale},
                         {"recorded", TimeIso((*t)->created_ms)},
                         {"changed", TimeIso((*t)->updated_ms)}};
  } else {
    j["ssd_tier"] = nullptr;
  }
  return j;
}

json DiskJson(const core::DiskView& d) {
  json j{{"target", d.disk.target}};
  if (!d.disk.device.empty()) {
    j["device"] = d.disk.device;
    j["bus"] = d.disk.bus;
    j["type"] = d.disk.type;
    j["format"] = d.disk.format;
    j["source"] = d.disk.source;
    j["readonly"] = d.disk.readonly;
  }
  if (d.assignment) {
    json a = AssignmentJson(*d.assignment);
    j["policy"] = a["policy"];
    j["node_name"] = a["node_name"];
    j["compliance"] = a["compliance"];
  } else {
    j["policy"] = nullptr;
  }
  return j;
}

json VmJson(const core::VmView& v, bool with_details) {
  std::string state = !v.exists ? "missing" : v.active ? "running" : "shut-off";
  json disks = json::array();
  for (const auto& d : v.disks) {
    if (with_details || d.assignment) disks.push_back(DiskJson(d));
  }
  return json{{"name", v.name}, {"uuid", v.uuid},         {"state", state},
              {"exists", v.exists}, {"persistent", v.persistent}, {"disks", disks}};
}

std::optional<int64_t> ParseInt(const std::string& s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

const std::string* QueryValue(const std::vector<std::pair<std::string, std::string>>& q,
                              const std::string& key) {
  for (const auto& [k, v] : q) {
    if (k == key) return &v;
  }
  return nullptr;
}

// The newest sample of each disk assigned now, with its VM's name and policy
// as they are now; disks unassigned since their last sample are left out.
std::vector<stats::DiskSnapshot> CurrentSnapshots(stats::StatsCollector* stats,
                                                  const std::vector<store::Assignment>& all) {
  std::vector<stats::DiskSnapshot> current;
  if (!stats) return current;
  for (auto& d : stats->Latest()) {
    for (const auto& a : all) {
      if (a.vm_uuid == d.vm_uuid && a.target == d.target) {
        d.vm_name = a.vm_name;
        d.policy = a.policy;
        current.push_back(d);
      }
    }
  }
  return current;
}

size_t DisksWithPolicy(const std::vector<store::Assignment>& all, const std::string& policy) {
  return static_cast<size_t>(
      std::count_if(all.begin(), all.end(), [&](const auto& a) { return a.policy == policy; }));
}

json BudgetJson(uint64_t budget, uint64_t reserved, uint64_t used) {
  return json{{"budget", budget},
              {"reserved", reserved},
              {"used", used},
              {"free", budget > reserved ? budget - reserved : 0}};
}

json OptionalJson(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

// "/api/v1/x?y", "/api" and "/metrics" (where Prometheus scrapes) are the
// API's; every other path is the dashboard's.
bool IsApiTarget(std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  return path == "/api" || path.rfind("/api/", 0) == 0 || path == kRootMetrics;
}

Result<json> ParseBody(const Request& req) {
  if (Trim(req.body).empty()) {
    return Fail(ErrorCode::kInvalidArgument, "the request needs a JSON body");
  }
  json j = json::parse(req.body, nullptr, false);
  if (j.is_discarded()) return Fail(ErrorCode::kInvalidArgument, "the body is not valid JSON");
  if (!j.is_object()) return Fail(ErrorCode::kInvalidArgument, "the body must be a JSON object");
  return j;
}

}  // namespace

int HttpStatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kUnauthenticated: return 401;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kAlreadyExists: return 409;
    case ErrorCode::kConflict: return 409;
    case ErrorCode::kFailedPrecondition: return 409;
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kIOError: return 500;
    case ErrorCode::kInternal: return 500;
  }
  return 500;
}

Response Problem(int status, const std::string& detail, std::string_view code) {
  json j{{"type", "about:blank"}, {"title", Reason(status)}, {"status", status},
         {"detail", detail}};
  if (!code.empty()) j["code"] = code;
  Response r = Json(status, j);
  r.content_type = "application/problem+json";
  return r;
}

Api::Api(core::Manager& manager, store::Store& store, stats::StatsCollector* stats,
         std::string token, std::string version, const StaticFiles* web,
         migration::Migrator* migrator)
    : manager_(manager),
      store_(store),
      stats_(stats),
      web_(web),
      migrator_(migrator),
      token_(std::move(token)),
      version_(std::move(version)) {}

const std::vector<Api::Route>& Api::Table() {
  static const std::vector<Route> kRoutes = {
      {"GET", "/health", false, &Api::Health, /*light=*/true},
      {"GET", "/openapi.json", true, &Api::GetOpenApi},
      {"GET", "/summary", true, &Api::Summary},
      {"GET", "/policies", true, &Api::ListPolicies},
      {"POST", "/policies", true, &Api::CreatePolicy},
      {"GET", "/policies/{name}", true, &Api::GetPolicy},
      {"PUT", "/policies/{name}", true, &Api::UpdatePolicy},
      {"DELETE", "/policies/{name}", true, &Api::DeletePolicy},
      {"GET", "/vms", true, &Api::ListVms},
      {"GET", "/vms/{vm}", true, &Api::GetVm},
      {"GET", "/vms/{vm}/migration-xml", true, &Api::MigrationXml},
      {"GET", "/vms/{vm}/migration", true, &Api::MigrationProgress},
      {"POST", "/vms/{vm}/migrate", true, &Api::MigrateVm, false, /*unbounded=*/true},
      {"GET", "/vms/{vm}/disks/{target}/policy", true, &Api::GetDiskPolicy},
      {"PUT", "/vms/{vm}/disks/{target}/policy", true, &Api::PutDiskPolicy},
      {"DELETE", "/vms/{vm}/disks/{target}/policy", true, &Api::DeleteDiskPolicy},
      {"POST", "/vms/{vm}/disks/{target}/ssd-tier/forget", true, &Api::ForgetSsdTier},
      {"GET", "/vms/{vm}/disks/{target}/stats", true, &Api::DiskStats},
      {"POST", "/migrations/prepare", true, &Api::PrepareMigration},
      {"GET", "/peers", true, &Api::ListPeers, /*light=*/true},
      {"GET", "/events", true, &Api::Events},
      {"GET", "/metrics", true, &Api::Metrics, /*light=*/true},
  };
  return kRoutes;
}

std::vector<RouteInfo> Api::Routes() {
  std::vector<RouteInfo> out;
  for (const auto& r : Table()) out.push_back(RouteInfo{r.method, kPrefix + r.pattern, r.auth});
  out.push_back(RouteInfo{"GET", kRootMetrics, true});
  return out;
}

Api::Match Api::Resolve(const Request& req) const {
  Match m;
  auto parsed = boost::urls::parse_origin_form(req.target);
  if (!parsed) {
    m.response = Problem(400, "the request target is not a valid path");
    return m;
  }
  std::vector<std::string> segs;
  for (auto s : parsed->segments()) segs.push_back(std::string(s));
  if (segs.size() == 1 && "/" + segs[0] == kRootMetrics) segs = {"api", "v1", segs[0]};
  for (auto p : parsed->params()) m.query.emplace_back(std::string(p.key), std::string(p.value));
  bool usable = std::all_of(segs.begin(), segs.end(), UsableText);
  for (const auto& [k, v] : m.query) usable = usable && UsableText(k) && UsableText(v);
  if (!usable) {
    m.response = Problem(400, "the request target " + std::string(parsed->encoded_path()) +
                                  " has a NUL byte (%00) or bytes that are not UTF-8 in a name "
                                  "or a query value; VM names, disk targets and policy names "
                                  "are UTF-8 text without NUL");
    return m;
  }
  // Strip /api/v1.
  if (segs.size() < 2 || segs[0] != "api" || segs[1] != "v1") {
    m.response =
        Problem(404, "no such resource; the API is under /api/v1 (see /api/v1/openapi.json)");
    return m;
  }
  segs.erase(segs.begin(), segs.begin() + 2);
  if (!segs.empty() && segs.back().empty()) segs.pop_back();  // trailing slash

  std::vector<std::string> allowed;
  for (const auto& r : Table()) {
    std::vector<std::string> pat;
    std::string_view p(r.pattern);
    p.remove_prefix(1);
    while (!p.empty()) {
      auto slash = p.find('/');
      pat.emplace_back(p.substr(0, slash));
      p = slash == std::string_view::npos ? std::string_view() : p.substr(slash + 1);
    }
    if (pat.size() != segs.size()) continue;
    Params params;
    bool match = true;
    for (size_t i = 0; i < pat.size() && match; i++) {
      if (pat[i].front() == '{') {
        if (segs[i].empty()) match = false;
        params.push_back(segs[i]);
      } else {
        match = pat[i] == segs[i];
      }
    }
    if (!match) continue;
    if (r.method != req.method) {
      allowed.push_back(r.method);
      continue;
    }
    if (r.auth) {
      const std::string prefix = "Bearer ";
      if (req.authorization.rfind(prefix, 0) != 0 ||
          !ConstantTimeEquals(req.authorization.substr(prefix.size()), token_)) {
        Response resp = Problem(401,
                                "this request needs 'Authorization: Bearer <token>' with the "
                                "token from hostcached's token file",
                                ErrorCodeName(ErrorCode::kUnauthenticated));
        resp.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"hostcached\"");
        m.response = std::move(resp);
        return m;
      }
    }
    m.route = &r;
    m.params = std::move(params);
    return m;
  }
  if (!allowed.empty()) {
    std::string allow;
    for (const auto& a : allowed) allow += (allow.empty() ? "" : ", ") + a;
    Response r = Problem(405, req.method + " is not supported here; use " + allow);
    r.headers.emplace_back("Allow", allow);
    m.response = std::move(r);
    return m;
  }
  m.response = Problem(404, "no such resource: " + std::string(parsed->encoded_path()) +
                                " (see /api/v1/openapi.json)");
  return m;
}

Admission Api::Admit(const Request& head) const {
  if (web_ && !IsApiTarget(head.target)) return Admission{std::nullopt, /*light=*/true, false};
  Match m = Resolve(head);
  Admission a;
  a.response = std::move(m.response);
  if (m.route) {
    a.light = m.route->light;
    a.unbounded = m.route->unbounded;
  }
  return a;
}

Response Api::Handle(const Request& req) {
  try {
    if (web_ && !IsApiTarget(req.target)) return web_->Serve(req);
    Match m = Resolve(req);
    if (m.response) return std::move(*m.response);
    return (this->*m.route->handler)(m.params, m.query, req);
  } catch (const std::exception& e) {
    spdlog::error("{} {}: unexpected exception: {}", req.method, ToValidUtf8(req.target), e.what());
  } catch (...) {
    spdlog::error("{} {}: unexpected exception", req.method, ToValidUtf8(req.target));
  }
  return Problem(500, "internal error while handling the request; see hostcached's log");
}

Response Api::Health(const Params&, const Query&, const Request&) {
  bool lv = manager_.LibvirtConnected();
  auto pols = store_.ListPolicies();
  store::CatalogueState cat = manager_.Catalogue().State();
  json catalogue{{"kind", cat.kind}, {"state", cat.connected ? "connected" : "disconnected"}};
  if (cat.kind != "local") {
    catalogue["endpoints"] = cat.endpoints;
    catalogue["revision"] = cat.revision;
    catalogue["synced_ms"] = cat.synced_ms;
    catalogue["retained"] = cat.retained;
    if (!cat.connected) catalogue["problem"] = cat.problem;
  }
  // Caching goes on without etcd: degraded, still 200.
  json j{{"status", pols && cat.connected ? "ok" : "degraded"},
         {"version", version_},
         {"libvirt", lv ? "connected" : "disconnected"},
         {"database", pols ? "ok" : pols.error().message},
         {"catalogue", catalogue}};
  return Json(pols ? 200 : 503, j);
}

Response Api::GetOpenApi(const Params&, const Query&, const Request&) {
  return Json(200, OpenApi());
}

Response Api::Summary(const Params&, const Query&, const Request&) {
  auto pols = manager_.ListPolicies();
  if (!pols) return FromError(pols.error());
  auto all = store_.ListAssignments();
  if (!all) return FromError(all.error());
  json states = json::object();
  for (auto c : {store::Compliance::kCompliant, store::Compliance::kPendingRestart,
                 store::Compliance::kNotCompliant, store::Compliance::kError,
                 store::Compliance::kUnknown}) {
    states[std::string(store::ComplianceName(c))] = 0;
  }
  for (const auto& a : *all) {
    auto& n = states[std::string(store::ComplianceName(a.state))];
    n = n.get<int>() + 1;
  }
  json policies = json::array();
  for (const auto& p : *pols) {
    policies.push_back(json{{"name", p.name}, {"assigned_disks", DisksWithPolicy(*all, p.name)}});
  }
  stats::IoTotals io = stats::SumIo(CurrentSnapshots(stats_, *all));
  core::BudgetView b = manager_.Budget();
  return Json(200, json{{"version", version_},
                        {"libvirt", manager_.LibvirtConnected() ? "connected" : "disconnected"},
                        {"ram", BudgetJson(b.ram_budget, b.ram_used, io.ram_used)},
                        {"ssd", BudgetJson(b.ssd_budget, b.ssd_used, io.ssd_used)},
                        {"disks", {{"total", all->size()}, {"states", states}}},
                        {"io",
                         {{"disks_sampled", io.disks},
                          {"read_hits", io.read_hits},
                          {"read_misses", io.read_misses},
                          {"hit_ratio", OptionalJson(io.hit_ratio)},
                          {"hit_latency_avg_ns", OptionalJson(io.hit_latency_avg_ns)},
                          {"miss_latency_avg_ns", OptionalJson(io.miss_latency_avg_ns)},
                          {"hit_latency_p99_ns", io.hit_latency_p99_ns},
                          {"miss_latency_p99_ns", io.miss_latency_p99_ns},
                          {"dirty_bytes", io.dirty_bytes}}},
                        {"policies", policies}});
}

Response Api::ListPolicies(const Params&, const Query&, const Request&) {
  auto pols = manager_.ListPolicies();
  if (!pols) return FromError(pols.error());
  auto all = store_.ListAssignments();
  if (!all) return FromError(all.error());
  json arr = json::array();
  for (const auto& p : *pols) {
    json j = policy::PolicyToJson(p);
    j["assigned_disks"] = DisksWithPolicy(*all, p.name);
    arr.push_back(j);
  }
  return Json(200, json{{"policies", arr}});
}

Response Api::CreatePolicy(const Params&, const Query&, const Request& req) {
  auto body = ParseBody(req);
  if (!body) return FromError(body.error());
  auto p = policy::PolicyFromJson(*body);
  if (!p) return FromError(p.error());
  if (auto s = manager_.CreatePolicy(*p); !s) return FromError(s.error());
  // (What was stored: ssd-dir made canonical.)
  if (auto stored = manager_.GetPolicy(p->name)) p = *stored;
  Response r = Json(201, policy::PolicyToJson(*p));
  r.headers.emplace_back("Location", std::string(kPrefix) + "/policies/" + p->name);
  return r;
}

Response Api::GetPolicy(const Params& params, const Query&, const Request&) {
  auto p = manager_.GetPolicy(params[0]);
  if (!p) return FromError(p.error());
  auto users = manager_.PolicyUsers(p->name);
  if (!users) return FromError(users.error());
  json j = policy::PolicyToJson(*p);
  j["disks"] = json::array();
  for (const auto& a : *users) j["disks"].push_back(AssignmentJson(a));
  return Json(200, j);
}

Response Api::UpdatePolicy(const Params& params, const Query&, const Request& req) {
  auto body = ParseBody(req);
  if (!body) return FromError(body.error());
  for (auto it = body->begin(); it != body->end(); ++it) {
    if (it.key() != "name" && it.key() != "description" && it.key() != "rules") {
      return Problem(400, "unknown field '" + it.key() +
                              "'; a policy update has description and rules");
    }
  }
  if (body->contains("name") &&
      (!(*body)["name"].is_string() || (*body)["name"].get<std::string>() != params[0])) {
    return Problem(400, "a policy cannot be renamed; create a new one instead");
  }
  auto cur = manager_.GetPolicy(params[0]);
  if (!cur) return FromError(cur.error());
  policy::Policy p = *cur;
  if (body->contains("description")) {
    if (!(*body)["description"].is_string()) return Problem(400, "'description' must be a string");
    p.description = (*body)["description"].get<std::string>();
  }
  if (body->contains("rules")) {
    auto r = policy::RulesFromJson((*body)["rules"], cur->rules);
    if (!r) return FromError(r.error());
    p.rules = *r;
  }
  auto users = manager_.UpdatePolicy(p);
  if (!users) return FromError(users.error());
  if (auto stored = manager_.GetPolicy(p.name)) p = *stored;
  json j = policy::PolicyToJson(p);
  j["disks"] = json::array();
  for (const auto& a : *users) j["disks"].push_back(AssignmentJson(a));
  return Json(200, j);
}

Response Api::DeletePolicy(const Params& params, const Query&, const Request&) {
  if (auto s = manager_.DeletePolicy(params[0]); !s) return FromError(s.error());
  return Response{204, "application/json", "", {}};
}

Response Api::ListVms(const Params&, const Query&, const Request&) {
  auto vms = manager_.ListVms();
  if (!vms) return FromError(vms.error());
  json arr = json::array();
  for (const auto& v : *vms) arr.push_back(VmJson(v, false));
  return Json(200, json{{"vms", arr}});
}

Response Api::GetVm(const Params& params, const Query&, const Request&) {
  auto v = manager_.GetVm(params[0]);
  if (!v) return FromError(v.error());
  return Json(200, VmJson(*v, true));
}

Response Api::MigrationXml(const Params& params, const Query&, const Request&) {
  if (!migrator_) return Problem(503, "this hostcached does not drive migrations");
  auto x = migrator_->MigrationXml(params[0]);
  if (!x) return FromError(x.error());
  return Response{200, "application/xml", *x, {}};
}

Response Api::PrepareMigration(const Params&, const Query&, const Request& req) {
  auto body = ParseBody(req);
  if (!body) return FromError(body.error());
  const json* xml = JsonField(*body, "xml");
  if (!xml || !xml->is_string() || body->size() != 1) {
    return Problem(400, "the body must be {\"xml\": \"<domain ...>\"}: the incoming domain XML "
                        "as libvirt's migrate hook gets it");
  }
  auto p = migration::PrepareIncoming(manager_, manager_.libvirt(), xml->get<std::string>(),
                                      migration::ThisHost());
  if (!p) return FromError(p.error());
  return Json(200, json{{"xml", p->xml}, {"notes", p->notes}});
}

Response Api::ListPeers(const Params&, const Query&, const Request&) {
  json out = json::array();
  std::vector<migration::PeerState> states;
  if (peer_health_) states = peer_health_->Snapshot();
  for (const auto& st : states) {
    out.push_back(json{{"name", st.peer.name},
                       {"uri", st.peer.uri},
                       {"migrate_uri", st.peer.migrate_uri},
                       {"reachable", st.reachable ? json(*st.reachable) : json(nullptr)},
                       {"last_error", st.last_error},
                       {"checked", st.checked_ms ? json(TimeIso(st.checked_ms)) : json(nullptr)},
                       {"last_ok", st.last_ok_ms ? json(TimeIso(st.last_ok_ms)) : json(nullptr)}});
  }
  return Json(200, json{{"peers", out}});
}

Response Api::MigrationProgress(const Params& params, const Query&, const Request&) {
  if (!migrator_) return Problem(503, "this hostcached does not drive migrations");
  auto p = migrator_->Progress(params[0]);
  if (!p) return FromError(p.error());
  json disks = json::array();
  for (const auto& d : p->disks) {
    json j{{"target", d.target}, {"reported", d.reported}};
    if (d.reported) {
      j["dirty_bytes"] = d.dirty_bytes;
      j["drained_bytes"] = d.drained_bytes;
      j["warm_up"] = json{{"state", d.warm_up_state.empty() ? "none" : d.warm_up_state},
                          {"blocks", d.warm_up_blocks},
                          {"done", d.warm_up_done},
                          {"bytes_received", d.warm_up_bytes_received}};
    }
    disks.push_back(std::move(j));
  }
  return Json(200, json{{"vm", p->vm}, {"phase", p->phase}, {"seconds", p->seconds},
                        {"disks", std::move(disks)}});
}

Response Api::MigrateVm(const Params& params, const Query&, const Request& req) {
  if (!migrator_) return Problem(503, "this hostcached does not drive migrations");
  auto body = ParseBody(req);
  if (!body) return FromError(body.error());
  libvirt::MigrateRequest mr;
  int64_t drain_ms = -1;  // the daemon's --migrate-drain-timeout
  for (auto it = body->begin(); it != body->end(); ++it) {
    const std::string& k = it.key();
    if (k == "destination" || k == "migrate_uri") {
      if (!it.value().is_string()) return Problem(400, "'" + k + "' must be a string");
      (k == "destination" ? mr.destination : mr.migrate_uri) = it.value().get<std::string>();
    } else if (k == "persistent" || k == "undefine_source" || k == "unsafe") {
      if (!it.value().is_boolean()) return Problem(400, "'" + k + "' must be true or false");
      (k == "persistent" ? mr.persistent : k == "undefine_source" ? mr.undefine_source
                                                                 : mr.unsafe) =
          it.value().get<bool>();
    } else if (k == "drain_timeout_s") {
      if (!it.value().is_number() || it.value().get<double>() < 0 ||
          it.value().get<double>() > 3600) {
        return Problem(400, "'drain_timeout_s' must be a number of seconds from 0 (no drain) "
                            "to 3600");
      }
      drain_ms = static_cast<int64_t>(it.value().get<double>() * 1000.0);
    } else {
      return Problem(400, "unknown field '" + k +
                              "'; the body has destination, and optionally migrate_uri, "
                              "persistent, undefine_source, unsafe, drain_timeout_s");
    }
  }
  auto secs = migrator_->Migrate(params[0], mr, drain_ms);
  if (!secs) return FromError(secs.error());
  return Json(200, json{{"vm", params[0]}, {"destination", mr.destination}, {"seconds", *secs}});
}

Response Api::GetDiskPolicy(const Params& params, const Query&, const Request&) {
  auto a = manager_.FindAssignment(params[0], params[1]);
  if (!a && a.error().code == ErrorCode::kNotFound && adopter_) {
    // A disk that came with a policy this host lacks: its compliance says so.
    auto dom = manager_.libvirt().LookupDomain(params[0]);
    if (dom) {
      if (auto u = adopter_->Unmanaged(dom->uuid, params[1])) {
        return Json(200, json{{"vm", dom->name},
                              {"vm_uuid", dom->uuid},
                              {"target", params[1]},
                              {"policy", u->carried.policy},
                              {"carried", true},
                              {"rules", policy::RulesToJson(u->carried.rules)},
                              {"compliance",
                               {{"state", store::ComplianceName(store::Compliance::kNotCompliant)},
                                {"reason", u->reason}}}});
      }
    }
  }
  if (!a) return FromError(a.error());
  return Json(200, AssignmentJson(*a, manager_));
}

Response Api::PutDiskPolicy(const Params& params, const Query&, const Request& req) {
  auto body = ParseBody(req);
  if (!body) return FromError(body.error());
  for (auto it = body->begin(); it != body->end(); ++it) {
    if (it.key() != "policy") {
      return Problem(400, "unknown field '" + it.key() + "'; the body is {\"policy\": NAME}");
    }
  }
  if (!body->contains("policy") || !(*body)["policy"].is_string()) {
    return Problem(400, "the body must be {\"policy\": NAME}");
  }
  auto a = manager_.Assign(params[0], params[1], (*body)["policy"].get<std::string>());
  if (!a) return FromError(a.error());
  return Json(200, AssignmentJson(*a, manager_));
}

Response Api::DeleteDiskPolicy(const Params& params, const Query&, const Request&) {
  if (auto s = manager_.Unassign(params[0], params[1]); !s) return FromError(s.error());
  return Response{204, "application/json", "", {}};
}

Response Api::ForgetSsdTier(const Params& params, const Query&, const Request& req) {
  if (!Trim(req.body).empty()) {
    json j = json::parse(req.body, nullptr, false);
    if (!j.is_object() || !j.empty()) return Problem(400, "this request takes no body (or {})");
  }
  auto a = manager_.ForgetSsdTier(params[0], params[1]);
  if (!a) return FromError(a.error());
  return Json(200, AssignmentJson(*a, manager_));
}

Response Api::DiskStats(const Params& params, const Query& query, const Request&) {
  size_t points = 60;
  if (const std::string* v = QueryValue(query, "points")) {
    auto n = ParseInt(*v);
    if (!n || *n < 1 || *n > static_cast<int64_t>(kMaxStatPoints)) {
      return Problem(400, "'points' must be an integer from 1 to " +
                              std::to_string(kMaxStatPoints));
    }
    points = static_cast<size_t>(*n);
  }
  auto a = manager_.FindAssignment(params[0], params[1]);
  if (!a) return FromError(a.error());
  auto series = store_.ListStats(a->vm_uuid, a->target, points);
  if (!series) return FromError(series.error());
  json arr = json::array();
  for (const auto& s : *series) {
    arr.push_back(json{{"time", TimeIso(s.time_ms)}, {"time_ms", s.time_ms},
                       {"counters", s.counters}});
  }
  json current = nullptr;
  if (!series->empty()) {
    const auto& last = series->back();
    json c = last.counters;
    double hits = c.value("read-hits", 0.0), misses = c.value("read-misses", 0.0);
    current = json{{"time", TimeIso(last.time_ms)},
                   {"time_ms", last.time_ms},
                   {"counters", c},
                   {"hit_ratio", hits + misses > 0 ? hits / (hits + misses) : 0.0}};
  }
  return Json(200, json{{"vm", a->vm_name},
                        {"vm_uuid", a->vm_uuid},
                        {"target", a->target},
                        {"policy", a->policy},
                        {"current", current},
                        {"series", arr}});
}

Response Api::Events(const Params&, const Query& query, const Request&) {
  int64_t since = 0;
  size_t limit = 100;
  std::string vm;
  if (const std::string* v = QueryValue(query, "since")) {
    auto n = ParseInt(*v);
    if (!n || *n < 0) return Problem(400, "'since' must be an event id (a non-negative integer)");
    since = *n;
  }
  if (const std::string* v = QueryValue(query, "limit")) {
    auto n = ParseInt(*v);
    if (!n || *n < 1 || *n > 1000) return Problem(400, "'limit' must be an integer from 1 to 1000");
    limit = static_cast<size_t>(*n);
  }
  if (const std::string* v = QueryValue(query, "vm")) vm = *v;
  std::string action;
  if (const std::string* v = QueryValue(query, "action")) action = *v;
  auto evs = store_.ListEvents(store::EventQuery{since, limit, vm, action});
  if (!evs) return FromError(evs.error());
  json arr = json::array();
  for (const auto& e : *evs) {
    arr.push_back(json{{"id", e.id},
                       {"time", TimeIso(e.time_ms)},
                       {"level", e.level},
                       {"vm", e.vm},
                       {"target", e.target},
                       {"action", e.action},
                       {"message", e.message}});
  }
  return Json(200, json{{"events", arr}});
}

Response Api::Metrics(const Params&, const Query&, const Request&) {
  metrics::Snapshot snap;
  auto all = store_.ListAssignments();
  if (!all) return FromError(all.error());
  snap.assignments = *all;
  if (stats_) snap.collectors = stats_->VmStates();
  snap.disks = CurrentSnapshots(stats_, snap.assignments);
  snap.budget = manager_.Budget();
  snap.libvirt_connected = manager_.LibvirtConnected();
  snap.catalogue = manager_.Catalogue().State();
  Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = metrics::Render(snap);
  return r;
}

}  // namespace hc::http
