// The migrating registry: which VMs are being live-migrated right now.  It
// is the one owner of that state; core sees it only as a
// core::MigrationGate (checks leave a migrating VM alone, API changes answer
// 409), and the migration module (Coordinator, Migrator) marks and clears.
//
// The mark changes only under the VM's lock (core::VmLocks), and every
// operation on a VM tests it under that lock, so an operation sees one
// value for its whole length.  A mark is forgotten after an hour: an end
// event missed (libvirtd restarted meanwhile) must not keep the VM
// unchecked for ever.
//
// Ownership: borrows the VM locks and the clock; they must outlive it.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "manager/core/migration_gate.h"
#include "manager/core/vm_locks.h"

namespace hc::migration {

class Registry final : public core::MigrationGate {
 public:
  Registry(core::VmLocks& locks, const Clock& clock) : locks_(locks), clock_(clock) {}
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  bool Migrating(const std::string& uuid) const override;

  // Marks (or clears) the VM, taking its lock: waits for an operation in
  // progress on it.  The caller must not hold the VM's lock.
  void Set(const std::string& uuid, bool migrating);
  // Marks the VM unless it already is; false when it was.  The caller holds
  // the VM's lock.
  bool Begin(const std::string& uuid);

 private:
  static constexpr int64_t kHoldMs = 3600 * 1000;

  core::VmLocks& locks_;
  const Clock& clock_;
  mutable std::mutex mu_;
  // uuid -> when its migration was seen to start; guarded by mu_.
  mutable std::map<std::string, int64_t> migrating_;
};

}  // namespace hc::migration
