// One mutex per VM (by UUID): operations on one VM are serialised by it.
// Every operation that changes a VM takes it first and then tests whether
// the VM is being live-migrated (core::MigrationGate); the migration
// module changes that mark only under the same lock, so an operation sees
// one value for its whole length.
//
// Thread-safety: Lock may be called from any thread; a mutex, once made,
// lives as long as the VmLocks.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace hc::core {

class VmLocks {
 public:
  VmLocks() = default;
  VmLocks(const VmLocks&) = delete;
  VmLocks& operator=(const VmLocks&) = delete;

  // Blocks until the VM's mutex is held; the caller must not hold it yet.
  std::unique_lock<std::mutex> Lock(const std::string& uuid) {
    return std::unique_lock<std::mutex>(Of(uuid));
  }

 private:
  std::mutex& Of(const std::string& uuid) {
    std::lock_guard lock(map_mu_);
    auto& m = vm_mu_[uuid];
    if (!m) m = std::make_unique<std::mutex>();
    return *m;
  }

  std::mutex map_mu_;
  std::map<std::string, std::unique_ptr<std::mutex>> vm_mu_;  // guarded by map_mu_
};

}  // namespace hc::core
