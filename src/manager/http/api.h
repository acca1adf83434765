// The REST API of hostcached (/api/v1), independent of the HTTP transport:
// a request goes in, a response comes out.  server.h puts it on Boost.Beast.
//
// Every route but GET /api/v1/health needs "Authorization: Bearer <token>".
// Errors are RFC 7807 problem documents (application/problem+json) whose
// "detail" says what went wrong in words a person can act on.  Handlers
// validate all input before they change anything.
//
// Thread-safety: Handle() is thread-safe and blocks (it calls the Manager,
// hence libvirt): run it on worker threads, not on the I/O thread.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "manager/core/manager.h"
#include "migration/migrator.h"
#include "manager/stats/collector.h"
#include "manager/store/store.h"

namespace hc::migration {
class Adopter;
class PeerHealth;
}

namespace hc::http {

class StaticFiles;

struct Request {
  std::string method;         // "GET"
  std::string target;         // "/api/v1/vms?x=y" (origin form, percent-encoded)
  std::string authorization;  // the Authorization header
  std::string body;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct RouteInfo {
  std::string method;   // "GET"
  std::string pattern;  // "/api/v1/vms/{vm}/disks/{target}/policy"
  bool auth;            // needs the bearer token
};

// What the server learns from a request's line and headers, before it reads
// a body (HttpServer): whether to answer at once, and how to run the handler.
struct Admission {
  // Answer this without reading the body: a bad target, no such route or
  // method, a missing or wrong token.
  std::optional<Response> response;
  bool light = false;      // the handler never calls libvirt (health, metrics)
  bool unbounded = false;  // the handler lasts as long as a live migration: no deadline
};

// One mapping from error codes to HTTP statuses.
int HttpStatusFor(ErrorCode code);

// A problem+json response.
Response Problem(int status, const std::string& detail, std::string_view code = "");

class Api {
 public:
  // `web`: the dashboard's files, served for every path outside /api/
  // (null: none); `migrator`: drives migrations (null: the migration
  // routes answer 503); both borrowed, must outlive the Api.
  Api(core::Manager& manager, store::Store& store, stats::StatsCollector* stats,
      std::string token, std::string version, const StaticFiles* web = nullptr,
      migration::Migrator* migrator = nullptr);

  // The migration peers' health for GET /peers (borrowed; null: every
  // peer reported as not probed).  Set before serving.
  void SetPeerHealth(migration::PeerHealth* health) { peer_health_ = health; }
  // The adopter whose carried-but-unmanaged disks (their policy missing on
  // this host) GET .../policy reports (borrowed; null: none).
  void SetAdopter(migration::Adopter* adopter) { adopter_ = adopter; }

  Response Handle(const Request& req);
  // Routing and the token check from the request line and headers alone
  // (`head.body` is not looked at).  Never blocks: the server calls it on
  // its I/O thread.
  Admission Admit(const Request& head) const;

  // Every route, for the OpenAPI document check.
  static std::vector<RouteInfo> Routes();
  // The OpenAPI 3.0 document served at /api/v1/openapi.json.
  static const nlohmann::json& OpenApi();

 private:
  using Params = std::vector<std::string>;  // decoded {placeholders}, in order
  using Query = std::vector<std::pair<std::string, std::string>>;
  struct Route;
  struct Match;
  static const std::vector<Route>& Table();
  // The route of `req` with its decoded parameters, or the response when
  // there is none (or the token is missing).
  Match Resolve(const Request& req) const;

  Response Health(const Params&, const Query&, const Request&);
  Response GetOpenApi(const Params&, const Query&, const Request&);
  Response Summary(const Params&, const Query&, const Request&);
  Response ListPolicies(const Params&, const Query&, const Request&);
  Response CreatePolicy(const Params&, const Query&, const Request&);
  Response GetPolicy(const Params&, const Query&, const Request&);
  Response UpdatePolicy(const Params&, const Query&, const Request&);
  Response DeletePolicy(const Params&, const Query&, const Request&);
  Response ListVms(const Params&, const Query&, const Request&);
  Response GetVm(const Params&, const Query&, const Request&);
  Response MigrationXml(const Params&, const Query&, const Request&);
  Response MigrateVm(const Params&, const Query&, const Request&);
  Response PrepareMigration(const Params&, const Query&, const Request&);
  Response ListPeers(const Params&, const Query&, const Request&);
  Response MigrationProgress(const Params&, const Query&, const Request&);
  Response GetDiskPolicy(const Params&, const Query&, const Request&);
  Response PutDiskPolicy(const Params&, const Query&, const Request&);
  Response DeleteDiskPolicy(const Params&, const Query&, const Request&);
  Response ForgetSsdTier(const Params&, const Query&, const Request&);
  Response DiskStats(const Params&, const Query&, const Request&);
  Response Events(const Params&, const Query&, const Request&);
  Response Metrics(const Params&, const Query&, const Request&);

  core::Manager& manager_;
  store::Store& store_;
  stats::StatsCollector* stats_;  // may be null (no collector)
  const StaticFiles* web_;        // may be null (no dashboard)
  migration::PeerHealth* peer_health_ = nullptr;  // may be null
  migration::Adopter* adopter_ = nullptr;          // may be null
  migration::Migrator* migrator_;  // may be null (no migrations)
  const std::string token_;
  const std::string version_;
};

}  // namespace hc::http
