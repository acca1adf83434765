// QemuTools: what hostcached asks of the project's qemu-img without a
// running VM.  A seam so unit tests need no QEMU.
//
//  - ChainLength: how many images a disk's backing chain has, to predict
//    libvirt's node names (domain_xml.h).
//  - CheckOptions: whether the hostcache driver of this QEMU build accepts
//    a policy's options (it opens the filter over a null-co node), so that
//    a definition never carries a filter QEMU would refuse at start, which
//    would keep the VM from starting.
//
// Thread-safe; methods block for the run of one qemu-img.
#pragma once

#include <string>

#include "common/error.h"
#include "manager/libvirt/domain_xml.h"
#include "manager/policy/policy.h"

namespace hc::libvirt {

class QemuTools {
 public:
  virtual ~QemuTools() = default;
  virtual Result<int> ChainLength(const DiskInfo& disk) = 0;
  // kInvalidArgument with the driver's own message when refused.
  virtual Status CheckOptions(const policy::Rules& rules) = 0;
};

class RealQemuTools final : public QemuTools {
 public:
  explicit RealQemuTools(std::string qemu_img) : qemu_img_(std::move(qemu_img)) {}
  Result<int> ChainLength(const DiskInfo& disk) override;
  Status CheckOptions(const policy::Rules& rules) override;

 private:
  const std::string qemu_img_;
};

}  // namespace hc::libvirt
