// Fuzz target manager-domain-xml: domain XML, which comes from libvirt but
// carries whatever a person or another tool put into a definition (the
// <qemu:commandline> arguments, aliases, sources).  Reading it, predicting
// node names and writing our filters into it must never crash or throw,
// and writing the filters is idempotent: a second ApplyFilters with the same
// filters changes nothing, and ParseInstalledFilters finds what it wrote.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "manager/libvirt/domain_xml.h"
#include "manager/policy/policy.h"

namespace {

using namespace hc;
using namespace hc::libvirt;

void Fail(const char* what, const std::string& a, const std::string& b = "") {
  std::fprintf(stderr, "manager-domain-xml: %s\n--- first\n%s\n--- second\n%s\n", what,
               a.c_str(), b.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string xml(reinterpret_cast<const char*>(data), size);
  (void)ParseDacBaseLabel(xml);
  (void)ParseFilterNodeNames(xml);
  (void)ParseInstalledFilters(xml);
  auto info = ParseDomain(xml);
  if (!info) return 0;
  (void)LiveTopNodes(*info);
  auto nodes = PredictTopNodes(*info, [](const DiskInfo& d) -> Result<int> {
    if (d.source.size() % 5 == 4) return Fail(ErrorCode::kNotFound, "no such image");
    return 1 + static_cast<int>(d.source.size() % 3);
  });
  // A filter on each disk that can have one (a valid target and a medium).
  // The round trip is checked only for a definition libvirt would accept:
  // distinct targets and device aliases (ours included).
  std::vector<FilterSpec> specs;
  std::set<std::string> targets, seen_targets, seen_aliases;
  bool distinct = true;
  for (const auto& d : info->disks) {
    distinct = distinct && seen_targets.insert(d.target).second;
    const bool cached = ValidTarget(d.target) && !d.empty();
    if (cached) targets.insert(d.target);
    const std::string alias =
        cached && d.alias.rfind("ua-", 0) != 0 ? "ua-hc-" + d.target : d.alias;
    if (!alias.empty()) distinct = distinct && seen_aliases.insert(alias).second;
  }
  for (const auto& t : targets) {
    const std::string node = std::string(kNodePrefix) + t;
    const std::string file = nodes && nodes->count(t) ? nodes->at(t) : "libvirt-1-format";
    policy::SsdSpec ssd{"/var/lib/hostcache/ssd/x-" + t + ".hcssd", node + "-ssd", "x/" + t};
    specs.push_back(FilterSpec{t, node,
                               policy::DriverOptions(policy::Rules{}, node, file,
                                                     t.size() % 2 ? &ssd : nullptr)});
  }
  auto once = ApplyFilters(xml, specs, "/opt/hostcache/qemu-system-x86_64");
  if (!once || !distinct) return 0;
  auto twice = ApplyFilters(*once, specs, "/opt/hostcache/qemu-system-x86_64");
  if (!twice) Fail("ApplyFilters refused its own output", *once, twice.error().message);
  if (*twice != *once) Fail("ApplyFilters is not idempotent", *once, *twice);
  auto back = ParseInstalledFilters(*once);
  if (!back) Fail("ParseInstalledFilters refused ApplyFilters' output", *once);
  for (const auto& s : specs) {
    auto it = back->find(s.target);
    if (it == back->end()) Fail(("the filter of " + s.target + " is not read back").c_str(), *once);
    if (it->second.options != s.options) {
      Fail("the filter read back differs", s.options.dump(), it->second.options.dump());
    }
  }
  return 0;
}
