// Clock seam: everything in the daemon that needs "now" asks a Clock, so tests
// can drive time with a fake.
//
// Thread-safety: implementations must be callable from any thread.
#pragma once

#include <cstdint>

namespace hc {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time in milliseconds since the Unix epoch.
  virtual int64_t NowMs() const = 0;
  // Blocks the calling thread for `ms` milliseconds (a fake advances its
  // time instead).
  virtual void SleepMs(int64_t ms) const;
};

// The system's real-time clock.
class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override;
};

}  // namespace hc
