// The host's cache budgets: how much RAM and SSD space the assignments
// take, and whether one more disk (or a policy's new rules) still fits.
// Pure functions over what the store holds (its assignments and
// policies): no locks, no I/O.  The caller that acts on an answer holds
// the Manager's budget mutex across the check and the write it allows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "manager/policy/policy.h"
#include "manager/store/store.h"

namespace hc::core {

struct BudgetLimits {
  uint64_t ram = 0;  // bytes of host RAM all caches together may use
  uint64_t ssd = 0;  // bytes of SSD all caches together may use
};

// What assignments take of the budgets.
struct Usage {
  uint64_t ram = 0, ssd = 0;  // bytes, each disk at its policy's sizes
  int disks = 0;              // assignments counted
  int users = 0;              // of them, those of the changed policy (AssignedUsage)
};

// Sums the cache sizes of `assignments` at their policies' rules (a policy
// missing from `policies` counts at the default rules), the policy named like
// `*changed` at `changed->rules` instead (nullptr: as stored), without the
// disk `skip_uuid`/`skip_target` (none when empty).
Usage AssignedUsage(const std::vector<store::Assignment>& assignments,
                    const std::vector<policy::Policy>& policies,
                    const policy::Policy* changed = nullptr, const std::string& skip_uuid = "",
                    const std::string& skip_target = "");

// The same over the store's current assignments and policies.
Result<Usage> AssignedUsage(store::Store& store, const policy::Policy* changed = nullptr,
                            const std::string& skip_uuid = "",
                            const std::string& skip_target = "");

// Whether disk `what` ("web/vda") with rules `r` fits beside `others` (the
// usage without it): kConflict saying what is short and what to do.
Status FitsDisk(const Usage& others, const policy::Rules& r, const BudgetLimits& limits,
                const std::string& what);

// Whether policy `name`'s users still fit once its rules change (`with`:
// the usage at the new rules, AssignedUsage with `changed`): kConflict
// otherwise.  A policy nobody uses always fits.
Status FitsPolicy(const Usage& with, const std::string& name, const BudgetLimits& limits);

}  // namespace hc::core
