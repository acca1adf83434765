// The Prometheus text exposition (format 0.0.4) of hostcached's metrics.
// Per-disk series carry the labels `domain` and `target_device`, the names
// libvirt-exporter uses, so the two join in PromQL.
//
// Pure formatting; thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "manager/core/manager.h"
#include "manager/stats/collector.h"
#include "manager/store/policy_catalogue.h"
#include "manager/store/store.h"

namespace hc::metrics {

struct Snapshot {
  std::vector<stats::DiskSnapshot> disks;
  std::vector<store::Assignment> assignments;
  std::map<std::string, stats::VmCollectorState> collectors;
  core::BudgetView budget;
  bool libvirt_connected = false;
  store::CatalogueState catalogue;  // where policies come from (local or etcd)
};

std::string Render(const Snapshot& s);

// A label value escaped for the exposition format.
std::string EscapeLabel(const std::string& v);

}  // namespace hc::metrics
