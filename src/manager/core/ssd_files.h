// The SSD tier files hostcached creates for the driver's `ssd` child: one
// raw, sparse file per cached disk, <ssd-dir>/<vm-uuid>-<target>.hcssd, of
// the policy's ssd-size bytes.  The driver formats a blank file itself
// (docs/SSD-FORMAT.md); a file the driver formatted for this disk is reused
// (warm restart), so a file is only created when missing and only resized
// (deleted and created blank) when no QEMU has it open.
//
// Where: ssd-dir must lie under one of the configured SSD roots (SsdRoots,
// config key ssd-root).  The daemon runs as root and ssd-dir belongs to
// QEMU's user, who may plant anything there, so every directory below the
// root is opened with O_NOFOLLOW | O_DIRECTORY (symbolic links are refused,
// never followed), each file with O_NOFOLLOW | O_NONBLOCK and checked with
// fstat (a regular file with one link, owned by root or QEMU's user) before
// it is read, chowned or chmodded through its descriptor: a FIFO, device or
// link in its place is refused with a message, and never blocks.
//
// Ownership of what is created: directories below the root that are
// missing (mode 0755, root's, except ssd-dir itself: mode 0700), and each
// file (mode 0600), owned by the user QEMU runs as when libvirt says who
// that is (its DAC label), else the file by the owner of ssd-dir.
//
// The superblocks are decoded by the driver's own format code
// (qemu-block-driver/hc-ssd.c, CRC checked).
//
// Stateless functions; thread-safe for different paths.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/policy/policy.h"

namespace hc::core {

inline constexpr const char* kSsdSuffix = ".hcssd";
inline constexpr const char* kDefaultSsdRoot = "/var/lib/hostcache/ssd";

// The directories under which policies' ssd-dir may lie (config: ssd-root,
// repeatable).  A plain value; const methods are thread-safe.
class SsdRoots {
 public:
  SsdRoots() : dirs_{kDefaultSsdRoot} {}
  // Absolute paths without commas, "." or ".."; kInvalidArgument otherwise.
  static Result<SsdRoots> Make(const std::vector<std::string>& dirs);

  // `dir` as it is stored in a policy: made canonical (its existing part's
  // symbolic links resolved, "//" and a trailing '/' dropped; ".." is
  // refused), and then under one of the roots (resolved the same way).
  // kInvalidArgument naming the roots otherwise.
  Result<std::string> Canonical(const std::string& dir) const;
  // The root (resolved) that `dir` lies under, and the path below it ("" =
  // the root itself), by its text; nullopt when none.
  std::optional<std::pair<std::string, std::string>> Locate(const std::string& dir) const;
  // "/var/lib/hostcache/ssd, /srv/ssd" (as configured).
  std::string Describe() const;
  // Why `dir` is refused, for messages; names the roots and the config key.
  std::string NotUnder(const std::string& dir) const;
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  std::vector<std::string> dirs_;  // as configured
};

std::string SsdFilePath(const std::string& dir, const std::string& vm_uuid,
                        const std::string& target);

// The driver's view of one disk's tier: the file, the node name of its file
// node (filter node + "-ssd") and the origin-id ("<vm-uuid>/<target>").
policy::SsdSpec MakeSsdSpec(const policy::Rules& r, const std::string& vm_uuid,
                            const std::string& target, const std::string& filter_node);

// Makes `path` a file of `size` bytes: creates the directory (0700) and the
// file (sparse) when missing; a file of another size is deleted and created
// again only when `may_replace` (no QEMU has it open) and it holds nothing
// the disk lacks (kBlank or kClean), else left as it is.  An existing file
// is given to `owner` with mode 0600.
// Fails (kFailedPrecondition) with a message naming the path and the reason
// when the directory or file cannot be made or is not a regular file, or
// when the directory is not under one of `roots`.
// `owner`: who must be able to open it (QEMU's user), or nullptr.
Status PrepareSsdFile(const std::string& path, uint64_t size, bool may_replace,
                      const SsdRoots& roots, const libvirt::ProcessOwner* owner = nullptr);

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
// ("" when kMissing or kBlank).  A file that cannot be read, is not a
// regular file, or holds neither a valid superblock (magic and CRC, as the
// driver checks them) nor zeroes is kOpen and `unreadable`: it may be a
// damaged tier with a journal, so nothing deletes or replaces it.
struct SsdFileInfo {
  SsdFileState state = SsdFileState::kMissing;
  std::string origin_id;
  bool unreadable = false;  // could not be read (state kOpen: assume the worst)
  std::string problem;      // why, when unreadable
  // The driver has formatted the file (clean or in use).
  bool formatted() const { return state == SsdFileState::kClean || state == SsdFileState::kOpen; }
};
SsdFileInfo ReadSsdFile(const std::string& path);

// Deletes a tier file (only names ending in .hcssd, in a directory under
// `roots`, reached without following links).  A missing file is fine.  A
// file that may hold data the disk does not have (kOpen) is kept
// (kFailedPrecondition) unless `even_if_open` (a tier given up).
Status RemoveSsdFile(const std::string& path, const SsdRoots& roots, bool even_if_open = false);

}  // namespace hc::core
