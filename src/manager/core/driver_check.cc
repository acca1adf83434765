#include "manager/core/driver_check.h"

namespace hc::core {

Status DriverCheck::Check(const policy::Rules& r) {
  std::string key = policy::RulesToJson(r).dump();
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  Status s = tools_.CheckOptions(r);
  // Only remember definite answers (not "qemu-img could not run").
  if (s || s.error().code == ErrorCode::kInvalidArgument) {
    std::lock_guard lock(mu_);
    cache_[key] = s;
  }
  return s;
}

}  // namespace hc::core
