// hostcached's settings: command-line flags, optionally read from a config
// file (--config FILE, "key = value" lines named like the flags; flags given
// on the command line win).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace hc::core {

struct DaemonConfig {
  std::string listen = "127.0.0.1:8470";
  int max_connections = 64;      // open API connections at most
  double request_timeout = 300;  // s a request may take before it is answered 503 (0: none)
  std::string db = "/var/lib/hostcache/hostcached.db";
  std::string libvirt_uri = "qemu:///system";
  std::string token_file = "/var/lib/hostcache/token";
  std::string emulator;          // default: the project's QEMU build
  std::string qemu_img;          // default: the project's QEMU build
  std::string ram_budget = "25%";  // bytes, size with suffix, or % of host RAM
  std::string ssd_budget = "0";
  int stats_interval = 10;    // s between statistics samples
  int stats_samples = 720;    // samples kept per disk
  int check_interval = 60;    // s between full compliance checks
  double migrate_drain_timeout = 30;       // s; 0: no drain before a migration
  std::string migrate_drain_threshold = "1M";  // dirty bytes per disk that end the drain
  std::string log_level = "info";
  std::string web_dir;        // the built dashboard, served at /; default: the project's build
  // Hosts VMs may be live-migrated to: "NAME=LIBVIRT-URI" (core/peers.h),
  // and their migration addresses, "NAME=tcp://HOST[:PORT]".
  std::vector<std::string> peers;
  std::vector<std::string> peer_migrate_uris;
  // Directories under which policies' ssd-dir must lie (core/ssd_files.h).
  std::vector<std::string> ssd_roots = {"/var/lib/hostcache/ssd"};
  // A cluster's shared policy catalogue: etcd members, "http://HOST:PORT"
  // separated by commas ("": this host's own policies, in its SQLite).
  std::string cluster_etcd;
  int cluster_poll_ms = 1000;  // ms between reads of the catalogue in etcd
};

// Parses argv.  Returns the exit code to use when the process should end
// now (--help, --version, a usage error), else nullopt.
std::optional<int> ParseDaemonArgs(int argc, char** argv, DaemonConfig* cfg);

// "4G", "1073741824" or "25%" (of the host's physical memory) -> bytes.
Result<uint64_t> ResolveBudget(const std::string& text, uint64_t host_bytes);

// MemTotal of /proc/meminfo in bytes (0 when unknown).
uint64_t HostMemoryBytes();

// Reads the bearer token, creating the file (mode 0600, 32 random bytes as
// hex) when it does not exist.
Result<std::string> LoadOrCreateToken(const std::string& path);

}  // namespace hc::core
