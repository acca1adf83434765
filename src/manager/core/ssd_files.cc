#include "manager/core/ssd_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/util.h"

namespace hc::core {

namespace {

Status Problem(const std::string& path, const std::string& what, int err) {
  return Fail(ErrorCode::kFailedPrecondition,
              "the SSD tier file " + path + " cannot be used: " + what + " (" +
                  std::strerror(err) + ")");
}

}  // namespace

std::string SsdFilePath(const std::string& dir, const std::string& vm_uuid,
                        const std::string& target) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d + "/" + vm_uuid + "-" + target + kSsdSuffix;
}

policy::SsdSpec MakeSsdSpec(const policy::Rules& r, const std::string& vm_uuid,
                            const std::string& target, const std::string& filter_node) {
  return policy::SsdSpec{SsdFilePath(r.ssd_dir, vm_uuid, target), filter_node + "-ssd",
                         vm_uuid + "/" + target};
}

Status PrepareSsdFile(const std::string& path, uint64_t size, bool may_replace,
                      const libvirt::ProcessOwner* owner) {
  const bool root = geteuid() == 0;
  if (path.empty() || path[0] != '/') {
    return Fail(ErrorCode::kInvalidArgument,
                "the SSD tier file " + path + " is not an absolute path; ssd-dir must be one");
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  struct stat ds;
  if (stat(dir.c_str(), &ds) != 0) {
    if (errno != ENOENT) return Problem(path, "ssd-dir " + dir + " cannot be read", errno);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Problem(path, "ssd-dir " + dir + " cannot be created", ec.value());
    if (chmod(dir.c_str(), 0700) != 0) return Problem(path, "chmod of " + dir, errno);
    if (owner && root && chown(dir.c_str(), owner->uid, owner->gid) != 0) {
      return Problem(path, "chown of " + dir, errno);
    }
    if (stat(dir.c_str(), &ds) != 0) return Problem(path, "ssd-dir " + dir, errno);
  }
  if (!S_ISDIR(ds.st_mode)) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + path + " cannot be used: ssd-dir " + dir +
                    " exists and is not a directory");
  }
  struct stat fs;
  if (stat(path.c_str(), &fs) == 0) {
    if (!S_ISREG(fs.st_mode)) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the SSD tier file " + path + " exists and is not a regular file");
    }
    if (static_cast<uint64_t>(fs.st_size) == size || !may_replace ||
        ReadSsdFileState(path) == SsdFileState::kOpen) {
      if (owner && root && (fs.st_uid != owner->uid || fs.st_gid != owner->gid) &&
          chown(path.c_str(), owner->uid, owner->gid) != 0) {
        return Problem(path, "chown", errno);
      }
      return {};
    }
    // Another size: the tier holds clean copies only, start it blank.
    if (unlink(path.c_str()) != 0) return Problem(path, "the old file cannot be deleted", errno);
  } else if (errno != ENOENT) {
    return Problem(path, "stat", errno);
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Problem(path, "it cannot be created", errno);
  int err = 0;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) err = errno;
  const uid_t uid = owner ? owner->uid : ds.st_uid;
  const gid_t gid = owner ? owner->gid : ds.st_gid;
  if (!err && root && fchown(fd, uid, gid) != 0) err = errno;
  close(fd);
  if (err) {
    unlink(path.c_str());
    return Problem(path, "it cannot be sized to " + HumanSize(size), err);
  }
  return {};
}

Result<uint64_t> SsdFileSize(const std::string& path) {
  struct stat fs;
  if (stat(path.c_str(), &fs) != 0) {
    return Fail(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kFailedPrecondition,
                "cannot stat " + path + ": " + std::strerror(errno));
  }
  return static_cast<uint64_t>(fs.st_size);
}

SsdFileInfo ReadSsdFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return {SsdFileState::kMissing, "", false};
    return {SsdFileState::kOpen, "", true};
  }
  unsigned char buf[8192] = {};
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  close(fd);
  if (n < 0) return {SsdFileState::kOpen, "", true};  // unreadable: assume the worst
  static const char kMagic[16] = {'H', 'O', 'S', 'T', 'C', 'A', 'C', 'H',
                                  'E', '-', 'S', 'S', 'D', 0,   0,   0};
  constexpr size_t kOriginOffset = 120, kOriginMax = 256;
  auto le = [&](size_t off, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | buf[off + i];
    return v;
  };
  // The copy with the highest generation decides (a copy torn by a crash
  // that still has the magic only makes this more careful).
  bool any = false;
  uint64_t best_gen = 0, best_state = 0;
  std::string origin;
  for (size_t copy : {size_t{0}, size_t{4096}}) {
    if (copy + 4096 > static_cast<size_t>(n)) continue;
    if (std::memcmp(buf + copy, kMagic, sizeof kMagic) != 0) continue;
    uint64_t gen = le(copy + 56, 8);
    if (!any || gen >= best_gen) {
      best_gen = gen;
      best_state = le(copy + 72, 4);
      const char* o = reinterpret_cast<const char*>(buf + copy + kOriginOffset);
      origin.assign(o, strnlen(o, kOriginMax - 1));
    }
    any = true;
  }
  if (!any) {
    // Blank, or not ours at all; either way nothing of the disk's.
    return {SsdFileState::kBlank, "", false};
  }
  return {best_state == 1 ? SsdFileState::kClean : SsdFileState::kOpen, origin, false};
}

SsdFileState ReadSsdFileState(const std::string& path) { return ReadSsdFile(path).state; }

std::string_view SsdFileStateName(SsdFileState s) {
  switch (s) {
    case SsdFileState::kMissing: return "missing";
    case SsdFileState::kBlank: return "blank";
    case SsdFileState::kClean: return "closed cleanly";
    case SsdFileState::kOpen: return "not closed cleanly";
  }
  return "?";
}

Status RemoveSsdFile(const std::string& path) {
  if (!path.ends_with(kSsdSuffix)) {
    return Fail(ErrorCode::kInvalidArgument, path + " is not an SSD tier file of hostcached");
  }
  if (ReadSsdFileState(path) == SsdFileState::kOpen) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + path +
                    " was not closed cleanly (its VM or the host stopped abruptly): it may hold "
                    "written data the disk does not have yet, which the driver writes back "
                    "when the VM starts with it; kept");
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Fail(ErrorCode::kFailedPrecondition,
                "cannot delete " + path + ": " + std::strerror(errno));
  }
  return {};
}

}  // namespace hc::core
