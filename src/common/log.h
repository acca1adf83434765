// Logging set-up: one spdlog logger writing to stderr.  Under systemd
// (JOURNAL_STREAM set) lines carry the syslog priority prefix "<N>" that
// journald understands and no timestamp (journald adds its own).
//
// Call SetupLogging once, before other threads start.  spdlog's free
// functions (spdlog::info, ...) are thread-safe afterwards.
#pragma once

#include <string>

#include "common/error.h"

namespace hc {

// `level` is one of trace, debug, info, warn, error.
Status SetupLogging(const std::string& level);

}  // namespace hc
