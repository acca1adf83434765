// Whether QEMU's hostcache driver accepts a policy's options
// (QemuTools::CheckOptions, through qemu-img), remembered per set of rules:
// a definite answer does not change while hostcached runs.
//
// Ownership: borrows the tools; they must outlive it.
// Thread-safety: Check may be called from any thread (it may block on
// qemu-img the first time for a set of rules).
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "common/error.h"
#include "manager/libvirt/qemu_tools.h"
#include "manager/policy/policy.h"

namespace hc::core {

class DriverCheck {
 public:
  explicit DriverCheck(libvirt::QemuTools& tools) : tools_(tools) {}
  DriverCheck(const DriverCheck&) = delete;
  DriverCheck& operator=(const DriverCheck&) = delete;

  // kInvalidArgument with the driver's message when it refuses `r`.
  Status Check(const policy::Rules& r);

 private:
  libvirt::QemuTools& tools_;
  std::mutex mu_;
  std::map<std::string, Status> cache_;  // rules JSON -> driver verdict; guarded by mu_
};

}  // namespace hc::core
