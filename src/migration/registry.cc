#include "migration/registry.h"

namespace hc::migration {

void Registry::Set(const std::string& uuid, bool migrating) {
  // Under the VM's lock: an operation that holds it sees one value for its
  // whole length.
  auto vlock = locks_.Lock(uuid);
  std::lock_guard lock(mu_);
  if (migrating) {
    migrating_.emplace(uuid, clock_.NowMs());
  } else {
    migrating_.erase(uuid);
  }
}

bool Registry::Begin(const std::string& uuid) {
  if (Migrating(uuid)) return false;  // (also forgets a stale mark)
  std::lock_guard lock(mu_);
  return migrating_.emplace(uuid, clock_.NowMs()).second;
}

bool Registry::Migrating(const std::string& uuid) const {
  std::lock_guard lock(mu_);
  auto it = migrating_.find(uuid);
  if (it == migrating_.end()) return false;
  if (clock_.NowMs() - it->second > kHoldMs) {
    migrating_.erase(it);
    return false;
  }
  return true;
}

}  // namespace hc::migration
