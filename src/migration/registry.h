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
#include <optional>
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

  // Where a marked VM's migration is, for GET /vms/{vm}/migration.
  // Phases: "draining" and "migrating" (a migration this hostcached
  // drives: the write-back drain, then libvirt's pre-copy), "switch-over"
  // (the source's nodes are being handed over), "incoming" (the
  // destination, paused until the switch-over ends).
  struct Mark {
    std::string phase;
    int64_t since_ms = 0;  // when the migration was first seen
  };

  bool Migrating(const std::string& uuid) const override;
  // The VM's mark; nullopt when it is not migrating.
  std::optional<Mark> Get(const std::string& uuid) const;

  // Marks the VM in `phase` (keeping when it was first seen), or clears
  // it, taking its lock: waits for an operation in progress on it.  The
  // caller must not hold the VM's lock.
  void Set(const std::string& uuid, bool migrating, const std::string& phase = "");
  // Marks the VM unless it already is; false when it was.  The caller holds
  // the VM's lock.
  bool Begin(const std::string& uuid, const std::string& phase);
  // A new phase of a marked VM (none when it is not marked).
  void SetPhase(const std::string& uuid, const std::string& phase);

 private:
  static constexpr int64_t kHoldMs = 3600 * 1000;
  // The live mark of `uuid` (a stale one is forgotten); caller holds mu_.
  Mark* Find(const std::string& uuid) const;

  core::VmLocks& locks_;
  const Clock& clock_;
  mutable std::mutex mu_;
  mutable std::map<std::string, Mark> migrating_;  // guarded by mu_
};

}  // namespace hc::migration
