#include "manager/core/config.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <utility>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/util.h"

#ifndef HOSTCACHE_VERSION
#define HOSTCACHE_VERSION "unknown"
#endif
#ifndef HOSTCACHE_QEMU_BUILD
#define HOSTCACHE_QEMU_BUILD "/usr/local/libexec/hostcache"
#endif
#ifndef HOSTCACHE_WEB_DIR
#define HOSTCACHE_WEB_DIR "/usr/share/hostcache/web"
#endif

namespace hc::core {
namespace {

// Where the project's QEMU and the dashboard are: installed (make install,
// the Debian packages) hostcached runs as PREFIX/bin/hostcached next to
// PREFIX/libexec/hostcache (QEMU) and PREFIX/share/hostcache/web, wherever
// PREFIX (and DESTDIR) put it; from the build tree, the build's.
std::pair<std::string, std::string> QemuAndWebDirs() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && exe.parent_path().filename() == "bin") {
    fs::path prefix = exe.parent_path().parent_path();
    if (fs::exists(prefix / "libexec/hostcache/qemu-system-x86_64", ec)) {
      return {(prefix / "libexec/hostcache").string(), (prefix / "share/hostcache/web").string()};
    }
  }
  return {HOSTCACHE_QEMU_BUILD, HOSTCACHE_WEB_DIR};
}

}  // namespace

std::optional<int> ParseDaemonArgs(int argc, char** argv, DaemonConfig* cfg) {
  const auto [qemu_dir, web_dir] = QemuAndWebDirs();
  cfg->emulator = qemu_dir + "/qemu-system-x86_64";
  cfg->qemu_img = qemu_dir + "/qemu-img";
  cfg->web_dir = web_dir;
  CLI::App app{"hostcached: storage-policy manager of hostcache for libvirt/QEMU hosts"};
  app.set_version_flag("--version", std::string("hostcached ") + HOSTCACHE_VERSION);
  app.set_config("--config", "", "Read options from FILE (key = value lines named like the flags)");
  app.add_option("--listen", cfg->listen, "HOST:PORT of the REST API")->capture_default_str();
  app.add_option("--max-connections", cfg->max_connections,
                 "Open API connections at most (at the limit, idle ones make room for new ones)")
      ->check(CLI::Range(4, 65536))
      ->capture_default_str();
  app.add_option("--request-timeout", cfg->request_timeout,
                 "Seconds an API request may take before it is answered 503 while it goes on "
                 "(0: no limit; a migration has none)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("--db", cfg->db, "SQLite database file")->capture_default_str();
  app.add_option("--libvirt-uri", cfg->libvirt_uri, "libvirt connection URI")
      ->capture_default_str();
  app.add_option("--token-file", cfg->token_file,
                 "Bearer token file (created with a random token, mode 0600, when absent)")
      ->capture_default_str();
  app.add_option("--emulator", cfg->emulator,
                 "QEMU with the hostcache driver, set as <emulator> of cached VMs")
      ->capture_default_str();
  app.add_option("--qemu-img", cfg->qemu_img, "qemu-img of the same QEMU build")
      ->capture_default_str();
  app.add_option("--ram-budget", cfg->ram_budget,
                 "Host RAM all caches together may use: a size (64G) or a share of RAM (25%)")
      ->capture_default_str();
  app.add_option("--ssd-budget", cfg->ssd_budget, "SSD space all caches together may use")
      ->capture_default_str();
  app.add_option("--stats-interval", cfg->stats_interval, "Seconds between statistics samples")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--stats-samples", cfg->stats_samples, "Statistics samples kept per disk")
      ->check(CLI::Range(10, 100000))
      ->capture_default_str();
  app.add_option("--check-interval", cfg->check_interval,
                 "Seconds between full compliance checks")
      ->check(CLI::Range(5, 86400))
      ->capture_default_str();
  app.add_option("--migrate-drain-timeout", cfg->migrate_drain_timeout,
                 "Seconds to write back write-back disks' dirty data before a migration "
                 "hostcached drives (0: none; it is written back at switch-over)")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--migrate-drain-threshold", cfg->migrate_drain_threshold,
                 "Dirty bytes per disk at which that drain ends")
      ->capture_default_str();
  app.add_option("--log-level", cfg->log_level, "trace, debug, info, warn or error")
      ->capture_default_str();
  app.add_option("--web-dir", cfg->web_dir,
                 "The built browser dashboard, served at / on the API's listener")
      ->capture_default_str();
  app.add_option("--peer", cfg->peers,
                 "A host VMs may be live-migrated to, NAME=LIBVIRT-URI (qemu+tls://HOST/system, "
                 "qemu+ssh://HOST/system or qemu+unix:///system); repeatable")
      ->take_all();
  app.add_option("--peer-migrate-uri", cfg->peer_migrate_uris,
                 "Where a migration to peer NAME streams to, NAME=tcp://HOST[:PORT] (default: "
                 "where the destination libvirtd says); repeatable")
      ->take_all();
  app.add_option("--ssd-root", cfg->ssd_roots,
                 "A directory under which policies' ssd-dir may lie; repeatable")
      ->take_all()
      ->capture_default_str();
  // A list (commas, or the flag repeated): CLI11 splits a config file's
  // "a,b" into two values either way.
  std::vector<std::string> etcd_urls;
  app.add_option("--cluster-etcd", etcd_urls,
                 "Share policies with a cluster through etcd: its members, "
                 "http://HOST:PORT[,http://HOST:PORT...] (default: this host's own policies)")
      ->delimiter(',')
      ->take_all();
  app.add_option("--cluster-poll-ms", cfg->cluster_poll_ms,
                 "Milliseconds between reads of the cluster's catalogue in etcd")
      ->check(CLI::Range(100, 600000))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  cfg->cluster_etcd.clear();
  for (size_t i = 0; i < etcd_urls.size(); ++i) {
    cfg->cluster_etcd += (i ? "," : "") + etcd_urls[i];
  }
  return std::nullopt;
}

Result<uint64_t> ResolveBudget(const std::string& text, uint64_t host_bytes) {
  std::string_view t = Trim(text);
  if (!t.empty() && t.back() == '%') {
    std::string num(t.substr(0, t.size() - 1));
    char* end = nullptr;
    double pct = std::strtod(num.c_str(), &end);
    if (num.empty() || *end != '\0' || pct < 0 || pct > 100) {
      return Fail(ErrorCode::kInvalidArgument,
                  "budget '" + text + "' is not a percentage from 0% to 100%");
    }
    if (host_bytes == 0) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "cannot read the host's memory size for budget '" + text + "'; give bytes");
    }
    return static_cast<uint64_t>(static_cast<double>(host_bytes) * pct / 100.0);
  }
  return ParseSize(t);
}

uint64_t HostMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemTotal:") return kb * 1024;
  }
  return 0;
}

Result<std::string> LoadOrCreateToken(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (st.st_mode & 0077) {
      spdlog::warn("token file {} is readable by other users (mode {:o}); chmod 600 it",
                   path, st.st_mode & 0777);
    }
    auto text = ReadFile(path);
    if (!text) return tl::unexpected(text.error());
    std::string token(Trim(*text));
    if (token.size() < 16) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "token file " + path + " holds no usable token (at least 16 characters)");
    }
    return token;
  }
  if (errno != ENOENT) {
    return Fail(ErrorCode::kIOError, "cannot read token file " + path + ": " + strerror(errno));
  }
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  auto token = RandomHex(32);
  if (!token) return tl::unexpected(token.error());
  if (auto s = WriteFileAtomic(path, *token + "\n", 0600); !s) return tl::unexpected(s.error());
  spdlog::info("created token file {} (mode 0600)", path);
  return *token;
}

}  // namespace hc::core
