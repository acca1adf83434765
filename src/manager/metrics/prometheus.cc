#include "manager/metrics/prometheus.h"

#include <cstdio>
#include <functional>
#include <optional>
#include <sstream>

#include "common/json_fields.h"

namespace hc::metrics {
namespace {

struct Family {
  const char* key;    // driver-specific statistics member
  const char* name;   // metric name
  const char* type;   // counter | gauge
  double scale;       // multiply the value (ns -> s)
  const char* help;
};

const Family kFamilies[] = {
    {"read-hits", "hostcache_read_hits_total", "counter", 1, "Reads served from the cache."},
    {"read-misses", "hostcache_read_misses_total", "counter", 1, "Reads sent to the origin."},
    {"read-hit-bytes", "hostcache_read_hit_bytes_total", "counter", 1,
     "Bytes read from the cache."},
    {"read-miss-bytes", "hostcache_read_miss_bytes_total", "counter", 1,
     "Bytes read from the origin."},
    {"writes", "hostcache_writes_total", "counter", 1, "Write requests."},
    {"write-bytes", "hostcache_write_bytes_total", "counter", 1, "Bytes written."},
    {"discards", "hostcache_discards_total", "counter", 1, "Discard requests."},
    {"flushes", "hostcache_flushes_total", "counter", 1, "Flush requests."},
    {"admissions", "hostcache_admissions_total", "counter", 1, "Blocks admitted to the cache."},
    {"admissions-refused", "hostcache_admissions_refused_total", "counter", 1,
     "Blocks not admitted (admit-after not reached)."},
    {"evictions", "hostcache_evictions_total", "counter", 1, "Blocks evicted."},
    {"invalidations", "hostcache_invalidations_total", "counter", 1,
     "Cached blocks invalidated by writes or discards."},
    {"sequential-bypasses", "hostcache_sequential_bypasses_total", "counter", 1,
     "Requests that bypassed the cache as part of a sequential stream."},
    {"stale-fills", "hostcache_stale_fills_total", "counter", 1,
     "Fills dropped because a write raced them."},
    {"origin-errors", "hostcache_origin_errors_total", "counter", 1, "Errors from the origin."},
    {"destaged-blocks", "hostcache_destaged_blocks_total", "counter", 1,
     "Dirty blocks written back."},
    {"destage-errors", "hostcache_destage_errors_total", "counter", 1, "Write-back errors."},
    {"ssd-hits", "hostcache_ssd_hits_total", "counter", 1, "Reads served from the SSD tier."},
    {"ssd-hit-bytes", "hostcache_ssd_hit_bytes_total", "counter", 1,
     "Bytes read from the SSD tier."},
    {"ssd-demotions", "hostcache_ssd_demotions_total", "counter", 1,
     "Blocks written to the SSD tier on their eviction from RAM."},
    {"ssd-corrupt", "hostcache_ssd_corrupt_total", "counter", 1,
     "SSD tier slots that failed their checksum (treated as misses)."},
    {"ssd-errors", "hostcache_ssd_errors_total", "counter", 1, "SSD tier I/O errors."},
    {"ssd-size", "hostcache_ssd_size_bytes", "gauge", 1, "SSD tier capacity for data."},
    {"ssd-used", "hostcache_ssd_used_bytes", "gauge", 1, "SSD tier bytes holding blocks."},
    {"ssd-recovered", "hostcache_ssd_recovered_blocks", "gauge", 1,
     "SSD tier entries found valid when the tier was attached (warm restart)."},
    {"ssd-dirty-bytes", "hostcache_ssd_dirty_bytes", "gauge", 1,
     "Bytes of write-back data in the SSD tier's journal that the origin does not have yet."},
    {"ram-limit", "hostcache_ram_limit_bytes", "gauge", 1, "RAM tier size (ram-size)."},
    {"ram-used", "hostcache_ram_used_bytes", "gauge", 1, "RAM tier bytes holding blocks."},
    {"ram-blocks", "hostcache_ram_blocks", "gauge", 1, "Blocks in the RAM tier."},
    {"metadata-bytes", "hostcache_metadata_bytes", "gauge", 1, "Bytes of cache metadata."},
    {"block-size", "hostcache_block_size_bytes", "gauge", 1, "Cache block size."},
    {"dirty-bytes", "hostcache_dirty_bytes", "gauge", 1, "Bytes not yet written back."},
    {"destage-backlog", "hostcache_destage_backlog_blocks", "gauge", 1,
     "Dirty blocks queued for write-back."},
    {"hit-latency-avg-ns", "hostcache_hit_latency_avg_seconds", "gauge", 1e-9,
     "Mean latency of cache hits."},
    {"hit-latency-p99-ns", "hostcache_hit_latency_p99_seconds", "gauge", 1e-9,
     "99th percentile latency of cache hits."},
    {"miss-latency-avg-ns", "hostcache_miss_latency_avg_seconds", "gauge", 1e-9,
     "Mean latency of cache misses."},
    {"miss-latency-p99-ns", "hostcache_miss_latency_p99_seconds", "gauge", 1e-9,
     "99th percentile latency of cache misses."},
    {"flush-latency-avg-ns", "hostcache_flush_latency_avg_seconds", "gauge", 1e-9,
     "Mean latency of flushes."},
    {"flush-latency-p99-ns", "hostcache_flush_latency_p99_seconds", "gauge", 1e-9,
     "99th percentile latency of flushes."},
};

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void Header(std::ostringstream& o, const char* name, const char* type, const char* help) {
  o << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
}

std::string DiskLabels(const std::string& vm, const std::string& target,
                       const std::string& policy) {
  return "domain=\"" + EscapeLabel(vm) + "\",target_device=\"" + EscapeLabel(target) +
         "\",policy=\"" + EscapeLabel(policy) + "\"";
}

// A per-disk family: a sample for each disk `value` has one for, and no
// header either when it has none.
void DiskFamily(std::ostringstream& o, const Snapshot& s, const char* name, const char* type,
                const char* help,
                const std::function<std::optional<double>(const stats::DiskSnapshot&)>& value) {
  bool any = false;
  for (const auto& d : s.disks) {
    std::optional<double> v = value(d);
    if (!v) continue;
    if (!any) Header(o, name, type, help);
    any = true;
    o << name << '{' << DiskLabels(d.vm_name, d.target, d.policy) << "} " << Num(*v) << '\n';
  }
}

}  // namespace

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Render(const Snapshot& s) {
  std::ostringstream o;
  for (const auto& f : kFamilies) {
    DiskFamily(o, s, f.name, f.type, f.help, [&f](const stats::DiskSnapshot& d) {
      const auto it = d.counters.find(f.key);
      return it != d.counters.end() && it->is_number()
                 ? std::optional<double>(it->get<double>() * f.scale)
                 : std::nullopt;
    });
  }
  if (!s.disks.empty()) {
    Header(o, "hostcache_mode_info", "gauge", "The cache mode in force (value 1).");
    for (const auto& d : s.disks) {
      o << "hostcache_mode_info{" << DiskLabels(d.vm_name, d.target, d.policy) << ",mode=\""
        << EscapeLabel(JsonString(d.counters, "mode")) << "\"} 1\n";
    }
  }
  struct Flag {
    const char* key;
    const char* name;
    const char* help;
  };
  for (const Flag& f :
       {Flag{"ssd-active", "hostcache_ssd_active",
             "1 while the SSD tier caches, 0 after an SSD error switched it off."},
        Flag{"ssd-failed", "hostcache_ssd_failed",
             "1 after an SSD I/O error: the tier is no longer used (writes go through to the "
             "origin) until the policy is re-applied."}}) {
    DiskFamily(o, s, f.name, "gauge", f.help, [&f](const stats::DiskSnapshot& d) {
      const auto it = d.counters.find(f.key);
      return it != d.counters.end() && it->is_boolean()
                 ? std::optional<double>(it->get<bool>() ? 1 : 0)
                 : std::nullopt;
    });
  }
  DiskFamily(o, s, "hostcache_sample_timestamp_seconds", "gauge",
             "When the disk's counters were read from QEMU.", [](const stats::DiskSnapshot& d) {
               return std::optional<double>(static_cast<double>(d.time_ms) / 1000.0);
             });
  Header(o, "hostcache_disk_compliance", "gauge",
         "1 for the compliance state each assigned disk is in.");
  for (const auto& a : s.assignments) {
    for (auto c : {store::Compliance::kCompliant, store::Compliance::kPendingRestart,
                   store::Compliance::kNotCompliant, store::Compliance::kError,
                   store::Compliance::kUnknown}) {
      o << "hostcache_disk_compliance{" << DiskLabels(a.vm_name, a.target, a.policy)
        << ",state=\"" << store::ComplianceName(c) << "\"} " << (a.state == c ? 1 : 0) << '\n';
    }
  }
  Header(o, "hostcached_libvirt_connected", "gauge", "1 while connected to libvirtd.");
  o << "hostcached_libvirt_connected " << (s.libvirt_connected ? 1 : 0) << '\n';
  Header(o, "hostcached_catalogue_connected", "gauge",
         "1 while the policy catalogue can take changes (always 1 for a single host's; for "
         "a cluster's, while etcd answers).");
  o << "hostcached_catalogue_connected{kind=\"" << EscapeLabel(s.catalogue.kind) << "\"} "
    << (s.catalogue.connected ? 1 : 0) << '\n';
  Header(o, "hostcached_catalogue_revision", "gauge",
         "The etcd revision this host's copy of the cluster's catalogue reflects (0: local).");
  o << "hostcached_catalogue_revision " << s.catalogue.revision << '\n';
  Header(o, "hostcached_assigned_disks", "gauge", "Disks with a policy assigned.");
  o << "hostcached_assigned_disks " << s.assignments.size() << '\n';
  Header(o, "hostcached_ram_budget_bytes", "gauge", "Host RAM the caches may use.");
  o << "hostcached_ram_budget_bytes " << s.budget.ram_budget << '\n';
  Header(o, "hostcached_ram_assigned_bytes", "gauge", "Cache RAM assigned to disks.");
  o << "hostcached_ram_assigned_bytes " << s.budget.ram_used << '\n';
  Header(o, "hostcached_ssd_budget_bytes", "gauge", "Host SSD space the caches may use.");
  o << "hostcached_ssd_budget_bytes " << s.budget.ssd_budget << '\n';
  Header(o, "hostcached_ssd_assigned_bytes", "gauge", "Cache SSD space assigned to disks.");
  o << "hostcached_ssd_assigned_bytes " << s.budget.ssd_used << '\n';
  if (!s.collectors.empty()) {
    Header(o, "hostcached_stats_errors_total", "counter",
           "Failed statistics collections per VM.");
    for (const auto& [vm, st] : s.collectors) {
      o << "hostcached_stats_errors_total{domain=\"" << EscapeLabel(vm) << "\"} " << st.errors
        << '\n';
    }
    Header(o, "hostcached_stats_skipped_total", "counter",
           "Statistics rounds skipped per VM because the previous one still ran.");
    for (const auto& [vm, st] : s.collectors) {
      o << "hostcached_stats_skipped_total{domain=\"" << EscapeLabel(vm) << "\"} " << st.skipped
        << '\n';
    }
  }
  return o.str();
}

}  // namespace hc::metrics
