// Storage policies: a named set of cache rules that hostcached applies to VM
// disks.  Rule names follow the hostcache driver's option names where they map
// (mode, ram-size, block-size, admit-after, seq-cutoff, max-dirty,
// max-dirty-age-ms); the SSD rules (ssd-size, ssd-dir) become the driver's
// `ssd` child (a file node on a tier file hostcached creates, see
// core/ssd_files.h) and `origin-id`, and are counted against the SSD budget.
//
// Validation uses the limits the driver enforces (hc_config_check in
// qemu-block-driver/hc-engine.c), so a policy that validates here opens in
// QEMU, except write-back, which the current driver refuses at open; that
// refusal is reported as the disk's compliance reason.
//
// Plain values; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace hc::policy {

enum class CacheMode { kPassThrough, kWriteAround, kWriteThrough, kWriteBack };

std::string_view ModeName(CacheMode m);
std::optional<CacheMode> ParseMode(std::string_view s);

// Limits shared with the driver.
inline constexpr uint64_t kMinBlockSize = 512;
inline constexpr uint64_t kMaxBlockSize = 2ull << 20;
inline constexpr uint64_t kMaxSlots = 0x7fffffff;
inline constexpr uint64_t kMaxDirtyAgeMs = 3600000;
inline constexpr size_t kMaxNameLength = 63;
inline constexpr size_t kMaxDescriptionLength = 1024;

struct Rules {
  CacheMode mode = CacheMode::kWriteThrough;  // driver option `mode`
  uint64_t ram_size = 256ull << 20;           // `ram-size`, bytes of RAM tier
  uint64_t block_size = 4096;                 // `block-size`, power of two 512..2M
  uint64_t admit_after = 1;                   // `admit-after`, misses before caching
  uint64_t seq_cutoff = 4ull << 20;           // `seq-cutoff`, bytes, 0 = off
  uint64_t max_dirty = 0;            // `max-dirty`, write-back: dirty bytes at most
                                     // (0 = the driver's default, ram-size/2)
  uint64_t max_dirty_age_ms = 5000;  // `max-dirty-age-ms`, write-back: age bound
  uint64_t ssd_size = 0;             // `ssd-size`, bytes of SSD tier, 0 = none
  std::string ssd_dir;               // `ssd-dir`, directory for SSD tier files
  // `migrate-without-ssd`: a live migration to a host without the SSD
  // budget for the tier is admitted there without it (RAM tier only);
  // false, the destination refuses it (src/migration/prepare.h).
  bool migrate_without_ssd = false;

  bool operator==(const Rules&) const = default;
};

struct Policy {
  std::string name;
  std::string description;
  Rules rules;

  bool operator==(const Policy&) const = default;
};

// Every rule name accepted in JSON, in documentation order.
const std::vector<std::string>& RuleNames();

// Checks a name ([A-Za-z0-9][A-Za-z0-9._-]{0,62}).
Status ValidateName(std::string_view name);

// Checks rules against the driver's limits; the message names the rule.
Status ValidateRules(const Rules& r);

// The smallest SSD tier the driver can use with this block size (its
// format needs room for metadata and one block: docs/SSD-FORMAT.md).
uint64_t MinSsdSize(uint64_t block_size);

Status Validate(const Policy& p);

// JSON <-> policy.  RulesFromJson starts from `base` (defaults or the current
// rules for a partial update), rejects unknown keys and wrong types, and
// accepts sizes as integers (bytes) or strings ("256M").
Result<Rules> RulesFromJson(const nlohmann::json& j, const Rules& base = Rules{});
nlohmann::json RulesToJson(const Rules& r);
Result<Policy> PolicyFromJson(const nlohmann::json& j);
nlohmann::json PolicyToJson(const Policy& p);

// The SSD tier of one filter node: the driver's `ssd` child, `origin-id`
// and `ssd-create`.
struct SsdSpec {
  std::string filename;   // the tier file (a raw file node)
  std::string node_name;  // the file node's name ("hc-vda-ssd")
  std::string origin_id;  // "<vm-uuid>/<target>": the tier serves only this disk
  // `ssd-create`: the driver may format a blank file (or one of another
  // origin).  Only for a tier file hostcached made and the driver has not
  // formatted yet; off, a missing or replaced tier stops the filter from
  // opening instead of silently losing the write-back data it may hold.
  bool create = false;
};

// The driver options for a hostcache node over `file_node`, as blockdev-add
// and -blockdev take them.  With `ssd`, the `ssd` child is given inline
// ({"driver":"file","filename":...,"node-name":...}), or by its node name
// when `ssd_by_name` (blockdev-reopen must name the current child; an
// omitted child is refused), with `origin-id` and `ssd-create`.
nlohmann::json DriverOptions(const Rules& r, const std::string& node_name,
                             const std::string& file_node, const SsdSpec* ssd = nullptr,
                             bool ssd_by_name = false);

// Whether `to` can be reached from `from` with blockdev-reopen (block-size is
// fixed for the life of a node).
bool ReopenCompatible(const Rules& from, const Rules& to);

// The policies a fresh database starts with.
std::vector<Policy> DefaultPolicies();

}  // namespace hc::policy
