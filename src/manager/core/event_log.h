// The event log: what the daemon did and why, for a person (GET /events,
// the dashboard), also written to the daemon's log.
//
// Ownership: borrows the store and the clock; they must outlive it.
// Thread-safety: Log may be called from any thread (the store serialises).
#pragma once

#include <string>

#include "common/clock.h"
#include "manager/store/store.h"

namespace hc::core {

class EventLog {
 public:
  EventLog(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Appends one event.  `level`: "info", "warning" or "error"; `vm` and
  // `target` may be "" (daemon-wide); `action`: a short kind ("assign",
  // "migrate-out", ...) the API filters on.
  void Log(const std::string& level, const std::string& vm, const std::string& target,
           const std::string& action, const std::string& message);

 private:
  store::Store& store_;
  const Clock& clock_;
};

}  // namespace hc::core
