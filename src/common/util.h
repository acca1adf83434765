// Small helpers without project dependencies: sizes, tokens, files.
//
// Thread-safety: all functions are reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace hc {

// "4096", "4k", "256M", "1G", "2MiB", "1.5G" -> bytes (binary multiples).
Result<uint64_t> ParseSize(std::string_view text);

// Bytes -> the shortest exact form ("256M", "4k", "1000"); inverse of ParseSize.
std::string FormatSize(uint64_t bytes);

// Bytes -> a rounded human form for messages ("1.5 GiB").
std::string HumanSize(uint64_t bytes);

// Seconds -> a form for messages with one decimal ("2.5 s").
std::string HumanSeconds(double seconds);

// The strings of `v` with `sep` between them ("" when empty).
std::string Join(const std::vector<std::string>& v, std::string_view sep);

// `n` random bytes from the kernel's CSPRNG as lowercase hex.
Result<std::string> RandomHex(size_t n);

// Comparison whose duration does not depend on where the inputs differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

std::string_view Trim(std::string_view s);

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF).  NUL bytes are well-formed.
bool IsValidUtf8(std::string_view s);

// `s` with every byte that is not part of a well-formed UTF-8 sequence
// replaced by U+FFFD, for text from outside (a tier file, libvirt, QEMU)
// that is stored or sent as JSON.
std::string ToValidUtf8(std::string_view s);

Result<std::string> ReadFile(const std::string& path);

// Write `data` to `path` through a temporary file and rename, with `mode`.
Status WriteFileAtomic(const std::string& path, std::string_view data, unsigned mode);

}  // namespace hc
