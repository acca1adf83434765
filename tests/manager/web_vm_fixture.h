// The fixture the policy engine's and the migration coordinator's tests
// share: the running VM "web" (tests/manager/data/web.*.xml) in the fake
// libvirt, and a Manager over them and a real in-memory SQLite store, with
// the migration module's registry and migrator.
#pragma once

#include <memory>

#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/core/manager.h"
#include "manager/store/sqlite_store.h"
#include "migration/migrator.h"
#include "migration/registry.h"

namespace hc::testing {

inline constexpr const char* kWeb = "6a2f3b4c-1d2e-4f50-8a9b-0c1d2e3f4a5b";
inline constexpr const char* kVdaDev = "/machine/peripheral/virtio-disk0/virtio-backend";

// The migration peer tests use: host2 (qemu+ssh://host2/system).
inline core::Peers TestPeers() {
  return *core::Peers::Parse({"host2=qemu+ssh://host2/system"}, {});
}

class WebVmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(*store::SqliteStore::Open(":memory:", clock_.now_ms));
    tools_.chains["/var/lib/libvirt/images/web-top.qcow2"] = 3;
    lv_.Add(kWeb, "web", TestData("web.inactive.xml"), TestData("web.live.xml"));
    core::ManagerConfig cfg;
    cfg.emulator = "/opt/hostcache/qemu-system-x86_64";
    cfg.ram_budget = 2ull << 30;
    cfg.ssd_budget = 0;
    MakeManager(cfg);
  }
  // The Manager with `cfg`, and the migration module beside it as in
  // hostcached (the registry its gate, a migrator to TestPeers()).
  void MakeManager(const core::ManagerConfig& cfg) {
    migrator_.reset();
    mgr_ = std::make_unique<core::Manager>(*store_, lv_, tools_, clock_, cfg, nullptr, &locks_,
                                           &registry_);
    migration::MigratorConfig mcfg;
    mcfg.emulator = cfg.emulator;
    mcfg.peers = TestPeers();
    migrator_ = std::make_unique<migration::Migrator>(*mgr_, registry_, *store_, lv_, tools_,
                                                      clock_, mcfg);
  }
  FakeQemu& Qemu() { return lv_.domains[kWeb].qemu; }

  FakeClock clock_;
  FakeLibvirt lv_;
  FakeQemuTools tools_;
  std::unique_ptr<store::SqliteStore> store_;
  core::VmLocks locks_;
  migration::Registry registry_{locks_, clock_};
  std::unique_ptr<core::Manager> mgr_;
  std::unique_ptr<migration::Migrator> migrator_;
};

}  // namespace hc::testing
