// Manager::OnCatalogueChange: a policy changed on another host of the
// cluster (manager/cluster/etcd_catalogue.h), re-applied here.  Kept out of
// manager.cc: it only uses the Manager's public operations.
#include <set>

#include "common/util.h"
#include "manager/core/manager.h"

namespace hc::core {

void Manager::OnCatalogueChange(const store::PolicyChange& change) {
  const std::string& name = change.name;
  const std::string rev = " (etcd revision " + std::to_string(change.revision) + ")";
  auto users = PolicyUsers(name);
  if (!users) {
    Log("error", "", "", "policy-sync",
        "policy '" + name + "' " + std::string(store::PolicyChangeName(change.kind)) +
            " in the cluster's catalogue" + rev +
            ", but its disks here cannot be listed: " + users.error().message);
    return;
  }
  switch (change.kind) {
    case store::PolicyChange::Kind::kDeleted:
      Log("info", "", "", "policy-sync",
          "policy '" + name + "' deleted in the cluster's catalogue" + rev);
      return;
    case store::PolicyChange::Kind::kRetained:
      Log("warning", "", "", "policy-sync",
          "policy '" + name + "' was deleted in the cluster's catalogue" + rev +
              "; kept on this "
              "host for its " +
              std::to_string(users->size()) +
              " disk(s) here until they no longer "
              "use it");
      return;
    case store::PolicyChange::Kind::kCreated:
    case store::PolicyChange::Kind::kUpdated:
      break;
  }
  std::string rules;
  if (auto p = store_.GetPolicy(name)) rules = " to " + policy::RulesToJson(p->rules).dump();
  Log("info", "", "", "policy-sync",
      "policy '" + name + "' " + std::string(store::PolicyChangeName(change.kind)) +
          " in the cluster's catalogue" + rules + rev + "; re-applying it to " +
          std::to_string(users->size()) + " disk(s) of this host");
  // The cluster's rules are this host's now; if its disks no longer fit
  // its budget, say so (a change made here is refused instead).
  if (!users->empty()) {
    BudgetView b = Budget();
    if (b.ram_used > b.ram_budget || b.ssd_used > b.ssd_budget) {
      Log("warning", "", "", "policy-sync",
          "with policy '" + name +
              "' as the cluster now has it, the disks assigned on this "
              "host reserve " +
              HumanSize(b.ram_used) + " of cache RAM (budget " + HumanSize(b.ram_budget) +
              ") and " + HumanSize(b.ssd_used) + " of SSD (budget " + HumanSize(b.ssd_budget) +
              "), over this host's budget; choose smaller rules, "
              "unassign disks here, or raise the budget in this host's configuration");
    }
  }
  std::set<std::string> vms;
  for (const auto& a : *users) vms.insert(a.vm_uuid);
  for (const auto& uuid : vms) CheckVm(uuid);
}

}  // namespace hc::core
