// Driving a live migration from this host (POST /api/v1/vms/{vm}/migrate):
// the destination XML with the filters of the VM's assignments
// (MigrationXml), the drain of write-back filters before it (drain.cc), the
// migration itself through libvirt, and, when a VM has left by live
// migration however it was started, the release of its SSD tiers here.
// docs/MANAGER.md, "Migration"; docs/ARCHITECTURE.md, "The path of a
// migration".
//
// Ownership: borrows the manager, the registry, the store, libvirt, the QEMU
// tools and the clock; they must outlive it.
// Thread-safety: every method may be called from any thread and blocks on
// libvirt and QEMU (call it from worker threads, never the HTTP I/O
// thread).  Each takes the VM's lock (Manager::vm_locks) only for its
// steps, never across the migration itself.
#pragma once

#include <string>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "manager/core/manager.h"
#include "manager/core/peers.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/libvirt/live_filter.h"
#include "manager/libvirt/qemu_tools.h"
#include "manager/store/store.h"
#include "migration/registry.h"

namespace hc::migration {

struct MigratorConfig {
  std::string emulator;  // QEMU with the hostcache driver ("" = leave <emulator>)
  // Before a live migration it drives, the dirty data of write-back disks
  // is written back during pre-copy (see Migrate): for at most this long
  // (0: not at all; the driver writes it back at switch-over), until each
  // disk has at most drain_threshold dirty bytes, polled every
  // drain_poll_ms.
  int64_t drain_timeout_ms = 30000;
  uint64_t drain_threshold = 1 << 20;
  int64_t drain_poll_ms = 200;
  // The hosts Migrate may send VMs to (by name).
  core::Peers peers;
};

// Where a VM's migration is (GET /api/v1/vms/{vm}/migration), from the
// registry and the driver's statistics (docs/DRIVER.md, "Live migration").
struct DiskProgress {
  std::string target;
  bool reported = false;        // QEMU gave the filter's statistics
  uint64_t dirty_bytes = 0;     // write-back data not on the origin yet (`dirty-bytes`)
  uint64_t drained_bytes = 0;   // written back by the driver's pre-copy drain
                                // (`migration-drained-bytes`)
  std::string warm_up_state;    // `warm-up-state`: none, received, running, done ("" unreported)
  uint64_t warm_up_blocks = 0;  // blocks to warm (`warm-up-blocks`)
  uint64_t warm_up_done = 0;    // of them, done (`warm-up-done`)
  uint64_t warm_up_bytes_received = 0;  // data received in the stream (`warm-up-bytes-received`)
};
struct MigrationProgress {
  std::string vm;
  // A Registry phase ("draining", "migrating", "switch-over", "incoming"),
  // "warming-up" (not migrating, a disk's warm-up runs), or "none".
  std::string phase;
  double seconds = 0;  // since the migration was first seen (0 when not migrating)
  std::vector<DiskProgress> disks;  // the VM's assigned disks
};

class Migrator {
 public:
  Migrator(core::Manager& manager, Registry& registry, store::Store& store,
           libvirt::LibvirtClient& lv, libvirt::QemuTools& tools, const Clock& clock,
           MigratorConfig config)
      : manager_(manager), registry_(registry), store_(store), lv_(lv), tools_(tools),
        live_(lv), clock_(clock), config_(std::move(config)) {}
  Migrator(const Migrator&) = delete;
  Migrator& operator=(const Migrator&) = delete;

  // The domain XML to pass as the destination XML of a live migration of a
  // running VM (virsh migrate --xml, VIR_MIGRATE_PARAM_DEST_XML): its
  // migratable live XML with the filters of its assignments added (recipe
  // A, node names as the destination will number them; the SSD tier at the
  // same path, which must exist there).  A filter inserted live is only in
  // the persistent definition, not in the live XML libvirt would send.
  Result<std::string> MigrationXml(const std::string& vm);

  // Migrates a running VM live to another libvirtd with MigrationXml() as
  // its destination XML (the filters of its cached disks start there with
  // it).  `req.destination` names a configured peer (config.peers; else
  // kInvalidArgument saying how to configure one), whose libvirt URI is
  // used; `req.migrate_uri` must be "" or tcp://HOST[:PORT] of the peer's
  // migration host (Peers::MigrateUri).  First the write-back disks are
  // drained while the guest runs: each filter is reopened with
  // max-dirty-age-ms 1 (its other options as the policy says) and its
  // dirty-bytes polled until at most drain_threshold, or
  // `drain_timeout_ms` passed (-1: the configured one; 0: no drain), so the
  // switch-over has little left to write back.  The migration XML carries
  // the policy's own value.  When the migration fails, the drained filters
  // get the policy's max-dirty-age-ms back.  Blocks for the drain and the
  // migration; the VM is marked migrating (Registry) from the start
  // (checks, which would re-assert the policy's value, leave it alone), not
  // locked.  Returns the seconds the migration took (without the drain).
  Result<double> Migrate(const std::string& vm, libvirt::MigrateRequest req,
                         int64_t drain_timeout_ms = -1);

  // Where the migration of `vm` (name or UUID) is.  kNotFound for an
  // unknown VM.  A disk whose statistics QEMU does not give (the VM shut
  // off, nodes inactive around the switch-over) has `reported` false.
  Result<MigrationProgress> Progress(const std::string& vm);

  // After the VM left by live migration (its filters wrote everything back
  // and dropped their tiers' content at the hand-over), its tiers here hold
  // nothing: their records go, and their files unless still in use.
  void ReleaseTiers(const std::string& uuid, const std::string& name);

 private:
  // MigrationXml of `dom`; the caller holds its VM lock.
  Result<std::string> MigrationXmlLocked(const libvirt::DomainRef& dom);
  // A write-back filter drained before a migration (drain.cc).
  struct DrainedDisk {
    std::string target, node, child, ssd_child;
    policy::Rules rules;  // the policy's, as the filter ran before the drain
    uint64_t before = 0, after = 0;  // dirty-bytes
  };
  std::vector<DrainedDisk> DrainWriteBack(const libvirt::DomainRef& dom, int64_t timeout_ms);
  // Reopens the write-back filters of `dom` with max-dirty-age-ms 1; the
  // caller holds its VM lock.
  std::vector<DrainedDisk> StartDrain(const libvirt::DomainRef& dom,
                                      const std::vector<store::Assignment>& as);
  void RestoreDrained(const libvirt::DomainRef& dom, const std::vector<DrainedDisk>& drained);
  void Log(const std::string& level, const std::string& vm, const std::string& target,
           const std::string& action, const std::string& message) {
    manager_.Log(level, vm, target, action, message);
  }

  core::Manager& manager_;
  Registry& registry_;
  store::Store& store_;
  libvirt::LibvirtClient& lv_;
  libvirt::QemuTools& tools_;
  libvirt::LiveFilter live_;
  const Clock& clock_;
  const MigratorConfig config_;
};

}  // namespace hc::migration
