#include "migration/registry.h"

namespace hc::migration {

void Registry::Set(const std::string& uuid, bool migrating, const std::string& phase) {
  // Under the VM's lock: an operation that holds it sees one value for its
  // whole length.
  auto vlock = locks_.Lock(uuid);
  std::lock_guard lock(mu_);
  if (!migrating) {
    migrating_.erase(uuid);
  } else if (Mark* m = Find(uuid)) {
    m->phase = phase;
  } else {
    migrating_[uuid] = Mark{phase, clock_.NowMs()};
  }
}

bool Registry::Begin(const std::string& uuid, const std::string& phase) {
  std::lock_guard lock(mu_);
  if (Find(uuid)) return false;
  migrating_[uuid] = Mark{phase, clock_.NowMs()};
  return true;
}

void Registry::SetPhase(const std::string& uuid, const std::string& phase) {
  std::lock_guard lock(mu_);
  if (Mark* m = Find(uuid)) m->phase = phase;
}

Registry::Mark* Registry::Find(const std::string& uuid) const {
  auto it = migrating_.find(uuid);
  if (it == migrating_.end()) return nullptr;
  if (clock_.NowMs() - it->second.since_ms > kHoldMs) {
    migrating_.erase(it);
    return nullptr;
  }
  return &it->second;
}

bool Registry::Migrating(const std::string& uuid) const {
  std::lock_guard lock(mu_);
  return Find(uuid) != nullptr;
}

std::optional<Registry::Mark> Registry::Get(const std::string& uuid) const {
  std::lock_guard lock(mu_);
  const Mark* m = Find(uuid);
  return m ? std::optional<Mark>(*m) : std::nullopt;
}

}  // namespace hc::migration
