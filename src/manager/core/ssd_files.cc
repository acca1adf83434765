#include "manager/core/ssd_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/util.h"
#include "hc-ssd.h"

namespace hc::core {

namespace {

tl::unexpected<Error> Problem(const std::string& path, const std::string& what, int err) {
  return Fail(ErrorCode::kFailedPrecondition,
              "the SSD tier file " + path + " cannot be used: " + what + " (" +
                  std::strerror(err) + ")");
}

// A file descriptor closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

std::string TypeName(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
  return "not a regular file";
}

// Who may own what hostcached reaches below an SSD root: itself, or
// QEMU's user (anyone when libvirt does not say who that is).
bool TrustedOwner(uid_t uid, const libvirt::ProcessOwner* owner) {
  return !owner || uid == geteuid() || uid == owner->uid;
}

// Lexically normal: absolute, no "." or ".." components, no "//", no
// trailing '/'.  "" when `p` is not absolute or has "..".
std::string Normal(const std::string& p) {
  if (p.empty() || p[0] != '/') return "";
  std::string out;
  for (const auto& part : std::filesystem::path(p)) {
    const std::string s = part.string();
    if (s == "/" || s.empty() || s == ".") continue;
    if (s == "..") return "";
    out += "/" + s;
  }
  return out.empty() ? "/" : out;
}

bool Under(const std::string& dir, const std::string& root) {
  return dir == root || root == "/" ||
         (dir.size() > root.size() && dir.compare(0, root.size(), root) == 0 &&
          dir[root.size()] == '/');
}

// `dir` with the symbolic links of its existing part resolved.
std::string Resolved(const std::string& dir) {
  std::error_code ec;
  auto r = std::filesystem::weakly_canonical(dir, ec);
  return ec ? dir : Normal(r.string());
}

// Opens the directory `dir` (below one of `roots`) without following any
// link below the root, creating what is missing when `create`: mode 0755,
// except `dir` itself, 0700 and given to `owner` (when root).  Each
// directory must belong to root or QEMU's user.
Result<Fd> OpenTierDir(const std::string& path, const std::string& dir, const SsdRoots& roots,
                       bool create, const libvirt::ProcessOwner* owner) {
  auto where = roots.Locate(dir);
  if (!where) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + path + " cannot be used: " + roots.NotUnder(dir));
  }
  const auto& [root, below] = *where;
  Fd fd(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.ok() && errno == ENOENT && create) {
    std::error_code ec;
    std::filesystem::create_directories(root, ec);
    if (ec) return Problem(path, "the SSD root " + root + " cannot be created", ec.value());
    fd = Fd(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }
  if (!fd.ok()) return Problem(path, "the SSD root " + root + " cannot be opened", errno);
  std::string at = root;
  std::vector<std::string> parts;
  for (const auto& part : std::filesystem::path(below)) parts.push_back(part.string());
  for (size_t i = 0; i < parts.size(); i++) {
    const std::string& name = parts[i];
    if (name.empty() || name == "/") continue;
    const bool last = i + 1 == parts.size();
    at += "/" + name;
    bool made = false;
    Fd next(openat(fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.ok() && errno == ENOENT && create) {
      made = mkdirat(fd.get(), name.c_str(), last ? 0700 : 0755) == 0;
      if (!made && errno != EEXIST) {
        return Problem(path, "ssd-dir " + at + " cannot be created", errno);
      }
      next = Fd(openat(fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    }
    if (!next.ok()) {
      // (O_NOFOLLOW | O_DIRECTORY on a link fails with ENOTDIR.)
      struct stat ls;
      if ((errno == ELOOP || errno == ENOTDIR) &&
          fstatat(fd.get(), name.c_str(), &ls, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ls.st_mode)) {
        errno = ELOOP;
      }
      if (errno == ELOOP) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "the SSD tier file " + path + " cannot be used: " + at +
                        " is a symbolic link, which hostcached does not follow below an SSD "
                        "root; use the directory it points to as ssd-dir, if that is under a "
                        "root, or remove the link");
      }
      if (errno == ENOTDIR) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "the SSD tier file " + path + " cannot be used: ssd-dir " + at +
                        " exists and is not a directory");
      }
      return Problem(path, "ssd-dir " + at + " cannot be opened", errno);
    }
    struct stat st;
    if (fstat(next.get(), &st) != 0) return Problem(path, "fstat of " + at, errno);
    if (!TrustedOwner(st.st_uid, owner)) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the SSD tier file " + path + " cannot be used: directory " + at +
                      " belongs to uid " + std::to_string(st.st_uid) +
                      ", neither hostcached's user nor QEMU's (" + std::to_string(owner->uid) +
                      ")");
    }
    if (made && last) {
      if (fchmod(next.get(), 0700) != 0) return Problem(path, "chmod of " + at, errno);
      if (owner && geteuid() == 0 && fchown(next.get(), owner->uid, owner->gid) != 0) {
        return Problem(path, "chown of " + at, errno);
      }
    }
    fd = std::move(next);
  }
  return fd;
}

// The tier file `name` in `dirfd`, opened for reading without following a
// link and without blocking (a FIFO), checked to be a regular file with
// one link.  An invalid Fd with errno ENOENT when it does not exist.
Result<Fd> OpenTierFile(int dirfd, const std::string& name, const std::string& path) {
  struct stat ls;
  if (fstatat(dirfd, name.c_str(), &ls, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Fd();
    return Problem(path, "it cannot be examined", errno);
  }
  // (Checked before the open too, so that no device is ever opened.)
  if (!S_ISREG(ls.st_mode)) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + path + " is " + TypeName(ls.st_mode) +
                    ", not a regular file; hostcached does not use it (remove it)");
  }
  Fd fd(openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.ok()) {
    if (errno == ENOENT) return Fd();
    if (errno == ELOOP) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the SSD tier file " + path +
                      " is a symbolic link, not a regular file; hostcached does not use it "
                      "(remove it)");
    }
    return Problem(path, "it cannot be opened", errno);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Problem(path, "fstat", errno);
  if (!S_ISREG(st.st_mode)) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + path + " is " + TypeName(st.st_mode) +
                    ", not a regular file; hostcached does not use it (remove it)");
  }
  if (st.st_nlink != 1) {
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + path + " has " + std::to_string(st.st_nlink) +
                    " hard links; a tier file has one (remove it)");
  }
  return fd;
}

// What the superblocks read from `fd` say (the driver's decoder).
SsdFileInfo Decode(int fd) {
  static_assert(2 * HC_SSD_SB_SIZE == 8192);
  uint8_t buf[2 * HC_SSD_SB_SIZE] = {};
  size_t got = 0;
  while (got < sizeof buf) {
    ssize_t n = pread(fd, buf + got, sizeof buf - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return {SsdFileState::kOpen, "", true,
              std::string("it cannot be read: ") + std::strerror(errno)};
    }
    if (n == 0) break;  // shorter: the rest counts as zeroes
    got += static_cast<size_t>(n);
  }
  HcSsdSuper sb;
  char err[256] = "";
  switch (hc_ssd_super_pick(buf, buf + HC_SSD_SB_SIZE, &sb, err, sizeof err)) {
    case 0:
      // A tier handed off to another host by a live migration holds clean
      // copies only (everything was written back first), like a clean close.
      return {sb.state == HC_SSD_STATE_CLEAN || sb.state == HC_SSD_STATE_HANDED_OFF
                  ? SsdFileState::kClean
                  : SsdFileState::kOpen,
              std::string(sb.origin_id, strnlen(sb.origin_id, sizeof sb.origin_id)), false, ""};
    case -ENOENT:
      return {SsdFileState::kBlank, "", false, ""};
    default:
      // Damaged, or not a tier at all: the driver refuses it too.
      return {SsdFileState::kOpen, "", true, err};
  }
}

}  // namespace

// ---- SsdRoots ---------------------------------------------------------------------

Result<SsdRoots> SsdRoots::Make(const std::vector<std::string>& dirs) {
  if (dirs.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                std::string("ssd-root: at least one directory is needed (default ") +
                    kDefaultSsdRoot + ")");
  }
  SsdRoots r;
  r.dirs_.clear();
  for (const auto& d : dirs) {
    const std::string n = Normal(d);
    if (n.empty() || n == "/" || d.find(',') != std::string::npos) {
      return Fail(ErrorCode::kInvalidArgument,
                  "ssd-root '" + d + "' is not an absolute directory path without '..' or "
                  "commas (and not /)");
    }
    r.dirs_.push_back(n);
  }
  return r;
}

Result<std::string> SsdRoots::Canonical(const std::string& dir) const {
  const std::string n = Normal(dir);
  if (n.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "ssd-dir '" + dir + "' must be an absolute path without '..' components; " +
                    NotUnder(dir));
  }
  const std::string canon = Resolved(n);
  if (canon.find(',') != std::string::npos) {
    return Fail(ErrorCode::kInvalidArgument,
                "ssd-dir '" + dir + "' resolves to " + canon + ", which has a comma");
  }
  if (!Locate(canon)) {
    return Fail(ErrorCode::kInvalidArgument,
                "ssd-dir '" + dir + "'" + (canon != n ? " (which resolves to " + canon + ")" : "") +
                    " is refused: " + NotUnder(canon));
  }
  return canon;
}

std::optional<std::pair<std::string, std::string>> SsdRoots::Locate(const std::string& dir) const {
  const std::string n = Normal(dir);
  if (n.empty()) return std::nullopt;
  for (const auto& d : dirs_) {
    for (const std::string& root : {Resolved(d), d}) {
      if (!Under(n, root)) continue;
      return std::make_pair(root, n.size() > root.size() ? n.substr(root.size() + 1) : "");
    }
  }
  return std::nullopt;
}

std::string SsdRoots::Describe() const {
  std::string out;
  for (const auto& d : dirs_) out += (out.empty() ? "" : ", ") + d;
  return out;
}

std::string SsdRoots::NotUnder(const std::string& dir) const {
  return dir + " is not under an SSD root (" + Describe() +
         "); hostcached makes SSD tier directories and files only there: choose a directory "
         "under one of them, or add a root to hostcached's config file (ssd-root = DIR)";
}

// ---- tier files ---------------------------------------------------------------------

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
                      const SsdRoots& roots, const libvirt::ProcessOwner* owner) {
  const bool root = geteuid() == 0;
  if (path.empty() || path[0] != '/') {
    return Fail(ErrorCode::kInvalidArgument,
                "the SSD tier file " + path + " is not an absolute path; ssd-dir must be one");
  }
  const std::filesystem::path p(path);
  const std::string dir = p.parent_path().string();
  const std::string name = p.filename().string();
  auto dfd = OpenTierDir(path, dir, roots, true, owner);
  if (!dfd) return tl::unexpected(dfd.error());
  struct stat ds;
  if (fstat(dfd->get(), &ds) != 0) return Problem(path, "fstat of ssd-dir " + dir, errno);
  auto existing = OpenTierFile(dfd->get(), name, path);
  if (!existing) return tl::unexpected(existing.error());
  if (existing->ok()) {
    struct stat fs;
    if (fstat(existing->get(), &fs) != 0) return Problem(path, "fstat", errno);
    if (!TrustedOwner(fs.st_uid, owner)) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the SSD tier file " + path + " belongs to uid " + std::to_string(fs.st_uid) +
                      ", neither hostcached's user nor QEMU's; hostcached does not use it "
                      "(remove it)");
    }
    if (static_cast<uint64_t>(fs.st_size) == size || !may_replace ||
        Decode(existing->get()).state == SsdFileState::kOpen) {
      if (owner && root && (fs.st_uid != owner->uid || fs.st_gid != owner->gid) &&
          fchown(existing->get(), owner->uid, owner->gid) != 0) {
        return Problem(path, "chown", errno);
      }
      if ((fs.st_mode & 07777) != 0600 && fchmod(existing->get(), 0600) != 0) {
        return Problem(path, "chmod", errno);
      }
      return {};
    }
    // Another size: the tier holds clean copies only, start it blank.
    if (unlinkat(dfd->get(), name.c_str(), 0) != 0) {
      return Problem(path, "the old file cannot be deleted", errno);
    }
  }
  Fd fd(openat(dfd->get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
               0600));
  if (!fd.ok()) return Problem(path, "it cannot be created", errno);
  int err = 0;
  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) err = errno;
  const uid_t uid = owner ? owner->uid : ds.st_uid;
  const gid_t gid = owner ? owner->gid : ds.st_gid;
  if (!err && root && fchown(fd.get(), uid, gid) != 0) err = errno;
  if (!err && fchmod(fd.get(), 0600) != 0) err = errno;
  if (err) {
    unlinkat(dfd->get(), name.c_str(), 0);
    return Problem(path, "it cannot be sized to " + HumanSize(size), err);
  }
  return {};
}

Result<uint64_t> SsdFileSize(const std::string& path) {
  struct stat fs;
  if (lstat(path.c_str(), &fs) != 0) {
    return Fail(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kFailedPrecondition,
                "cannot stat " + path + ": " + std::strerror(errno));
  }
  return static_cast<uint64_t>(fs.st_size);
}

SsdFileInfo ReadSsdFile(const std::string& path) {
  const std::filesystem::path p(path);
  Fd dir(open(p.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.ok()) {
    if (errno == ENOENT) return {SsdFileState::kMissing, "", false, ""};
    return {SsdFileState::kOpen, "", true,
            "its directory cannot be opened: " + std::string(std::strerror(errno))};
  }
  auto fd = OpenTierFile(dir.get(), p.filename().string(), path);
  if (!fd) return {SsdFileState::kOpen, "", true, fd.error().message};  // assume the worst
  if (!fd->ok()) return {SsdFileState::kMissing, "", false, ""};
  return Decode(fd->get());
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

Status RemoveSsdFile(const std::string& path, const SsdRoots& roots, bool even_if_open) {
  if (!path.ends_with(kSsdSuffix)) {
    return Fail(ErrorCode::kInvalidArgument, path + " is not an SSD tier file of hostcached");
  }
  const std::filesystem::path p(path);
  auto dir = OpenTierDir(path, p.parent_path().string(), roots, false, nullptr);
  if (!dir) {
    if (!SsdFileSize(path)) return {};  // nothing there
    return Fail(ErrorCode::kFailedPrecondition,
                "the SSD tier file " + path + " is not deleted: " + dir.error().message);
  }
  const std::string name = p.filename().string();
  struct stat ls;
  if (fstatat(dir->get(), name.c_str(), &ls, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
    return {};
  }
  if (!even_if_open) {
    SsdFileInfo f;
    auto fd = OpenTierFile(dir->get(), name, path);
    if (!fd) {
      f = {SsdFileState::kOpen, "", true, fd.error().message};
    } else if (fd->ok()) {
      f = Decode(fd->get());
    }
    if (f.state == SsdFileState::kOpen) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the SSD tier file " + path +
                      (f.unreadable
                           ? " cannot be read as a tier (" + f.problem +
                                 "); it may be a damaged tier holding written data the disk "
                                 "does not have yet; kept"
                           : " was not closed cleanly (its VM or the host stopped abruptly): it "
                             "may hold written data the disk does not have yet, which the "
                             "driver writes back when the VM starts with it; kept"));
    }
  }
  if (unlinkat(dir->get(), name.c_str(), 0) != 0 && errno != ENOENT) {
    return Fail(ErrorCode::kFailedPrecondition,
                "cannot delete " + path + ": " + std::strerror(errno));
  }
  return {};
}

}  // namespace hc::core
