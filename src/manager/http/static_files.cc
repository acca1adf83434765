#include "manager/http/static_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace hc::http {

namespace {

constexpr size_t kMaxDepth = 8;
constexpr size_t kMaxName = 255;
constexpr off_t kMaxFile = 64 << 20;

// Owns one file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

bool SafeName(std::string_view s) {
  if (s.empty() || s.size() > kMaxName || s.front() == '.') return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// "/assets/app-X.js?v=1" -> {"assets", "app-X.js"}; "/" -> {"index.html"}.
// Empty when the path is not one the dashboard can have.
std::vector<std::string> SplitPath(std::string_view target) {
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (path.empty() || path.front() != '/') return {};
  path.remove_prefix(1);
  if (path.empty()) return {"index.html"};
  std::vector<std::string> out;
  while (true) {
    auto slash = path.find('/');
    std::string_view name = path.substr(0, slash);
    if (!SafeName(name) || out.size() == kMaxDepth) return {};
    out.emplace_back(name);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

Response NotFound(const std::string& detail) {
  return Problem(404, detail, "NOT_FOUND");
}

const char* const kHtmlPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

}  // namespace

std::string StaticFiles::ContentType(const std::string& name) {
  static const std::pair<const char*, const char*> kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".woff2", "font/woff2"},
      {".txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [ext, type] : kTypes) {
    std::string_view e(ext);
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0) {
      return type;
    }
  }
  return "application/octet-stream";
}

bool StaticFiles::Available() const {
  struct stat st;
  return ::stat((root_ + "/index.html").c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Response StaticFiles::Serve(const Request& req) const {
  if (req.method != "GET") {
    Response r = Problem(405, req.method + " is not supported for the dashboard's files; use GET");
    r.headers.emplace_back("Allow", "GET");
    return r;
  }
  auto names = SplitPath(req.target);
  if (names.empty()) return NotFound("no such file in the dashboard");
  Fd dir(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.ok()) {
    return NotFound("the dashboard is not installed: cannot open " + root_ + " (" +
                    std::strerror(errno) + "); build it (make) or point --web-dir at it");
  }
  for (size_t i = 0; i + 1 < names.size(); i++) {
    Fd sub(::openat(dir.get(), names[i].c_str(),
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub.ok()) return NotFound("no such file in the dashboard");
    dir = std::move(sub);
  }
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  Fd file(::openat(dir.get(), names.back().c_str(),
                   O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat st;
  if (!file.ok() || ::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    if (names.size() == 1 && names[0] == "index.html") {
      return NotFound("the dashboard is not built: " + root_ +
                      " has no index.html; build it (make) or point --web-dir at it");
    }
    return NotFound("no such file in the dashboard");
  }
  if (st.st_size > kMaxFile) {
    return Problem(500, "the dashboard file is larger than expected; see hostcached's log");
  }
  Response r;
  r.content_type = ContentType(names.back());
  r.body.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < r.body.size()) {
    ssize_t n = ::read(file.get(), r.body.data() + got, r.body.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      spdlog::warn("reading {}/{}: {}", root_, names.back(),
                   n < 0 ? std::strerror(errno) : "file shrank");
      return Problem(500, "cannot read a dashboard file; see hostcached's log");
    }
    got += static_cast<size_t>(n);
  }
  bool hashed = names.size() == 2 && names[0] == "assets";
  r.headers.emplace_back("Cache-Control",
                         hashed ? "public, max-age=31536000, immutable" : "no-cache");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (r.content_type.rfind("text/html", 0) == 0) {
    r.headers.emplace_back("Content-Security-Policy", kHtmlPolicy);
    r.headers.emplace_back("X-Frame-Options", "DENY");
    r.headers.emplace_back("Referrer-Policy", "no-referrer");
  }
  return r;
}

}  // namespace hc::http
