// The destination of a live migration, prepared before QEMU starts there.
// libvirt runs the hook /etc/libvirt/hooks/qemu.d/hostcache (scripts/
// libvirt-hook-hostcache, `hostcachectl libvirt-hook`) on the destination
// with the incoming domain XML on stdin ("migrate begin"); it posts the XML
// to the local hostcached (POST /api/v1/migrations/prepare), which calls
// PrepareIncoming and hands back the XML the destination starts from.
//
// For every disk that comes with a hostcache filter in the XML, or with an
// assignment carried in the metadata (metadata.h) that this host will
// adopt:
//   - budget: the disk takes its policy's RAM and SSD (this host's policy
//     of the same name; the carried rules when there is none) next to what
//     this host's other disks are assigned (the VM's own assignments here,
//     from an earlier stay, not counted twice).  When the RAM does not fit,
//     or the SSD does not and a disk's rules do not say
//     migrate-without-ssd, the migration is refused (kConflict) with a
//     message naming the host, the VM, what is short and by how much.
//     With migrate-without-ssd, the filter runs without its tier here.
//   - SSD tier: the filter's tier file moves under this host's SSD root
//     (the policy's ssd-dir here, else the first SSD root), the blank file
//     made there for QEMU's user; ssd-create is set when it is new.
//   - emulator: this host's QEMU with the driver (config `emulator`).
// Anything that fails after a file was made deletes the files made, so a
// refused migration leaves the host as it was.  A VM without hostcache
// filters or carried assignments passes unchanged.
//
// The XML is hostile input: at most kMaxIncomingXml bytes, a UUID of
// libvirt's form, targets and policy names checked, files only under the
// configured SSD roots (PrepareSsdFile refuses anything else).
//
// Thread-safety: thread-safe (the manager's own locks); blocks on the file
// system and libvirt (worker threads only).
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "manager/core/manager.h"
#include "manager/libvirt/libvirt_client.h"

namespace hc::migration {

inline constexpr size_t kMaxIncomingXml = 512 * 1024;

struct Prepared {
  std::string xml;                 // what the destination starts from
  std::vector<std::string> notes;  // what was done, one line per disk ("" none)
};

// `host`: this host's name for messages.
Result<Prepared> PrepareIncoming(core::Manager& manager, libvirt::LibvirtClient& lv,
                                 const std::string& xml, const std::string& host);

// This host's name (gethostname), for messages.
std::string ThisHost();

// Whether `s` is a UUID as libvirt writes them (8-4-4-4-12 hex digits).
bool ValidUuid(const std::string& s);

}  // namespace hc::migration
