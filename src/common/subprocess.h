// Running a helper program (qemu-img) and collecting its output.
//
// Thread-safety: reentrant; uses posix_spawn, so it is safe in a
// multi-threaded process.
#pragma once

#include <string>
#include <vector>

#include "common/error.h"

namespace hc {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs argv[0] (a path) with argv, no shell, stdin from /dev/null.  Kills it
// and fails with kUnavailable after `timeout_ms`.
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, int timeout_ms);

}  // namespace hc
