// Whether an emulator can run a domain definition, from libvirt's domain
// capabilities of that emulator (virConnectGetDomainCapabilities).
//
// hostcached switches a cached VM's <emulator> to the project's QEMU.  A
// definition that needs something that QEMU lacks (a graphics type, a
// video model, a TPM backend, a machine type...) would be refused by
// libvirt, or, worse, not start; CheckEmulatorCapabilities() says what is
// missing before anything is written, in words a person can act on.  The
// domain capabilities list what libvirt can tell about an emulator (device
// kinds and their enums, CPU modes, firmware, a few features); what they
// do not cover, libvirt still checks when the definition is written.
//
// ParseCapsQuery() and MissingCapabilities() are pure (strings in, strings
// out; thread-safe).  CheckEmulatorCapabilities() asks libvirt through the
// client (blocking RPC, any worker thread).
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "manager/libvirt/libvirt_client.h"

namespace hc::libvirt {

// The arguments of virConnectGetDomainCapabilities that a definition
// decides: <domain type>, <os><type arch machine>.
struct CapsQuery {
  std::string virttype;  // "kvm", "qemu"
  std::string arch;      // "x86_64" ("" = libvirt's default)
  std::string machine;   // "pc-q35-10.0", "q35" ("" = the default machine)
};

Result<CapsQuery> ParseCapsQuery(const std::string& domain_xml);

// What the definition uses that the domain capabilities do not offer, one
// phrase each ("graphics type 'vnc'", "cpu mode 'host-passthrough'"), in the
// definition's order, without repeats.  Empty: the emulator can run it as
// far as its domain capabilities tell.  Parts of the capabilities that are
// absent (an older libvirt) are not checked.
Result<std::vector<std::string>> MissingCapabilities(const std::string& domain_xml,
                                                     const std::string& caps_xml);

// Asks libvirt for `emulator`'s domain capabilities for this definition and
// compares.  kFailedPrecondition, naming the VM, the emulator and what is
// missing (or libvirt's reason when it refuses the combination, such as a
// machine type the emulator does not have), when the emulator cannot run
// it; kUnavailable when libvirtd cannot be reached.
Status CheckEmulatorCapabilities(LibvirtClient& lv, const std::string& domain_xml,
                                 const std::string& emulator);

}  // namespace hc::libvirt
