#include "manager/libvirt/libvirt_client.h"

namespace hc::libvirt {

std::string_view LifecycleName(Lifecycle ev) {
  switch (ev) {
    case Lifecycle::kDefined: return "defined";
    case Lifecycle::kUndefined: return "undefined";
    case Lifecycle::kStarted: return "started";
    case Lifecycle::kStopped: return "stopped";
    case Lifecycle::kSuspended: return "suspended";
    case Lifecycle::kResumed: return "resumed";
    case Lifecycle::kOther: return "other";
    case Lifecycle::kMigrationOut: return "suspended (migrating out)";
    case Lifecycle::kMigratedAway: return "stopped (migrated away)";
    case Lifecycle::kMigrationIn: return "started (incoming migration)";
    case Lifecycle::kMigrationResumed: return "resumed (after migration)";
    case Lifecycle::kDeviceRemoved: return "device-removed";
  }
  return "other";
}

}  // namespace hc::libvirt
