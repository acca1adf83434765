// What core sees of live migrations: whether a VM is being migrated.  The
// migrating state has one owner, src/migration (migration::Registry); core
// only asks.  While a VM migrates its QEMU nodes are inactive around the
// switch-over (and on a destination until it resumes), so checks leave it
// alone and API changes answer 409.
//
// Callers ask with the VM's lock held (VmLocks) when they act on the
// answer: the mark changes only under that lock.
// Thread-safety: implementations are callable from any thread.
#pragma once

#include <string>

namespace hc::core {

class MigrationGate {
 public:
  virtual ~MigrationGate() = default;
  virtual bool Migrating(const std::string& uuid) const = 0;

  // A gate through which no VM ever migrates (tools and tests without the
  // migration module).
  static const MigrationGate& None();
};

}  // namespace hc::core
