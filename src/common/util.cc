#include "common/util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hc {

Result<uint64_t> ParseSize(std::string_view text) {
  std::string_view s = Trim(text);
  auto bad = [&] {
    return Fail(ErrorCode::kInvalidArgument,
                "'" + std::string(text) +
                    "' is not a size; use bytes or a number with k, M, G or T (e.g. 256M)");
  };
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) i++;
  if (i == 0) return bad();
  std::string num(s.substr(0, i));
  std::string_view suffix = Trim(s.substr(i));
  uint64_t mult = 1;
  if (!suffix.empty()) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(suffix[0])));
    std::string_view rest = suffix.substr(1);
    if (rest != "" && rest != "b" && rest != "B" && rest != "iB" && rest != "ib") return bad();
    switch (c) {
      case 'b': if (!rest.empty()) return bad(); mult = 1; break;
      case 'k': mult = 1ull << 10; break;
      case 'm': mult = 1ull << 20; break;
      case 'g': mult = 1ull << 30; break;
      case 't': mult = 1ull << 40; break;
      default: return bad();
    }
  }
  if (num.find('.') != std::string::npos) {
    if (std::count(num.begin(), num.end(), '.') > 1) return bad();
    errno = 0;
    double v = std::strtod(num.c_str(), nullptr);
    double bytes = v * static_cast<double>(mult);
    if (errno != 0 || !std::isfinite(bytes) || bytes >= 18446744073709551615.0) return bad();
    if (bytes != std::floor(bytes)) {
      return Fail(ErrorCode::kInvalidArgument,
                  "'" + std::string(text) + "' is not a whole number of bytes");
    }
    return static_cast<uint64_t>(bytes);
  }
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(num.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return bad();
  if (v != 0 && mult > UINT64_MAX / v) {
    return Fail(ErrorCode::kInvalidArgument, "'" + std::string(text) + "' is too large");
  }
  return static_cast<uint64_t>(v) * mult;
}

std::string FormatSize(uint64_t bytes) {
  static const char* kSuffix[] = {"T", "G", "M", "k"};
  static const int kShift[] = {40, 30, 20, 10};
  if (bytes == 0) return "0";
  for (int i = 0; i < 4; i++) {
    uint64_t unit = 1ull << kShift[i];
    if (bytes % unit == 0) return std::to_string(bytes / unit) + kSuffix[i];
  }
  return std::to_string(bytes);
}

std::string HumanSize(uint64_t bytes) {
  static const char* kUnit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    u++;
  }
  char buf[64];
  if (u == 0) {
    std::snprintf(buf, sizeof(buf), "%llu bytes", static_cast<unsigned long long>(bytes));
  } else if (v == std::floor(v)) {
    std::snprintf(buf, sizeof(buf), "%.0f %s", v, kUnit[u]);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnit[u]);
  }
  return buf;
}

std::string HumanSeconds(double seconds) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1f s", seconds);
  return buf;
}

Result<std::string> RandomHex(size_t n) {
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Fail(ErrorCode::kIOError, std::string("/dev/urandom: ") + strerror(errno));
  std::string raw(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, raw.data() + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(fd);
      return Fail(ErrorCode::kIOError, "short read from /dev/urandom");
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; i++) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

std::string_view Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) b++;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) e--;
  return s.substr(b, e - b);
}

namespace {

// The length of the well-formed UTF-8 sequence at the start of `s`, 0 when
// it does not start with one.
size_t Utf8SequenceLength(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](size_t i) { return i < s.size() && (b(i) & 0xc0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xe0 && b(1) < 0xa0) return 0;  // overlong
    if (c == 0xed && b(1) > 0x9f) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xf0 && b(1) < 0x90) return 0;  // overlong
    if (c == 0xf4 && b(1) > 0x8f) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    size_t n = Utf8SequenceLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

std::string ToValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    size_t n = Utf8SequenceLength(s);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      n = 1;
    } else {
      out.append(s.substr(0, n));
    }
    s.remove_prefix(n);
  }
  return out;
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(ErrorCode::kIOError, "cannot read " + path + ": " + strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status WriteFileAtomic(const std::string& path, std::string_view data, unsigned mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Fail(ErrorCode::kIOError, "cannot create " + tmp + ": " + strerror(errno));
  ::fchmod(fd, mode);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Fail(ErrorCode::kIOError, "cannot write " + tmp + ": " + strerror(e));
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return Fail(ErrorCode::kIOError, "cannot write " + tmp + ": " + strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return Fail(ErrorCode::kIOError, "cannot rename " + tmp + " to " + path + ": " + strerror(e));
  }
  return {};
}

std::string Join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

}  // namespace hc
