// LibvirtClient: the seam between hostcached and libvirt.  The real client
// (real_libvirt_client.h) talks to libvirtd through the libvirt C API; tests
// use a fake.
//
// Every method may block (a libvirt RPC): call them from worker threads,
// never from the HTTP I/O thread.  Implementations are thread-safe.  When
// libvirtd cannot be reached, methods fail with ErrorCode::kUnavailable and
// the client reconnects by itself.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace hc::libvirt {

struct DomainRef {
  std::string uuid;   // canonical lowercase UUID string
  std::string name;
  bool active = false;      // running or paused: a QEMU process exists
  bool persistent = false;  // has a persistent (inactive) definition
};

// Domain events we act on; others are kOther.  The migration ones are
// libvirt's lifecycle events with detail "migrated" (docs/LIBVIRT.md §5):
// on the source Suspended (switch-over begins) then Stopped (gone); on the
// destination Started (incoming, paused) then Resumed (running here).  A
// source whose migration failed is Resumed with that detail too.
// kDeviceRemoved is libvirt's device-removed event (a hot-unplug finished).
enum class Lifecycle {
  kDefined,
  kUndefined,
  kStarted,
  kStopped,
  kSuspended,
  kResumed,
  kOther,
  kMigrationOut,      // Suspended Migrated
  kMigratedAway,      // Stopped Migrated
  kMigrationIn,       // Started Migrated
  kMigrationResumed,  // Resumed Migrated
  kDeviceRemoved,     // detail: the device's alias
};

std::string_view LifecycleName(Lifecycle ev);

// The user and group QEMU processes run as (libvirt's DAC base label,
// qemu.conf's user/group), for files QEMU must open.
struct ProcessOwner {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

// A live migration to another libvirtd (virDomainMigrate3, driven from
// here as virsh does: this side connects to both daemons).
struct MigrateRequest {
  std::string destination;  // libvirt URI of the destination ("qemu+tls://dst/system"),
                            // checked by CheckPeerUri (peer_uri.h) before it is opened
  std::string dest_xml;     // the XML the destination starts from (VIR_MIGRATE_PARAM_DEST_XML)
  std::string migrate_uri;  // where QEMU streams to ("tcp://dst", CheckMigrateUri),
                            // "" = the destination libvirtd's choice
  bool persistent = true;   // VIR_MIGRATE_PERSIST_DEST
  bool undefine_source = false;
  bool unsafe = false;      // VIR_MIGRATE_UNSAFE (storage libvirt cannot prove shared)
};

// What GetXml returns: libvirt's VIR_DOMAIN_XML_* flags of the same names.
enum XmlFlag : unsigned {
  kXmlLive = 0,                // the running domain's XML (node indexes, aliases)
  kXmlInactive = 1u << 0,      // the persistent definition
  kXmlSecure = 1u << 1,        // with secrets (graphics passwords, ...), which libvirt
                               // leaves out otherwise: an XML defined back or handed to a
                               // migration without them loses them
  kXmlMigratable = 1u << 2,    // as a migration destination would start from it
};

// `detail`: the device alias for kDeviceRemoved, else "".
using LifecycleCallback = std::function<void(const std::string& uuid, const std::string& name,
                                             Lifecycle event, const std::string& detail)>;
using ConnectionCallback = std::function<void(bool connected)>;

class LibvirtClient {
 public:
  virtual ~LibvirtClient() = default;

  // True while connected to libvirtd.
  virtual bool IsAlive() = 0;
  // A description of the last connection problem ("" when connected).
  virtual std::string LastConnectionError() = 0;

  virtual Result<std::vector<DomainRef>> ListDomains() = 0;
  // `name_or_uuid`: a domain name or a UUID string.  kNotFound when absent.
  virtual Result<DomainRef> LookupDomain(const std::string& name_or_uuid) = 0;
  // The domain XML as `flags` (XmlFlag) say: the persistent definition
  // with kXmlInactive, else the live one (which carries libvirt's node
  // indexes and device aliases); with kXmlSecure wherever it is defined
  // back or handed to a migration.
  virtual Result<std::string> GetXml(const std::string& uuid, unsigned flags) = 0;
  // Replaces the persistent definition (virDomainDefineXML).
  virtual Status DefineXml(const std::string& xml) = 0;
  // Migrates a running domain live; returns once it runs on the
  // destination (or failed: the domain then runs on here).
  virtual Status Migrate(const std::string& uuid, const MigrateRequest& req) {
    (void)uuid;
    (void)req;
    return Fail(ErrorCode::kFailedPrecondition, "this libvirt client cannot migrate");
  }
  // The domain's metadata element of namespace `uri` as libvirt keeps it
  // (virDomainGetMetadata, VIR_DOMAIN_METADATA_ELEMENT): of the running
  // domain when `live`, else of its persistent definition.  kNotFound when
  // there is none.
  virtual Result<std::string> GetMetadata(const std::string& uuid, const std::string& uri,
                                          bool live) {
    (void)uuid;
    (void)uri;
    (void)live;
    return Fail(ErrorCode::kFailedPrecondition, "this libvirt client cannot read metadata");
  }
  // Sets the metadata element of namespace `uri` (prefix `prefix`) to
  // `xml`, or removes it when `xml` is "" (virDomainSetMetadata): in the
  // running domain when `live`, in its persistent definition when `config`.
  virtual Status SetMetadata(const std::string& uuid, const std::string& xml,
                             const std::string& prefix, const std::string& uri, bool live,
                             bool config) {
    (void)uuid;
    (void)xml;
    (void)prefix;
    (void)uri;
    (void)live;
    (void)config;
    return Fail(ErrorCode::kFailedPrecondition, "this libvirt client cannot write metadata");
  }
  // Whether the libvirtd at `uri` (a configured peer's, CheckPeerUri) can
  // be reached: opened read-only on a connection of its own and asked for
  // its version.  kUnavailable with libvirt's message otherwise.
  virtual Status ProbePeer(const std::string& uri) {
    (void)uri;
    return Fail(ErrorCode::kFailedPrecondition, "this libvirt client cannot probe peers");
  }
  // Who QEMU runs as (from the host capabilities); kNotFound when libvirt
  // does not say (no DAC security driver).
  virtual Result<ProcessOwner> QemuProcessOwner() {
    return Fail(ErrorCode::kNotFound, "libvirt does not say which user QEMU runs as");
  }
  // The domain capabilities XML of `emulator` for domains of type
  // `virttype` ("kvm", "qemu") on `arch` and `machine` ("" = libvirt's
  // default) (virConnectGetDomainCapabilities).  Fails with libvirt's
  // message when libvirt refuses the combination (say a machine type the
  // emulator lacks).
  virtual Result<std::string> DomainCapabilities(const std::string& emulator,
                                                 const std::string& arch,
                                                 const std::string& machine,
                                                 const std::string& virttype) = 0;
  // One QMP command through libvirt's monitor passthrough.  Returns the
  // reply's "return" member as JSON text; a QMP error is kFailedPrecondition
  // with QEMU's own description.
  virtual Result<std::string> QemuMonitorCommand(const std::string& uuid,
                                                 const std::string& command_json) = 0;

  // Callbacks run on the client's event thread: they must be quick and
  // must not call back into the client (queue the work instead).  Set them
  // before Start() of the real client.
  virtual void SetLifecycleCallback(LifecycleCallback cb) = 0;
  virtual void SetConnectionCallback(ConnectionCallback cb) = 0;
};

}  // namespace hc::libvirt
