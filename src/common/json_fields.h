// Fields of JSON that comes from outside hostcached (QMP replies, a
// definition's -blockdev arguments, counters stored from QEMU), read without
// exceptions.  nlohmann's value() and get() throw when a field has another
// type than expected, and an exception on the reconciler or collector thread
// would end the daemon.  Here a missing field, a field of another type, or
// `j` not being an object gives the default.
//
// Header-only (nlohmann_json); pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace hc {

// The field `key` of object `j`; nullptr when `j` is not an object or has none.
inline const nlohmann::json* JsonField(const nlohmann::json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(std::string(key));
  return it == j.end() ? nullptr : &*it;
}

inline std::string JsonString(const nlohmann::json& j, std::string_view key,
                              std::string_view def = "") {
  const nlohmann::json* f = JsonField(j, key);
  return f && f->is_string() ? f->get<std::string>() : std::string(def);
}

// A non-negative integer field.
inline uint64_t JsonUint(const nlohmann::json& j, std::string_view key, uint64_t def = 0) {
  const nlohmann::json* f = JsonField(j, key);
  if (!f || !f->is_number_integer()) return def;
  if (f->is_number_unsigned()) return f->get<uint64_t>();
  const int64_t v = f->get<int64_t>();  // (built from a signed C++ value)
  return v >= 0 ? static_cast<uint64_t>(v) : def;
}

inline int64_t JsonInt(const nlohmann::json& j, std::string_view key, int64_t def) {
  const nlohmann::json* f = JsonField(j, key);
  if (!f || !f->is_number_integer()) return def;
  if (f->is_number_unsigned() && f->get<uint64_t>() > uint64_t{INT64_MAX}) return def;
  return f->get<int64_t>();
}

inline bool JsonBool(const nlohmann::json& j, std::string_view key, bool def) {
  const nlohmann::json* f = JsonField(j, key);
  return f && f->is_boolean() ? f->get<bool>() : def;
}

inline double JsonNumber(const nlohmann::json& j, std::string_view key, double def) {
  const nlohmann::json* f = JsonField(j, key);
  return f && f->is_number() ? f->get<double>() : def;
}

}  // namespace hc
