#include "manager/policy/policy.h"

#include <algorithm>
#include <set>

#include "common/util.h"

namespace hc::policy {
namespace {

using nlohmann::json;

Status Invalid(std::string msg) { return Fail(ErrorCode::kInvalidArgument, std::move(msg)); }

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// A size rule: an integer number of bytes or a string such as "256M".
Result<uint64_t> SizeFromJson(const json& v, const std::string& rule) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    if (v.get<int64_t>() < 0) {
      return Fail(ErrorCode::kInvalidArgument, "rule '" + rule + "' must not be negative");
    }
    return static_cast<uint64_t>(v.get<int64_t>());
  }
  if (v.is_string()) {
    auto r = ParseSize(v.get<std::string>());
    if (!r) return tl::unexpected(Annotate(r.error(), "rule '" + rule + "'"));
    return *r;
  }
  return Fail(ErrorCode::kInvalidArgument,
              "rule '" + rule + "' must be a size: bytes as an integer or a string like \"256M\"");
}

Result<uint64_t> CountFromJson(const json& v, const std::string& rule, uint64_t max) {
  if (!v.is_number_integer()) {
    return Fail(ErrorCode::kInvalidArgument, "rule '" + rule + "' must be an integer");
  }
  if (!v.is_number_unsigned() && v.get<int64_t>() < 0) {
    return Fail(ErrorCode::kInvalidArgument, "rule '" + rule + "' must not be negative");
  }
  uint64_t x = v.get<uint64_t>();
  if (x > max) {
    return Fail(ErrorCode::kInvalidArgument,
                "rule '" + rule + "' must be at most " + std::to_string(max));
  }
  return x;
}

}  // namespace

std::string_view ModeName(CacheMode m) {
  switch (m) {
    case CacheMode::kPassThrough: return "pass-through";
    case CacheMode::kWriteAround: return "write-around";
    case CacheMode::kWriteThrough: return "write-through";
    case CacheMode::kWriteBack: return "write-back";
  }
  return "write-through";
}

std::optional<CacheMode> ParseMode(std::string_view s) {
  for (auto m : {CacheMode::kPassThrough, CacheMode::kWriteAround, CacheMode::kWriteThrough,
                 CacheMode::kWriteBack}) {
    if (ModeName(m) == s) return m;
  }
  return std::nullopt;
}

const std::vector<std::string>& RuleNames() {
  static const std::vector<std::string> kNames = {
      "mode",      "ram-size",         "block-size", "admit-after", "seq-cutoff",
      "max-dirty", "max-dirty-age-ms", "ssd-size",   "ssd-dir",
      "migrate-without-ssd"};
  return kNames;
}

Status ValidateName(std::string_view name) {
  if (name.empty()) return Invalid("a policy needs a name");
  if (name.size() > kMaxNameLength) {
    return Invalid("policy name is longer than " + std::to_string(kMaxNameLength) +
                   " characters");
  }
  auto ok = [](char c, bool first) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           (!first && (c == '.' || c == '_' || c == '-'));
  };
  for (size_t i = 0; i < name.size(); i++) {
    if (!ok(name[i], i == 0)) {
      return Invalid(
          "policy name may only use letters, digits, '.', '_' and '-', and must start with a "
          "letter or digit");
    }
  }
  return {};
}

uint64_t MinSsdSize(uint64_t block_size) {
  // hc_ssd_layout (qemu-block-driver/hc-ssd.c) for one slot: two 4 KiB
  // superblocks, one 4 KiB slot-table sector, the data aligned to 4 KiB and
  // to the block size, one block.
  const uint64_t align = std::max<uint64_t>(block_size, 4096);
  const uint64_t data = (8192 + 4096 + align - 1) / align * align;
  return data + block_size;
}

Status ValidateRules(const Rules& r) {
  const uint64_t bs = r.block_size;
  if (bs < kMinBlockSize || bs > kMaxBlockSize || !IsPowerOfTwo(bs)) {
    return Invalid("block-size must be a power of two between 512 and 2M bytes, not " +
                   std::to_string(bs));
  }
  if (r.ram_size < bs) {
    return Invalid("ram-size must be at least one cache block (block-size " +
                   std::to_string(bs) + " bytes), not " + std::to_string(r.ram_size));
  }
  if (r.ram_size / bs > kMaxSlots) {
    return Invalid("ram-size " + FormatSize(r.ram_size) + " holds more than " +
                   std::to_string(kMaxSlots) + " blocks of " + FormatSize(bs) +
                   "; use a larger block-size");
  }
  if (r.admit_after < 1 || r.admit_after > 0xffffffffu) {
    return Invalid("admit-after must be between 1 and 4294967295");
  }
  if (r.ssd_size != 0) {
    if (r.ssd_dir.empty() || r.ssd_dir[0] != '/') {
      return Invalid("an SSD tier (ssd-size > 0) needs ssd-dir, an absolute directory path");
    }
    if (r.ssd_size < MinSsdSize(bs)) {
      return Invalid("ssd-size must be 0 (no SSD tier) or at least " +
                     FormatSize(MinSsdSize(bs)) + " with block-size " + FormatSize(bs) +
                     " (the tier's superblocks, one slot-table sector and one block), not " +
                     FormatSize(r.ssd_size));
    }
  }
  if (r.ssd_dir.size() > 4096 || r.ssd_dir.find('\0') != std::string::npos ||
      r.ssd_dir.find(',') != std::string::npos) {
    return Invalid("ssd-dir must be a path without commas");
  }
  if (r.max_dirty != 0 && (r.max_dirty < bs || r.max_dirty > r.ram_size)) {
    return Invalid("max-dirty must be 0 (the driver's default, ram-size/2) or between one "
                   "block (" + FormatSize(bs) + ") and ram-size (" + FormatSize(r.ram_size) +
                   "), not " + FormatSize(r.max_dirty));
  }
  if (r.max_dirty_age_ms < 1 || r.max_dirty_age_ms > kMaxDirtyAgeMs) {
    return Invalid("max-dirty-age-ms must be between 1 and 3600000, not " +
                   std::to_string(r.max_dirty_age_ms));
  }
  return {};
}

Status Validate(const Policy& p) {
  if (auto s = ValidateName(p.name); !s) return s;
  if (p.description.size() > kMaxDescriptionLength) {
    return Invalid("description is longer than " + std::to_string(kMaxDescriptionLength) +
                   " characters");
  }
  return ValidateRules(p.rules);
}

Result<Rules> RulesFromJson(const json& j, const Rules& base) {
  if (!j.is_object()) return Fail(ErrorCode::kInvalidArgument, "'rules' must be an object");
  Rules r = base;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "mode") {
      auto m = v.is_string() ? ParseMode(v.get<std::string>()) : std::nullopt;
      if (!m) {
        return Fail(ErrorCode::kInvalidArgument,
                    "rule 'mode' must be pass-through, write-around, write-through or "
                    "write-back");
      }
      r.mode = *m;
    } else if (k == "ram-size" || k == "block-size" || k == "seq-cutoff" || k == "ssd-size" ||
               k == "max-dirty") {
      auto s = SizeFromJson(v, k);
      if (!s) return tl::unexpected(s.error());
      (k == "ram-size"     ? r.ram_size
       : k == "block-size" ? r.block_size
       : k == "seq-cutoff" ? r.seq_cutoff
       : k == "max-dirty"  ? r.max_dirty
                           : r.ssd_size) = *s;
    } else if (k == "admit-after") {
      auto c = CountFromJson(v, k, 0xffffffffu);
      if (!c) return tl::unexpected(c.error());
      r.admit_after = *c;
    } else if (k == "max-dirty-age-ms") {
      auto c = CountFromJson(v, k, kMaxDirtyAgeMs);
      if (!c) return tl::unexpected(c.error());
      r.max_dirty_age_ms = *c;
    } else if (k == "ssd-dir") {
      if (!v.is_string()) {
        return Fail(ErrorCode::kInvalidArgument, "rule 'ssd-dir' must be a string");
      }
      r.ssd_dir = v.get<std::string>();
    } else if (k == "migrate-without-ssd") {
      if (!v.is_boolean()) {
        return Fail(ErrorCode::kInvalidArgument, "rule 'migrate-without-ssd' must be true or false");
      }
      r.migrate_without_ssd = v.get<bool>();
    } else {
      std::string known;
      for (const auto& n : RuleNames()) known += (known.empty() ? "" : ", ") + n;
      return Fail(ErrorCode::kInvalidArgument,
                  "unknown rule '" + k + "'; known rules: " + known);
    }
  }
  if (auto s = ValidateRules(r); !s) return tl::unexpected(s.error());
  return r;
}

json RulesToJson(const Rules& r) {
  return json{{"mode", ModeName(r.mode)},
              {"ram-size", r.ram_size},
              {"block-size", r.block_size},
              {"admit-after", r.admit_after},
              {"seq-cutoff", r.seq_cutoff},
              {"max-dirty", r.max_dirty},
              {"max-dirty-age-ms", r.max_dirty_age_ms},
              {"ssd-size", r.ssd_size},
              {"ssd-dir", r.ssd_dir},
              {"migrate-without-ssd", r.migrate_without_ssd}};
}

Result<Policy> PolicyFromJson(const json& j) {
  if (!j.is_object()) return Fail(ErrorCode::kInvalidArgument, "a policy must be a JSON object");
  Policy p;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "name" && it.key() != "description" && it.key() != "rules") {
      return Fail(ErrorCode::kInvalidArgument,
                  "unknown field '" + it.key() + "'; a policy has name, description and rules");
    }
  }
  if (!j.contains("name") || !j["name"].is_string()) {
    return Fail(ErrorCode::kInvalidArgument, "a policy needs a 'name' string");
  }
  p.name = j["name"].get<std::string>();
  if (j.contains("description")) {
    if (!j["description"].is_string()) {
      return Fail(ErrorCode::kInvalidArgument, "'description' must be a string");
    }
    p.description = j["description"].get<std::string>();
  }
  if (j.contains("rules")) {
    auto r = RulesFromJson(j["rules"]);
    if (!r) return tl::unexpected(r.error());
    p.rules = *r;
  }
  if (auto s = Validate(p); !s) return tl::unexpected(s.error());
  return p;
}

json PolicyToJson(const Policy& p) {
  return json{{"name", p.name}, {"description", p.description}, {"rules", RulesToJson(p.rules)}};
}

json DriverOptions(const Rules& r, const std::string& node_name, const std::string& file_node,
                   const SsdSpec* ssd, bool ssd_by_name) {
  // blockdev-reopen resets options not named to their defaults: name all.
  json o{{"driver", "hostcache"},
         {"node-name", node_name},
         {"file", file_node},
         {"mode", ModeName(r.mode)},
         {"ram-size", r.ram_size},
         {"block-size", r.block_size},
         {"admit-after", r.admit_after},
         {"seq-cutoff", r.seq_cutoff},
         {"max-dirty-age-ms", r.max_dirty_age_ms}};
  if (r.max_dirty != 0) o["max-dirty"] = r.max_dirty;
  if (ssd) {
    if (ssd_by_name) {
      o["ssd"] = ssd->node_name;
    } else {
      o["ssd"] = json{{"driver", "file"}, {"filename", ssd->filename}, {"node-name", ssd->node_name}};
    }
    o["origin-id"] = ssd->origin_id;
    o["ssd-create"] = ssd->create;
  }
  return o;
}

bool ReopenCompatible(const Rules& from, const Rules& to) {
  return from.block_size == to.block_size;
}

std::vector<Policy> DefaultPolicies() {
  std::vector<Policy> v;
  Policy balanced{"balanced",
                  "Write-through RAM cache of 256 MiB in 4 KiB blocks; long sequential "
                  "streams bypass it. A safe default for most disks.",
                  Rules{}};
  v.push_back(balanced);
  Rules read_mostly;
  read_mostly.mode = CacheMode::kWriteAround;
  read_mostly.ram_size = 1ull << 30;
  read_mostly.block_size = 64 << 10;
  read_mostly.admit_after = 2;
  read_mostly.seq_cutoff = 16ull << 20;
  v.push_back(Policy{"read-mostly",
                     "1 GiB write-around cache in 64 KiB blocks for read-heavy disks (boot "
                     "images, databases' read replicas); writes go to the origin only, blocks "
                     "are cached on their second miss.",
                     read_mostly});
  Rules monitor;
  monitor.mode = CacheMode::kPassThrough;
  // The smallest tier the driver takes with its max-dirty default
  // (ram-size/2 must hold a block); pass-through never fills it.
  monitor.ram_size = 1 << 20;
  v.push_back(Policy{"monitor",
                     "Pass-through: caches nothing, only counts the disk's I/O so you can "
                     "see what a cache would do before you give it memory.",
                     monitor});
  return v;
}

}  // namespace hc::policy
