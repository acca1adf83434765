// Fuzz target manager-qmp: QEMU's replies, read through libvirt's monitor
// passthrough (QMP).  QEMU runs as another user and its replies are data of
// any shape: the parsers and LiveFilter, which acts on them, must never
// crash or throw.
//
// The input is the replies, one per line, that a scripted QEMU gives to the
// commands in order (query-block, query-blockstats, ...); the first line is
// also handed to each parser directly.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "manager/libvirt/block_graph.h"
#include "manager/libvirt/libvirt_client.h"
#include "manager/libvirt/live_filter.h"

namespace {

using namespace hc;
using namespace hc::libvirt;
using nlohmann::json;

// A libvirt whose one running VM's QEMU answers with the input's lines.
class ScriptedLibvirt final : public LibvirtClient {
 public:
  explicit ScriptedLibvirt(std::vector<std::string> replies) : replies_(std::move(replies)) {}
  bool IsAlive() override { return true; }
  std::string LastConnectionError() override { return ""; }
  Result<std::vector<DomainRef>> ListDomains() override {
    return std::vector<DomainRef>{{"u", "vm", true, true}};
  }
  Result<DomainRef> LookupDomain(const std::string&) override {
    return DomainRef{"u", "vm", true, true};
  }
  Result<std::string> GetXml(const std::string&, bool) override {
    return Fail(ErrorCode::kNotFound, "no XML here");
  }
  Status DefineXml(const std::string&) override { return {}; }
  Result<std::string> QemuMonitorCommand(const std::string&, const std::string&) override {
    if (next_ >= replies_.size()) return Fail(ErrorCode::kUnavailable, "QEMU went away");
    return QmpReturn(replies_[next_++]);
  }
  void SetLifecycleCallback(LifecycleCallback) override {}
  void SetConnectionCallback(ConnectionCallback) override {}

 private:
  std::vector<std::string> replies_;
  size_t next_ = 0;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size() && out.size() < 64) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> replies =
      Lines(std::string(reinterpret_cast<const char*>(data), size));
  // The parsers on the first reply's "return".
  auto ret = QmpReturn(replies[0]);
  if (ret) {
    const json j = json::parse(*ret, nullptr, false);
    (void)ParseQueryBlock(j);
    (void)ParseBlockGraph(j);
    (void)ParentCounts(j);
    for (const auto& [node, stats] : ParseNodeStats(j)) {
      policy::Rules r;
      r.ssd_size = node.size() % 2 ? 1 << 20 : 0;
      (void)CompareSettings(stats, r);
      (void)SsdFailure(stats);
      (void)UnreportedOptions(stats);
    }
  }
  // LiveFilter acting on the replies in order, as a check and an unassign
  // would.
  ScriptedLibvirt lv(replies);
  LiveFilter live(lv);
  policy::Rules rules;
  policy::SsdSpec ssd{"/ssd/u-vda.hcssd", "hc-vda-ssd", "u/vda"};
  auto disk = live.Inspect("u", "virtio-disk0");
  if (disk) {
    if (disk->has_filter) {
      (void)live.Reopen("u", disk->root, disk->filter_child, rules, &ssd);
      (void)live.Remove("u", *disk, "u/vda");
    } else {
      (void)live.Insert("u", *disk, rules, "hc-vda", &ssd);
    }
  }
  (void)live.HasParent("u", "hc-vda");
  (void)live.RemoveOrphan("u", "hc-vda", "u/vda");
  return 0;
}
