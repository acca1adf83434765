#include "manager/core/budget.h"

#include <map>

#include "common/util.h"

namespace hc::core {

Usage AssignedUsage(const std::vector<store::Assignment>& assignments,
                    const std::vector<policy::Policy>& policies, const policy::Policy* changed,
                    const std::string& skip_uuid, const std::string& skip_target) {
  std::map<std::string, policy::Rules> rules;
  for (const auto& p : policies) rules[p.name] = p.rules;
  if (changed) rules[changed->name] = changed->rules;
  Usage u;
  for (const auto& a : assignments) {
    if (a.vm_uuid == skip_uuid && a.target == skip_target) continue;
    const policy::Rules& r = rules[a.policy];
    u.ram += r.ram_size;
    u.ssd += r.ssd_size;
    u.disks++;
    u.users += changed && a.policy == changed->name;
  }
  return u;
}

Result<Usage> AssignedUsage(store::Store& store, const policy::Policy* changed,
                            const std::string& skip_uuid, const std::string& skip_target) {
  auto all = store.ListAssignments();
  if (!all) return tl::unexpected(all.error());
  auto pols = store.ListPolicies();
  if (!pols) return tl::unexpected(pols.error());
  return AssignedUsage(*all, *pols, changed, skip_uuid, skip_target);
}

Status FitsDisk(const Usage& others, const policy::Rules& r, const BudgetLimits& limits,
                const std::string& what) {
  if (others.ram + r.ram_size > limits.ram) {
    return Fail(ErrorCode::kConflict,
                "not enough cache RAM: " + what + " would need " + HumanSize(r.ram_size) +
                    ", but " + HumanSize(others.ram) + " of the host's " +
                    HumanSize(limits.ram) + " RAM budget is already assigned to " +
                    std::to_string(others.disks) +
                    " disk(s); choose a policy with a smaller ram-size, unassign other disks, "
                    "or raise ram-budget in the hostcached configuration");
  }
  if (r.ssd_size > 0 && others.ssd + r.ssd_size > limits.ssd) {
    return Fail(ErrorCode::kConflict,
                "not enough SSD cache space: " + what + " would need " + HumanSize(r.ssd_size) +
                    ", but " + HumanSize(others.ssd) + " of the host's " +
                    HumanSize(limits.ssd) +
                    " SSD budget is already assigned; choose a policy with a smaller ssd-size "
                    "or raise ssd-budget in the hostcached configuration");
  }
  return {};
}

Status FitsPolicy(const Usage& with, const std::string& name, const BudgetLimits& limits) {
  if (with.users > 0 && with.ram > limits.ram) {
    return Fail(ErrorCode::kConflict,
                "with these rules the " + std::to_string(with.users) + " disk(s) using policy '" +
                    name + "' would bring the assigned cache RAM to " + HumanSize(with.ram) +
                    ", over the host's " + HumanSize(limits.ram) +
                    " RAM budget; nothing was changed");
  }
  if (with.users > 0 && with.ssd > limits.ssd) {
    return Fail(ErrorCode::kConflict,
                "with these rules the disks using policy '" + name +
                    "' would bring the assigned SSD cache space to " + HumanSize(with.ssd) +
                    ", over the host's " + HumanSize(limits.ssd) +
                    " SSD budget; nothing was changed");
  }
  return {};
}

}  // namespace hc::core
