#include "manager/libvirt/real_libvirt_client.h"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <chrono>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "manager/libvirt/block_graph.h"
#include "manager/libvirt/domain_xml.h"
#include <spdlog/spdlog.h>

#include "manager/libvirt/domain_xml.h"
#include "manager/libvirt/peer_uri.h"

namespace hc::libvirt {
namespace {

struct DomainFree {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using DomainHandle = std::unique_ptr<virDomain, DomainFree>;

struct CFree {
  void operator()(char* p) const { std::free(p); }
};
using CString = std::unique_ptr<char, CFree>;

std::once_flag g_event_impl_once;

void QuietErrors(void*, virErrorPtr) {}

std::string UuidOf(virDomainPtr d) {
  char buf[VIR_UUID_STRING_BUFLEN] = {};
  virDomainGetUUIDString(d, buf);
  return buf;
}

Lifecycle MapEvent(int event, int detail) {
  switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED: return Lifecycle::kDefined;
    case VIR_DOMAIN_EVENT_UNDEFINED: return Lifecycle::kUndefined;
    case VIR_DOMAIN_EVENT_STARTED:
      return detail == VIR_DOMAIN_EVENT_STARTED_MIGRATED ? Lifecycle::kMigrationIn
                                                         : Lifecycle::kStarted;
    case VIR_DOMAIN_EVENT_STOPPED:
      return detail == VIR_DOMAIN_EVENT_STOPPED_MIGRATED ? Lifecycle::kMigratedAway
                                                         : Lifecycle::kStopped;
    case VIR_DOMAIN_EVENT_SUSPENDED:
      return detail == VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED ? Lifecycle::kMigrationOut
                                                           : Lifecycle::kSuspended;
    case VIR_DOMAIN_EVENT_RESUMED:
      return detail == VIR_DOMAIN_EVENT_RESUMED_MIGRATED ? Lifecycle::kMigrationResumed
                                                         : Lifecycle::kResumed;
    default: return Lifecycle::kOther;
  }
}

// Runs one of our callbacks on a libvirt thread (the event loop, the
// supervisor): nothing may unwind through libvirt's C frames or end the
// thread.
template <typename Fn>
void Guarded(const char* what, Fn&& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& e) {
    spdlog::error("{}: unexpected error: {}; going on", what, e.what());
  } catch (...) {
    spdlog::error("{}: unexpected error; going on", what);
  }
}

std::string NameOf(virDomainPtr d) {
  const char* name = virDomainGetName(d);
  return name ? name : "";
}

bool LooksLikeUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); i++) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

}  // namespace

// Shared with libvirt's callbacks, which may outlive a connection.
struct RealLibvirtClient::Callbacks {
  std::mutex mu;
  LifecycleCallback lifecycle;
  ConnectionCallback connection;
  RealLibvirtClient* owner = nullptr;
};

void RealLibvirtClient::FreeWeak(void* opaque) {
  delete static_cast<std::weak_ptr<Callbacks>*>(opaque);
}

void RealLibvirtClient::CloseCb(virConnectPtr, int reason, void* opaque) {
  auto cb = static_cast<std::weak_ptr<Callbacks>*>(opaque)->lock();
  if (!cb) return;
  spdlog::warn("libvirt connection closed (reason {})", reason);
  std::lock_guard lock(cb->mu);
  if (cb->owner) cb->owner->OnClosed();
}

int RealLibvirtClient::LifecycleCb(virConnectPtr, virDomainPtr dom, int event, int detail,
                                   void* opaque) {
  auto cb = static_cast<std::weak_ptr<Callbacks>*>(opaque)->lock();
  if (!cb) return 0;
  LifecycleCallback fn;
  {
    std::lock_guard lock(cb->mu);
    fn = cb->lifecycle;
  }
  if (fn) {
    Guarded("a lifecycle event", [&] { fn(UuidOf(dom), NameOf(dom), MapEvent(event, detail), ""); });
  }
  return 0;
}

void RealLibvirtClient::DeviceRemovedCb(virConnectPtr, virDomainPtr dom, const char* alias,
                                        void* opaque) {
  auto cb = static_cast<std::weak_ptr<Callbacks>*>(opaque)->lock();
  if (!cb) return;
  LifecycleCallback fn;
  {
    std::lock_guard lock(cb->mu);
    fn = cb->lifecycle;
  }
  if (fn) {
    Guarded("a device-removed event", [&] {
      fn(UuidOf(dom), NameOf(dom), Lifecycle::kDeviceRemoved, alias ? alias : "");
    });
  }
}

RealLibvirtClient::RealLibvirtClient(std::string uri)
    : uri_(std::move(uri)), callbacks_(std::make_shared<Callbacks>()) {
  callbacks_->owner = this;
}

RealLibvirtClient::~RealLibvirtClient() { Stop(); }

void RealLibvirtClient::Start() {
  std::call_once(g_event_impl_once, [] {
    virSetErrorFunc(nullptr, QuietErrors);
    virEventRegisterDefaultImpl();
  });
  // A timer that fires rarely keeps virEventRunDefaultImpl returning so the
  // loop can notice loop_stop_.
  wake_timer_ = virEventAddTimeout(500, [](int, void*) {}, nullptr, nullptr);
  loop_thread_ = std::thread([this] {
    while (!loop_stop_.load()) {
      if (virEventRunDefaultImpl() < 0) {
        spdlog::warn("libvirt event loop iteration failed");
      }
    }
  });
  TryConnect();
  supervisor_ = std::thread([this] { Supervise(); });
}

void RealLibvirtClient::Stop() {
  {
    std::lock_guard lock(callbacks_->mu);
    callbacks_->owner = nullptr;
  }
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  Disconnect();
  loop_stop_ = true;
  if (loop_thread_.joinable()) loop_thread_.join();
  if (wake_timer_ >= 0) virEventRemoveTimeout(wake_timer_);
}

void RealLibvirtClient::SetLifecycleCallback(LifecycleCallback cb) {
  std::lock_guard lock(callbacks_->mu);
  callbacks_->lifecycle = std::move(cb);
}

void RealLibvirtClient::SetConnectionCallback(ConnectionCallback cb) {
  std::lock_guard lock(callbacks_->mu);
  callbacks_->connection = std::move(cb);
}

bool RealLibvirtClient::TryConnect() {
  virConnectPtr raw = virConnectOpen(uri_.c_str());
  if (!raw) {
    virErrorPtr e = virGetLastError();
    std::lock_guard lock(mu_);
    std::string msg = e && e->message ? e->message : "unknown error";
    if (msg != last_error_) spdlog::warn("cannot connect to libvirt at {}: {}", uri_, msg);
    last_error_ = msg;
    return false;
  }
  std::shared_ptr<virConnect> conn(raw, [](virConnectPtr c) { virConnectClose(c); });
  virConnectSetKeepAlive(raw, 5, 3);
  // The close callback and the event callback get a weak reference to the
  // callbacks block, which lives as long as any of them.
  virConnectRegisterCloseCallback(raw, CloseCb, new std::weak_ptr<Callbacks>(callbacks_),
                                  FreeWeak);
  int id = virConnectDomainEventRegisterAny(raw, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            VIR_DOMAIN_EVENT_CALLBACK(LifecycleCb),
                                            new std::weak_ptr<Callbacks>(callbacks_), FreeWeak);
  int removed_id = virConnectDomainEventRegisterAny(
      raw, nullptr, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, VIR_DOMAIN_EVENT_CALLBACK(DeviceRemovedCb),
      new std::weak_ptr<Callbacks>(callbacks_), FreeWeak);
  ConnectionCallback on_conn;
  {
    std::lock_guard lock(mu_);
    conn_ = conn;
    lifecycle_cb_id_ = id;
    removed_cb_id_ = removed_id;
    closed_ = false;
    last_error_.clear();
  }
  {
    std::lock_guard lock(callbacks_->mu);
    on_conn = callbacks_->connection;
  }
  spdlog::info("connected to libvirt at {}", uri_);
  if (on_conn) Guarded("the connection callback", [&] { on_conn(true); });
  return true;
}

void RealLibvirtClient::OnClosed() {
  // Event-loop thread, callbacks_->mu held: only flag it.
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    last_error_ = "the connection to libvirtd was closed";
  }
  cv_.notify_all();
}

void RealLibvirtClient::Disconnect() {
  std::shared_ptr<virConnect> old;
  int id, removed_id;
  {
    std::lock_guard lock(mu_);
    old = std::move(conn_);
    id = lifecycle_cb_id_;
    lifecycle_cb_id_ = -1;
    removed_id = removed_cb_id_;
    removed_cb_id_ = -1;
    closed_ = false;  // handled: the supervisor now sees no connection
  }
  if (!old) return;
  if (id >= 0) virConnectDomainEventDeregisterAny(old.get(), id);
  if (removed_id >= 0) virConnectDomainEventDeregisterAny(old.get(), removed_id);
  virConnectUnregisterCloseCallback(old.get(), CloseCb);
  // The handle is closed when the last in-flight call drops its reference.
}

void RealLibvirtClient::Supervise() {
  auto backoff = std::chrono::milliseconds(500);
  std::unique_lock lock(mu_);
  while (!stop_) {
    bool need = !conn_ || closed_;
    if (conn_ && !closed_ && virConnectIsAlive(conn_.get()) != 1) need = true;
    if (need) {
      bool had = conn_ != nullptr;
      lock.unlock();
      if (had) {
        Disconnect();
        ConnectionCallback on_conn;
        {
          std::lock_guard cl(callbacks_->mu);
          on_conn = callbacks_->connection;
        }
        if (on_conn) Guarded("the connection callback", [&] { on_conn(false); });
      }
      bool ok = TryConnect();
      lock.lock();
      backoff = ok ? std::chrono::milliseconds(500)
                   : std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
    cv_.wait_for(lock, backoff, [&] { return stop_ || closed_; });
  }
}

std::shared_ptr<virConnect> RealLibvirtClient::Conn() {
  std::lock_guard lock(mu_);
  return closed_ ? nullptr : conn_;
}

Result<std::shared_ptr<virConnect>> RealLibvirtClient::ConnOrFail() {
  auto c = Conn();
  if (!c) {
    std::lock_guard lock(mu_);
    return Fail(ErrorCode::kUnavailable,
                "libvirtd is not reachable at " + uri_ +
                    (last_error_.empty() ? "" : " (" + last_error_ + ")") +
                    "; hostcached keeps retrying");
  }
  return c;
}

bool RealLibvirtClient::IsAlive() {
  auto c = Conn();
  return c && virConnectIsAlive(c.get()) == 1;
}

std::string RealLibvirtClient::LastConnectionError() {
  std::lock_guard lock(mu_);
  return last_error_;
}

Error RealLibvirtClient::LastError(const std::string& what) {
  virErrorPtr e = virGetLastError();
  std::string msg = e && e->message ? e->message : "unknown libvirt error";
  int code = e ? e->code : VIR_ERR_INTERNAL_ERROR;
  if (code == VIR_ERR_NO_DOMAIN) return Error{ErrorCode::kNotFound, msg};
  if (code == VIR_ERR_OPERATION_INVALID) return Error{ErrorCode::kFailedPrecondition, msg};
  // A configuration the emulator or host cannot run (a definition that
  // needs what its QEMU lacks): the caller's to change.
  if (code == VIR_ERR_CONFIG_UNSUPPORTED) {
    return Error{ErrorCode::kFailedPrecondition, what + ": " + msg};
  }
  if (code == VIR_ERR_OPERATION_TIMEOUT) return Error{ErrorCode::kUnavailable, what + ": " + msg};
  if (!IsAlive() || code == VIR_ERR_NO_CONNECT || code == VIR_ERR_RPC) {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      last_error_ = msg;
    }
    cv_.notify_all();
    return Error{ErrorCode::kUnavailable,
                 "libvirtd is not reachable at " + uri_ + " (" + msg + "); hostcached keeps retrying"};
  }
  return Error{ErrorCode::kInternal, what + ": " + msg};
}

Result<std::vector<DomainRef>> RealLibvirtClient::ListDomains() {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  virDomainPtr* doms = nullptr;
  int n = virConnectListAllDomains(c->get(), &doms, 0);
  if (n < 0) return tl::unexpected(LastError("listing domains"));
  std::vector<DomainRef> out;
  for (int i = 0; i < n; i++) {
    DomainHandle d(doms[i]);
    DomainRef r;
    r.uuid = UuidOf(d.get());
    const char* name = virDomainGetName(d.get());
    r.name = name ? name : "";
    r.active = virDomainIsActive(d.get()) == 1;
    r.persistent = virDomainIsPersistent(d.get()) == 1;
    out.push_back(std::move(r));
  }
  std::free(doms);
  return out;
}

Result<DomainRef> RealLibvirtClient::LookupDomain(const std::string& name_or_uuid) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  virDomainPtr raw = nullptr;
  if (LooksLikeUuid(name_or_uuid)) raw = virDomainLookupByUUIDString(c->get(), name_or_uuid.c_str());
  if (!raw) raw = virDomainLookupByName(c->get(), name_or_uuid.c_str());
  if (!raw) {
    Error e = LastError("looking up domain");
    if (e.code == ErrorCode::kNotFound) {
      e.message = "libvirt has no VM named or with UUID '" + name_or_uuid + "'";
    }
    return tl::unexpected(e);
  }
  DomainHandle d(raw);
  DomainRef r;
  r.uuid = UuidOf(d.get());
  r.name = NameOf(d.get());
  r.active = virDomainIsActive(d.get()) == 1;
  r.persistent = virDomainIsPersistent(d.get()) == 1;
  return r;
}

Result<std::string> RealLibvirtClient::GetXml(const std::string& uuid, unsigned flags) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  DomainHandle d(virDomainLookupByUUIDString(c->get(), uuid.c_str()));
  if (!d) return tl::unexpected(LastError("looking up domain " + uuid));
  unsigned vflags = 0;
  if (flags & kXmlInactive) vflags |= VIR_DOMAIN_XML_INACTIVE;
  if (flags & kXmlSecure) vflags |= VIR_DOMAIN_XML_SECURE;
  if (flags & kXmlMigratable) vflags |= VIR_DOMAIN_XML_MIGRATABLE;
  CString xml(virDomainGetXMLDesc(d.get(), vflags));
  if (!xml) return tl::unexpected(LastError("reading the XML of " + uuid));
  return std::string(xml.get());
}

Status RealLibvirtClient::ProbePeer(const std::string& uri) {
  // (Configured peers only; checked again: libvirt runs programs for some
  // URIs, and this process is root.)
  if (auto u = CheckPeerUri(uri); !u) return tl::unexpected(u.error());
  virConnectPtr c = virConnectOpenReadOnly(uri.c_str());
  if (!c) {
    virErrorPtr e = virGetLastError();
    return Fail(ErrorCode::kUnavailable, e && e->message ? e->message : "cannot connect");
  }
  std::unique_ptr<virConnect, int (*)(virConnectPtr)> conn(c, virConnectClose);
  unsigned long version = 0;
  if (virConnectGetLibVersion(conn.get(), &version) < 0) {
    virErrorPtr e = virGetLastError();
    return Fail(ErrorCode::kUnavailable, e && e->message ? e->message : "no answer");
  }
  return {};
}

Result<std::string> RealLibvirtClient::GetMetadata(const std::string& uuid,
                                                   const std::string& uri, bool live) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  DomainHandle d(virDomainLookupByUUIDString(c->get(), uuid.c_str()));
  if (!d) return tl::unexpected(LastError("looking up domain " + uuid));
  CString xml(virDomainGetMetadata(d.get(), VIR_DOMAIN_METADATA_ELEMENT, uri.c_str(),
                                   live ? VIR_DOMAIN_AFFECT_LIVE : VIR_DOMAIN_AFFECT_CONFIG));
  if (!xml) {
    virErrorPtr e = virGetLastError();
    if (e && e->code == VIR_ERR_NO_DOMAIN_METADATA) {
      return Fail(ErrorCode::kNotFound, "domain " + uuid + " has no metadata of " + uri);
    }
    return tl::unexpected(LastError("reading the metadata of " + uuid));
  }
  return std::string(xml.get());
}

Status RealLibvirtClient::SetMetadata(const std::string& uuid, const std::string& xml,
                                      const std::string& prefix, const std::string& uri,
                                      bool live, bool config) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  DomainHandle d(virDomainLookupByUUIDString(c->get(), uuid.c_str()));
  if (!d) return tl::unexpected(LastError("looking up domain " + uuid));
  unsigned flags = 0;
  if (live) flags |= VIR_DOMAIN_AFFECT_LIVE;
  if (config) flags |= VIR_DOMAIN_AFFECT_CONFIG;
  if (virDomainSetMetadata(d.get(), VIR_DOMAIN_METADATA_ELEMENT,
                           xml.empty() ? nullptr : xml.c_str(), xml.empty() ? nullptr : prefix.c_str(),
                           uri.c_str(), flags) < 0) {
    return tl::unexpected(LastError("writing the metadata of " + uuid));
  }
  return {};
}

Status RealLibvirtClient::Migrate(const std::string& uuid, const MigrateRequest& req) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  // (The manager sends configured peers only; checked here again because
  // libvirt runs programs for some URIs, and this process is root.)
  if (auto u = CheckPeerUri(req.destination); !u) return tl::unexpected(u.error());
  if (!req.migrate_uri.empty()) {
    if (auto m = CheckMigrateUri(req.migrate_uri); !m) return tl::unexpected(m.error());
  }
  DomainHandle d(virDomainLookupByUUIDString(c->get(), uuid.c_str()));
  if (!d) return tl::unexpected(LastError("looking up domain " + uuid));
  virConnectPtr dconn = virConnectOpen(req.destination.c_str());
  if (!dconn) {
    virErrorPtr e = virGetLastError();
    return Fail(ErrorCode::kFailedPrecondition,
                "cannot connect to the destination libvirtd at " + req.destination + ": " +
                    (e && e->message ? e->message : "unknown error"));
  }
  std::unique_ptr<virConnect, int (*)(virConnectPtr)> dest(dconn, virConnectClose);
  virTypedParameterPtr params = nullptr;
  int nparams = 0, maxparams = 0;
  virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_DEST_XML,
                          req.dest_xml.c_str());
  if (!req.migrate_uri.empty()) {
    virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_URI,
                            req.migrate_uri.c_str());
  }
  unsigned int flags = VIR_MIGRATE_LIVE;
  if (req.persistent) flags |= VIR_MIGRATE_PERSIST_DEST;
  if (req.undefine_source) flags |= VIR_MIGRATE_UNDEFINE_SOURCE;
  if (req.unsafe) flags |= VIR_MIGRATE_UNSAFE;
  DomainHandle moved(virDomainMigrate3(d.get(), dest.get(), params, nparams, flags));
  virTypedParamsFree(params, nparams);
  if (!moved) {
    virErrorPtr e = virGetLastError();
    return Fail(ErrorCode::kFailedPrecondition,
                std::string("the migration failed: ") +
                    (e && e->message ? e->message : "unknown libvirt error"));
  }
  return {};
}

Status RealLibvirtClient::DefineXml(const std::string& xml) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  DomainHandle d(virDomainDefineXML(c->get(), xml.c_str()));
  if (!d) return tl::unexpected(LastError("defining the domain"));
  return {};
}

Result<std::string> RealLibvirtClient::DomainCapabilities(const std::string& emulator,
                                                          const std::string& arch,
                                                          const std::string& machine,
                                                          const std::string& virttype) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  auto opt = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
  CString caps(virConnectGetDomainCapabilities(c->get(), emulator.c_str(), opt(arch),
                                               opt(machine), opt(virttype), 0));
  if (!caps) return tl::unexpected(LastError("reading the domain capabilities of " + emulator));
  return std::string(caps.get());
}

Result<ProcessOwner> RealLibvirtClient::QemuProcessOwner() {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  CString caps(virConnectGetCapabilities(c->get()));
  if (!caps) return tl::unexpected(LastError("reading the host capabilities"));
  auto label = ParseDacBaseLabel(caps.get());
  if (!label) return tl::unexpected(label.error());
  return ProcessOwner{label->first, label->second};
}

Result<std::string> RealLibvirtClient::QemuMonitorCommand(const std::string& uuid,
                                                          const std::string& command_json) {
  auto c = ConnOrFail();
  if (!c) return tl::unexpected(c.error());
  DomainHandle d(virDomainLookupByUUIDString(c->get(), uuid.c_str()));
  if (!d) return tl::unexpected(LastError("looking up domain " + uuid));
  char* raw = nullptr;
  if (virDomainQemuMonitorCommand(d.get(), command_json.c_str(), &raw, 0) < 0) {
    return tl::unexpected(LastError("QMP"));
  }
  CString reply(raw);
  return QmpReturn(reply ? reply.get() : "");
}

}  // namespace hc::libvirt
