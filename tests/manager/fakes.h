// Fakes for the manager's seams: a clock, libvirt with a small model of
// QEMU's block graph behind its QMP passthrough, and the QEMU tools.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <optional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "manager/libvirt/domain_xml.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/libvirt/qemu_tools.h"

namespace hc::testing {

class FakeClock final : public Clock {
 public:
  int64_t NowMs() const override { return now_ms; }
  // Advances the time, then runs on_sleep (a test's model of what happens
  // meanwhile).
  void SleepMs(int64_t ms) const override {
    now_ms += ms;
    sleeps++;
    if (on_sleep) on_sleep(ms);
  }
  mutable int64_t now_ms = 1'700'000'000'000;
  mutable int sleeps = 0;
  std::function<void(int64_t ms)> on_sleep;
};

// A running QEMU's block layer as far as hostcached sees it.
struct FakeQemu {
  struct Node {
    std::string driver;     // "qcow2", "file", "hostcache"
    std::string file;       // child named "file" ("" none)
    nlohmann::json options; // hostcache options
    std::string ssd;        // hostcache: child named "ssd" ("" none)
    std::string filename;   // file nodes: the file
  };
  std::map<std::string, Node> nodes;       // node-name -> node
  std::map<std::string, std::string> devs; // qdev path -> root node
  // Refuse blockdev-add/reopen of hostcache nodes with this mode.
  std::string refuse_mode;
  std::map<std::string, std::string> fail;  // command -> error desc (one shot)
  // Report what newer drivers do in the driver-specific statistics:
  // admit-after, seq-cutoff, max-dirty, max-dirty-age-ms, and with an SSD
  // tier ssd-dirty-bytes, ssd-failed and origin-id.
  bool report_options = false;
  bool ssd_active = true;  // what a node with an SSD tier reports as ssd-active
  // Hostcache nodes whose SSD tier failed (ssd-failed, with report_options).
  std::set<std::string> ssd_failed;
  // As the driver, a hostcache node added with an inline `ssd` child opens
  // its tier file: refused when the file is missing, or, with ssd-create
  // false, blank or of another origin; else formatted (a superblock "in
  // use" with the node's origin-id).  blockdev-del closes it cleanly.
  // node -> the `dirty-bytes` a write-back hostcache node reports (0 absent).
  std::map<std::string, uint64_t> dirty;
  // node -> more driver-specific counters (merged over the ones above).
  std::map<std::string, nlohmann::json> counters;
  std::vector<std::string> log;             // commands executed, in order
  // Changes a reply before it is sent (QEMU answering in an unexpected way).
  std::function<void(const std::string& command, nlohmann::json& reply)> mangle;

  nlohmann::json Execute(const nlohmann::json& cmd);  // a QMP reply
};

class FakeLibvirt final : public libvirt::LibvirtClient {
 public:
  struct Domain {
    std::string uuid, name;
    bool active = false, persistent = true;
    std::string inactive_xml, live_xml;
    // Metadata elements by namespace URI (SetMetadata/GetMetadata), of the
    // running domain and of its definition.
    std::map<std::string, std::string> metadata_live, metadata_config;
    FakeQemu qemu;
  };

  bool alive = true;
  bool drop_qemu_namespace = false;  // DefineXml keeps no qemu:* elements (test:///)
  std::function<void(const std::string& uuid)> on_qmp;  // hook (blocking tests)
  // Called first in LookupDomain with what is looked up (blocking tests).
  std::function<void(const std::string& name_or_uuid)> on_lookup;
  std::map<std::string, Domain> domains;  // by uuid
  int defines = 0;

  Domain& Add(const std::string& uuid, const std::string& name, const std::string& inactive_xml,
              const std::string& live_xml = "");

  bool IsAlive() override { return alive; }
  std::string LastConnectionError() override { return alive ? "" : "fake libvirtd is down"; }
  Result<std::vector<libvirt::DomainRef>> ListDomains() override;
  Result<libvirt::DomainRef> LookupDomain(const std::string& name_or_uuid) override;
  // As libvirt: without kXmlSecure, the graphics devices' passwd
  // attributes are left out.  kXmlMigratable gives the live XML.
  Result<std::string> GetXml(const std::string& uuid, unsigned flags) override;
  Status DefineXml(const std::string& xml) override;
  Result<libvirt::ProcessOwner> QemuProcessOwner() override {
    if (!qemu_owner) return Fail(ErrorCode::kNotFound, "no DAC label (fake)");
    return *qemu_owner;
  }
  std::optional<libvirt::ProcessOwner> qemu_owner;  // what the capabilities say
  // DomainCapabilities: `domain_caps` for any emulator (empty: a document
  // that lists nothing, so nothing is missing); `caps_error`, when set,
  // fails it as libvirt does for a machine type the emulator lacks.
  Result<std::string> DomainCapabilities(const std::string& emulator, const std::string& arch,
                                         const std::string& machine,
                                         const std::string& virttype) override;
  std::string domain_caps;
  std::string caps_error;
  std::vector<std::string> caps_queries;  // "emulator arch machine virttype", in order
  // Migrate: recorded; fails with migrate_error when set, else the domain
  // leaves (shut off here, or gone with undefine_source).
  Status Migrate(const std::string& uuid, const libvirt::MigrateRequest& req) override;
  std::vector<libvirt::MigrateRequest> migrations;
  std::string migrate_error;
  std::function<void()> on_migrate;  // called first in Migrate (blocking tests)
  // As libvirt: live only while the domain runs, config only when it has
  // a definition (else kFailedPrecondition); "" removes.
  Result<std::string> GetMetadata(const std::string& uuid, const std::string& uri,
                                  bool live) override;
  Status SetMetadata(const std::string& uuid, const std::string& xml, const std::string& prefix,
                     const std::string& uri, bool live, bool config) override;
  std::string metadata_error;  // SetMetadata fails with this when set
  // ProbePeer: fails with peer_errors[uri] when there is one.
  Status ProbePeer(const std::string& uri) override {
    std::lock_guard lock(mu);
    auto it = peer_errors.find(uri);
    if (it != peer_errors.end()) return Fail(ErrorCode::kUnavailable, it->second);
    return {};
  }
  std::map<std::string, std::string> peer_errors;
  Result<std::string> QemuMonitorCommand(const std::string& uuid,
                                         const std::string& command_json) override;
  void SetLifecycleCallback(libvirt::LifecycleCallback cb) override { lifecycle = std::move(cb); }
  void SetConnectionCallback(libvirt::ConnectionCallback) override {}

  libvirt::LifecycleCallback lifecycle;
  std::mutex mu;
};

class FakeQemuTools final : public libvirt::QemuTools {
 public:
  std::map<std::string, int> chains;  // source path -> images in chain
  std::string refuse_mode;            // CheckOptions refuses this mode
  int checks = 0;
  Result<int> ChainLength(const libvirt::DiskInfo& disk) override;
  Status CheckOptions(const policy::Rules& rules) override;
};

// Writes the superblock copy of `generation` (copy generation % 2) of the
// SSD tier file `path` with the driver's own encoder (hc-ssd.c: the
// geometry of a 4 KiB-block tier of the file's size, state 1 closed
// cleanly or 2 in use, the origin identity, the CRC).
void WriteSsdSuperblockCopy(const std::string& path, uint64_t generation, uint32_t state,
                            const std::string& origin_id);
// Both copies, as after two superblock writes: generation - 1 and
// `generation` (> 0).
void WriteSsdSuperblock(const std::string& path, uint64_t generation, uint32_t state,
                        const std::string& origin_id);

// Reads tests/manager/data/<name>.
std::string TestData(const std::string& name);

// A new directory /tmp/<prefix>XXXXXX, removed with its contents when this
// is destroyed.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace hc::testing
