#include "manager/core/event_log.h"

#include <spdlog/spdlog.h>

namespace hc::core {

void EventLog::Log(const std::string& level, const std::string& vm, const std::string& target,
                   const std::string& action, const std::string& message) {
  std::string where = vm.empty() ? "" : (target.empty() ? vm : vm + "/" + target) + ": ";
  if (level == "error") {
    spdlog::error("{}{}", where, message);
  } else if (level == "warning") {
    spdlog::warn("{}{}", where, message);
  } else {
    spdlog::info("{}{}", where, message);
  }
  auto r = store_.AppendEvent(store::Event{0, clock_.NowMs(), level, vm, target, action, message});
  if (!r) spdlog::error("cannot record event: {}", r.error().message);
}

}  // namespace hc::core
