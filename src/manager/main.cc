// hostcached: the storage-policy manager daemon of hostcache.
//
// Threads: main runs the HTTP I/O (Boost.Asio io_context); a worker pool
// runs API requests (they block on libvirt); libvirt's event loop and the
// connection supervisor have their own threads (RealLibvirtClient); the
// reconciler and the statistics collector have one each, the collector's
// per-VM tasks run on a small pool.  SIGTERM/SIGINT stop accepting, let
// requests in flight finish, then stop the rest in reverse order.
#include <csignal>
#include <filesystem>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"
#include "manager/cluster/etcd_catalogue.h"
#include "manager/core/config.h"
#include "manager/core/manager.h"
#include "manager/core/reconciler.h"
#include "manager/http/api.h"
#include "manager/http/server.h"
#include "manager/http/static_files.h"
#include "manager/libvirt/qemu_tools.h"
#include "manager/libvirt/real_libvirt_client.h"
#include "manager/stats/collector.h"
#include "manager/store/sqlite_store.h"
#include "migration/coordinator.h"
#include "migration/migrator.h"
#include "migration/peer_health.h"
#include "migration/registry.h"

#ifndef HOSTCACHE_VERSION
#define HOSTCACHE_VERSION "unknown"
#endif

namespace {

// The address a browser on this host reaches `ep` at, for a URL.
std::string UrlHost(const boost::asio::ip::tcp::endpoint& ep) {
  auto a = ep.address();
  if (a.is_v4()) return a.is_unspecified() ? "127.0.0.1" : a.to_string();
  return "[" + (a.is_unspecified() ? std::string("::1") : a.to_string()) + "]";
}

int Run(const hc::core::DaemonConfig& cfg) {
  using namespace hc;
  SystemClock clock;
  uint64_t host_mem = core::HostMemoryBytes();
  auto ram_budget = core::ResolveBudget(cfg.ram_budget, host_mem);
  auto ssd_budget = core::ResolveBudget(cfg.ssd_budget, host_mem);
  if (!ram_budget || !ssd_budget) {
    spdlog::error("{}", (!ram_budget ? ram_budget.error() : ssd_budget.error()).message);
    return 2;
  }
  auto drain_threshold = ParseSize(cfg.migrate_drain_threshold);
  if (!drain_threshold) {
    spdlog::error("--migrate-drain-threshold: {}", drain_threshold.error().message);
    return 2;
  }
  auto peers = core::Peers::Parse(cfg.peers, cfg.peer_migrate_uris);
  if (!peers) {
    spdlog::error("{}", peers.error().message);
    return 2;
  }
  auto ssd_roots = core::SsdRoots::Make(cfg.ssd_roots);
  if (!ssd_roots) {
    spdlog::error("{}", ssd_roots.error().message);
    return 2;
  }
  auto token = core::LoadOrCreateToken(cfg.token_file);
  if (!token) {
    spdlog::error("{}", token.error().message);
    return 1;
  }
  std::error_code ec;
  auto db_dir = std::filesystem::path(cfg.db).parent_path();
  if (!db_dir.empty()) std::filesystem::create_directories(db_dir, ec);
  store::SqliteOptions sopts;
  sopts.max_samples = static_cast<size_t>(cfg.stats_samples);
  auto store = store::SqliteStore::Open(cfg.db, clock.NowMs(), sopts);
  if (!store) {
    spdlog::error("{}", store.error().message);
    return 1;
  }
  spdlog::info("hostcached {} starting: database {}, libvirt {}, RAM budget {}, SSD budget {}",
               HOSTCACHE_VERSION, cfg.db, cfg.libvirt_uri, HumanSize(*ram_budget),
               HumanSize(*ssd_budget));

  libvirt::RealLibvirtClient lv(cfg.libvirt_uri);
  libvirt::RealQemuTools tools(cfg.qemu_img);
  core::ManagerConfig mcfg;
  mcfg.emulator = cfg.emulator;
  mcfg.ram_budget = *ram_budget;
  mcfg.ssd_budget = *ssd_budget;
  mcfg.ssd_roots = *ssd_roots;
  migration::MigratorConfig mig_cfg;
  mig_cfg.emulator = cfg.emulator;
  mig_cfg.drain_timeout_ms = static_cast<int64_t>(cfg.migrate_drain_timeout * 1000.0);
  mig_cfg.drain_threshold = *drain_threshold;
  mig_cfg.peers = *peers;
  for (const auto& p : peers->all()) {
    spdlog::info("migration peer '{}': {}{}", p.name, p.uri,
                 p.migrate_uri.empty() ? "" : ", streams to " + p.migrate_uri);
  }
  spdlog::info("SSD roots (policies' ssd-dir must lie under them): {}", ssd_roots->Describe());
  std::unique_ptr<cluster::EtcdCatalogue> catalogue;
  if (!cfg.cluster_etcd.empty()) {
    auto eps = cluster::ParseEtcdUrls(cfg.cluster_etcd);
    if (!eps) {
      spdlog::error("{}", eps.error().message);
      return 2;
    }
    catalogue = std::make_unique<cluster::EtcdCatalogue>(
        **store, cluster::EtcdClient(*eps), clock,
        std::chrono::milliseconds(cfg.cluster_poll_ms));
    spdlog::info("policies: the cluster's catalogue in etcd at {} (a copy in {})",
                 cluster::EtcdClient(*eps).Describe(), cfg.db);
  }
  core::VmLocks vm_locks;
  migration::Registry migrating(vm_locks, clock);  // the one owner of the migrating state
  core::Manager manager(**store, lv, tools, clock, mcfg, catalogue.get(), &vm_locks, &migrating);
  migration::Migrator migrator(manager, migrating, **store, lv, tools, clock, mig_cfg);
  core::Reconciler reconciler(manager, cfg.check_interval);
  migration::Coordinator migration(manager, migrating, migrator, lv, clock);
  reconciler.SetHandler([&](const std::string& uuid, const std::string& name,
                            libvirt::Lifecycle ev, const std::string& detail) {
    migration.OnEvent(uuid, name, ev, detail);
  });
  reconciler.SetFullPassHandler([&] { migration.adopter().AdoptAll(); });
  lv.SetLifecycleCallback([&](const std::string& uuid, const std::string& name,
                              libvirt::Lifecycle ev, const std::string& detail) {
    reconciler.Enqueue(uuid, name, ev, detail);
  });
  bool first = true;
  lv.SetConnectionCallback([&](bool up) {
    if (up && !first) {
      manager.Log("info", "", "", "libvirt", "reconnected to libvirtd; re-checking every disk");
      reconciler.EnqueueAll();
    } else if (!up) {
      manager.Log("warning", "", "", "libvirt", "lost the connection to libvirtd; reconnecting");
    }
    first = false;
  });
  lv.Start();
  reconciler.Start();
  if (catalogue) {
    catalogue->Start([&](const store::PolicyChange& c) { manager.OnCatalogueChange(c); });
  }

  boost::asio::thread_pool stats_pool(2);
  stats::StatsCollector collector(**store, lv, clock, [&](std::function<void()> fn) {
    boost::asio::post(stats_pool, std::move(fn));
  });
  collector.Start(cfg.stats_interval);

  boost::asio::io_context ioc(1);
  boost::asio::thread_pool workers(4);
  http::StaticFiles web(cfg.web_dir);
  http::Api api(manager, **store, &collector, *token, HOSTCACHE_VERSION, &web, &migrator);
  migration::PeerHealth peer_health(*peers, lv, clock);
  peer_health.Start(30);
  api.SetPeerHealth(&peer_health);
  api.SetAdopter(&migration.adopter());
  http::ServerOptions http_opts;
  http_opts.max_connections = static_cast<size_t>(cfg.max_connections);
  http_opts.max_requests = static_cast<size_t>(cfg.max_connections);
  http_opts.request_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(cfg.request_timeout * 1000.0));
  http::HttpServer server(ioc, workers, api, http_opts);
  // Before the listener is up (its log line is how a supervisor or a test
  // knows the daemon is ready): a SIGTERM from then on stops it gracefully.
  // asio keeps a signal that arrives before async_wait below.
  boost::asio::signal_set signals(ioc, SIGTERM, SIGINT);
  boost::asio::steady_timer deadline(ioc);
  if (auto s = server.Listen(cfg.listen); !s) {
    spdlog::error("{}", s.error().message);
    collector.Stop();
    if (catalogue) catalogue->Stop();
    reconciler.Stop();
    lv.Stop();
    return 1;
  }
  auto ep = server.Endpoint();
  spdlog::info("REST API on http://{}:{}/api/v1 (token in {})", ep.address().to_string(),
               ep.port(), cfg.token_file);
  // As Jupyter does: the link logs the browser in (the token stays in the
  // URL's fragment, which the browser never sends).
  if (web.Available()) {
    spdlog::info("dashboard: http://{}:{}/#token={}", UrlHost(ep), ep.port(), *token);
  } else {
    spdlog::warn("dashboard not served: {} has no index.html (build it with make, or set "
                 "--web-dir)", cfg.web_dir);
  }
  manager.Log("info", "", "", "start",
              std::string("hostcached ") + HOSTCACHE_VERSION + " started; re-verifying every "
              "assignment");

  signals.async_wait([&](const boost::system::error_code& e, int sig) {
    if (e) return;
    spdlog::info("signal {}: shutting down", sig);
    server.Stop([&] { deadline.cancel(); });
    // Requests in flight get 10 s to finish.
    deadline.expires_after(std::chrono::seconds(10));
    deadline.async_wait([&](const boost::system::error_code& te) {
      if (!te) {
        spdlog::warn("requests still running after 10 s; stopping anyway");
        ioc.stop();
      }
    });
  });
  ioc.run();
  // ioc.run returns once the acceptor and every session are gone; the
  // deadline timer may still be pending.
  workers.join();
  collector.Stop();
  stats_pool.join();
  if (catalogue) catalogue->Stop();
  reconciler.Stop();
  lv.Stop();
  manager.Log("info", "", "", "stop", "hostcached stopped");
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A write to a socket whose peer went away (libvirtd stopped, a client
  // hung up) must be an error return, not the end of the daemon.
  std::signal(SIGPIPE, SIG_IGN);
  hc::core::DaemonConfig cfg;
  if (auto code = hc::core::ParseDaemonArgs(argc, argv, &cfg)) return *code;
  if (auto s = hc::SetupLogging(cfg.log_level); !s) {
    fprintf(stderr, "hostcached: %s\n", s.error().message.c_str());
    return 2;
  }
  return Run(cfg);
}
