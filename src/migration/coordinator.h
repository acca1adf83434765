// Migration coordination: what hostcached does around a libvirt live
// migration of a VM with cached disks (docs/MANAGER.md, "Migration").
//
// The filter travels with the VM through its persistent definition (recipe
// A of docs/LIBVIRT.md: the <qemu:commandline> -blockdev and the
// <qemu:override> are part of the domain XML that libvirt sends to the
// destination), and the driver writes dirty data back when the source's
// nodes are inactivated at switch-over.  The coordinator adds, from
// libvirt's lifecycle events with detail "migrated":
//   source:      Suspended -> event "migrate-out" (switch-over begins;
//                checks leave the VM alone), Stopped -> event
//                "migrated-away" with the duration, its SSD tiers here
//                released (Migrator::ReleaseTiers), the VM checked again
//                (shut off here, or gone with --undefinesource);
//   destination: Started -> event "migrate-in" (incoming, paused: nothing
//                is changed while its nodes are inactive), Resumed ->
//                the assignments the VM carries in its metadata adopted
//                (adopt.h), compliance re-verified from QEMU's block graph
//                and the result recorded; a VM that arrives with hostcache
//                filters but no assignment on this host is reported (its
//                filters keep working, unmanaged).
//
// Draining write-back disks before the switch-over happens in
// Migrator::Migrate (a migration hostcached drives), not here: the first
// event the source gets is Suspended Migrated, at switch-over, too late.
//
// Thread-safety: On* are called on the reconciler thread; the state map is
// guarded by mu_ anyway (tests call from their own thread).
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "common/clock.h"
#include "manager/core/manager.h"
#include "manager/libvirt/libvirt_client.h"
#include "migration/adopt.h"
#include "migration/migrator.h"
#include "migration/registry.h"

namespace hc::migration {

class Coordinator {
 public:
  Coordinator(core::Manager& manager, Registry& registry, Migrator& migrator,
              libvirt::LibvirtClient& lv, const Clock& clock)
      : manager_(manager),
        registry_(registry),
        migrator_(migrator),
        lv_(lv),
        clock_(clock),
        adopter_(manager, lv) {}

  // Adopts VMs that arrive with carried assignments (adopt.h).
  Adopter& adopter() { return adopter_; }

  // Whether `ev` is a migration event (handled by OnEvent).
  static bool IsMigrationEvent(libvirt::Lifecycle ev);

  // Handles any event: migration events here, the others passed to the
  // manager (Manager::OnLifecycle).
  void OnEvent(const std::string& uuid, const std::string& name, libvirt::Lifecycle ev,
               const std::string& detail = "");

 private:
  void Outgoing(const std::string& uuid, const std::string& name);
  void Away(const std::string& uuid, const std::string& name);
  void Incoming(const std::string& uuid, const std::string& name);
  void Resumed(const std::string& uuid, const std::string& name);
  // The VM migrated away and its definition is gone here: its assignments
  // (carried in its metadata) are forgotten.
  void ForgetDeparted(const std::string& uuid, const std::string& name);
  // "vda (policy 'balanced'), vdb (...)" for the VM's assignments; "" none.
  std::string CachedDisks(const std::string& uuid);
  // Seconds since the migration of `uuid` was first seen; -1 unknown.
  double Elapsed(const std::string& uuid);

  core::Manager& manager_;       // not owned
  Registry& registry_;           // not owned
  Migrator& migrator_;           // not owned
  libvirt::LibvirtClient& lv_;   // not owned
  const Clock& clock_;           // not owned
  Adopter adopter_;
  std::mutex mu_;
  std::map<std::string, int64_t> started_ms_;  // guarded by mu_: uuid -> first event
  // guarded by mu_: migrated away, still defined here (an undefine follows
  // with --undefinesource)
  std::set<std::string> departed_;
};

}  // namespace hc::migration
