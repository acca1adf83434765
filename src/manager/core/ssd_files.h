// The SSD tier files hostcached creates for the driver's `ssd` child: one
// raw, sparse file per cached disk, <ssd-dir>/<vm-uuid>-<target>.hcssd, of
// the policy's ssd-size bytes.  The driver formats a blank file itself
// (docs/SSD-FORMAT.md); a file the driver formatted for this disk is reused
// (warm restart), so a file is only created when missing and only resized
// (deleted and created blank) when no QEMU has it open.
//
// Ownership of what is created: ssd-dir (mode 0700) when missing, and each
// file (mode 0600), owned by the user QEMU runs as when libvirt says who
// that is (its DAC label), else the file by the owner of ssd-dir.
//
// Stateless functions; thread-safe for different paths.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/policy/policy.h"

namespace hc::core {

inline constexpr const char* kSsdSuffix = ".hcssd";

std::string SsdFilePath(const std::string& dir, const std::string& vm_uuid,
                        const std::string& target);

// The driver's view of one disk's tier: the file, the node name of its file
// node (filter node + "-ssd") and the origin-id ("<vm-uuid>/<target>").
policy::SsdSpec MakeSsdSpec(const policy::Rules& r, const std::string& vm_uuid,
                            const std::string& target, const std::string& filter_node);

// Makes `path` a file of `size` bytes: creates the directory (0700) and the
// file (sparse) when missing; a file of another size is deleted and created
// again only when `may_replace` (no QEMU has it open) and it holds nothing
// the disk lacks (kBlank or kClean), else left as it is.
// Fails (kFailedPrecondition) with a message naming the path and the reason
// when the directory or file cannot be made.
// `owner`: who must be able to open it (QEMU's user), or nullptr.
Status PrepareSsdFile(const std::string& path, uint64_t size, bool may_replace,
                      const libvirt::ProcessOwner* owner = nullptr);

// The size of `path` in bytes; kNotFound when it does not exist.
Result<uint64_t> SsdFileSize(const std::string& path);

// What a tier file holds, from its superblocks (docs/SSD-FORMAT.md): kBlank
// (no superblock: nothing), kClean (closed cleanly: clean copies only, may
// be thrown away), kOpen (in use, or its QEMU or host crashed: with the
// write-back journal it may hold written data the disk does not have yet,
// which only the driver's recovery writes back), kMissing.
enum class SsdFileState { kMissing, kBlank, kClean, kOpen };
SsdFileState ReadSsdFileState(const std::string& path);
std::string_view SsdFileStateName(SsdFileState s);

// The state and the origin identity (`origin-id`) of the newest superblock
// ("" when kMissing or kBlank).
struct SsdFileInfo {
  SsdFileState state = SsdFileState::kMissing;
  std::string origin_id;
  bool unreadable = false;  // could not be read (state kOpen: assume the worst)
  // The driver has formatted the file (clean or in use).
  bool formatted() const { return state == SsdFileState::kClean || state == SsdFileState::kOpen; }
};
SsdFileInfo ReadSsdFile(const std::string& path);

// Deletes a tier file (only names ending in .hcssd).  A missing file is
// fine.  A file that may hold data the disk does not have (kOpen) is kept:
// kFailedPrecondition.
Status RemoveSsdFile(const std::string& path);

}  // namespace hc::core
