// The daemon's durable state: policies, assignments (policy per VM disk, with
// its compliance), the SSD tiers hostcached made for disks, the event log
// and the statistics time series.
//
// Store is the seam; SqliteStore (sqlite_store.h) is the real one.  Every
// method is a single transaction.  Implementations are thread-safe: the HTTP
// workers, the reconciler and the statistics collector call them
// concurrently.  Returned values are copies owned by the caller.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "manager/policy/policy.h"

namespace hc::store {

enum class Compliance { kUnknown, kCompliant, kPendingRestart, kNotCompliant, kError };

std::string_view ComplianceName(Compliance c);  // "compliant", "pending-restart", ...
Compliance ParseCompliance(std::string_view s);

struct Assignment {
  std::string vm_uuid;    // libvirt domain UUID: the key (names can change)
  std::string vm_name;    // last name seen, for display
  std::string target;     // disk target device ("vda")
  std::string policy;     // policy name
  std::string node_name;  // the filter's QEMU node name ("hc-vda")
  Compliance state = Compliance::kUnknown;
  std::string reason;     // why, in words a person can act on
  int64_t updated_ms = 0;
  int64_t checked_ms = 0;  // last compliance check
};

// The SSD tier file of one disk, as hostcached knows it.  Once the driver
// has formatted the file for the disk (`formatted`), the file may hold
// write-back data the disk does not have yet: hostcached never replaces it
// by a blank one on its own (the filter gets ssd-create=off), only after
// the operator gives it up (POST .../ssd-tier/forget).
struct SsdTier {
  std::string vm_uuid;
  std::string target;
  std::string path;       // the tier file
  std::string origin_id;  // the filter's origin-id ("<vm-uuid>/<target>")
  bool formatted = false;  // hostcached has seen the driver's superblock in it
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  // The file was not closed cleanly and the running VM was found without
  // its filter: the guest may have written to the disk since, so the
  // tier's journal may be older than the disk.  It is never attached
  // again, only given up (POST .../ssd-tier/forget).
  bool stale = false;

  bool operator==(const SsdTier&) const = default;
};

struct Event {
  int64_t id = 0;
  int64_t time_ms = 0;
  std::string level;    // info, warning, error
  std::string vm;       // VM name ("" for daemon-wide events)
  std::string target;   // disk target ("" when not about one disk)
  std::string action;   // what happened: "assign", "insert-live", "define", ...
  std::string message;  // what and why
};

// What Store::ListEvents returns.
struct EventQuery {
  int64_t since_id = 0;  // only events with a larger id
  size_t limit = 100;
  std::string vm;        // only this VM's ("" = every VM's)
  std::string action;    // only this action ("" = any)
};

struct StatSample {
  int64_t time_ms = 0;
  nlohmann::json counters;  // the driver-specific counters of query-blockstats
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Result<std::vector<policy::Policy>> ListPolicies() = 0;
  virtual Result<policy::Policy> GetPolicy(const std::string& name) = 0;
  // kAlreadyExists when the name is taken.
  virtual Status CreatePolicy(const policy::Policy& p, int64_t now_ms) = 0;
  // kNotFound when absent.
  virtual Status UpdatePolicy(const policy::Policy& p, int64_t now_ms) = 0;
  // kNotFound when absent, kConflict when a disk uses it.
  virtual Status DeletePolicy(const std::string& name) = 0;

  virtual Result<std::vector<Assignment>> ListAssignments() = 0;
  virtual Result<std::optional<Assignment>> GetAssignment(const std::string& vm_uuid,
                                                          const std::string& target) = 0;
  // Insert or replace (keyed by vm_uuid + target).  kNotFound if the policy is absent.
  virtual Status PutAssignment(const Assignment& a) = 0;
  virtual Status DeleteAssignment(const std::string& vm_uuid, const std::string& target) = 0;

  // The disk's SSD tier record (none when hostcached made no tier for it).
  virtual Result<std::optional<SsdTier>> GetSsdTier(const std::string& vm_uuid,
                                                    const std::string& target) = 0;
  virtual Result<std::vector<SsdTier>> ListSsdTiers() = 0;
  // Insert or replace (keyed by vm_uuid + target).
  virtual Status PutSsdTier(const SsdTier& t) = 0;
  // A missing record is fine.
  virtual Status DeleteSsdTier(const std::string& vm_uuid, const std::string& target) = 0;

  virtual Result<int64_t> AppendEvent(const Event& e) = 0;
  // Newest first; only ids > since_id; at most `limit`; the vm and action
  // filters when not empty.
  virtual Result<std::vector<Event>> ListEvents(const EventQuery& q) = 0;
  Result<std::vector<Event>> ListEvents(int64_t since_id, size_t limit, const std::string& vm) {
    return ListEvents(EventQuery{since_id, limit, vm, ""});
  }

  virtual Status AppendStats(const std::string& vm_uuid, const std::string& target,
                             const StatSample& s) = 0;
  // Oldest first, the last `limit` samples.
  virtual Result<std::vector<StatSample>> ListStats(const std::string& vm_uuid,
                                                    const std::string& target,
                                                    size_t limit) = 0;
  virtual Status DeleteStats(const std::string& vm_uuid, const std::string& target) = 0;
};

}  // namespace hc::store
