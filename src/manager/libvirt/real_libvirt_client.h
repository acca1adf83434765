// RealLibvirtClient: LibvirtClient over the libvirt C API.
//
// Threads: Start() registers libvirt's default event loop implementation
// (before the first connection, as libvirt requires), runs it on its own
// thread, and starts a supervisor thread that connects, and reconnects
// after libvirtd stops or restarts (close callback + keepalive).  Lifecycle
// and connection callbacks run on the event-loop thread.
//
// Ownership: connection and domain handles are held by move-only owners
// (unique_ptr with libvirt's free functions); the connection is shared with
// in-flight calls through a shared_ptr so a reconnect never frees a handle
// in use.  All public methods are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "manager/libvirt/libvirt_client.h"

typedef struct _virConnect virConnect;
typedef struct _virDomain virDomain;

namespace hc::libvirt {

class RealLibvirtClient final : public LibvirtClient {
 public:
  explicit RealLibvirtClient(std::string uri);
  ~RealLibvirtClient() override;  // Stop()s
  RealLibvirtClient(const RealLibvirtClient&) = delete;
  RealLibvirtClient& operator=(const RealLibvirtClient&) = delete;

  // Starts the event loop and supervisor threads; the first connection
  // attempt happens before Start returns (failure is not fatal).
  void Start();
  void Stop();

  bool IsAlive() override;
  std::string LastConnectionError() override;
  Result<std::vector<DomainRef>> ListDomains() override;
  Result<DomainRef> LookupDomain(const std::string& name_or_uuid) override;
  Result<std::string> GetXml(const std::string& uuid, unsigned flags) override;
  Status DefineXml(const std::string& xml) override;
  Result<ProcessOwner> QemuProcessOwner() override;
  Result<std::string> DomainCapabilities(const std::string& emulator, const std::string& arch,
                                         const std::string& machine,
                                         const std::string& virttype) override;
  Status Migrate(const std::string& uuid, const MigrateRequest& req) override;
  Status ProbePeer(const std::string& uri) override;
  Result<std::string> GetMetadata(const std::string& uuid, const std::string& uri,
                                  bool live) override;
  Status SetMetadata(const std::string& uuid, const std::string& xml, const std::string& prefix,
                     const std::string& uri, bool live, bool config) override;
  Result<std::string> QemuMonitorCommand(const std::string& uuid,
                                         const std::string& command_json) override;
  void SetLifecycleCallback(LifecycleCallback cb) override;
  void SetConnectionCallback(ConnectionCallback cb) override;

 private:
  struct Callbacks;
  static void FreeWeak(void* opaque);
  static void CloseCb(virConnect* conn, int reason, void* opaque);
  static int LifecycleCb(virConnect* conn, virDomain* dom, int event, int detail, void* opaque);
  static void DeviceRemovedCb(virConnect* conn, virDomain* dom, const char* alias, void* opaque);
  std::shared_ptr<virConnect> Conn();  // nullptr when disconnected
  Result<std::shared_ptr<virConnect>> ConnOrFail();
  bool TryConnect();
  void Disconnect();
  void Supervise();
  void OnClosed();
  Error LastError(const std::string& what);

  const std::string uri_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<virConnect> conn_;  // guarded by mu_
  int lifecycle_cb_id_ = -1;          // guarded by mu_
  int removed_cb_id_ = -1;            // guarded by mu_
  std::string last_error_;            // guarded by mu_
  bool closed_ = false;               // guarded by mu_: the connection died
  bool stop_ = false;                 // guarded by mu_
  std::shared_ptr<Callbacks> callbacks_;
  std::atomic<bool> loop_stop_{false};
  std::thread loop_thread_;
  std::thread supervisor_;
  int wake_timer_ = -1;
};

}  // namespace hc::libvirt
