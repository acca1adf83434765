#include "manager/libvirt/qemu_tools.h"

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "common/util.h"

namespace hc::libvirt {

using nlohmann::json;

namespace {
constexpr int kTimeoutMs = 20000;

std::string FirstLine(const std::string& s) {
  std::string t(Trim(s));
  auto nl = t.find('\n');
  t = nl == std::string::npos ? t : t.substr(0, nl);
  // "qemu-img: Could not open 'json:...': hostcache: ..." -> the driver's part.
  auto pos = t.rfind("': ");
  return pos == std::string::npos ? t : t.substr(pos + 3);
}
}  // namespace

Result<int> RealQemuTools::ChainLength(const DiskInfo& disk) {
  if (disk.type != "file" && disk.type != "block") {
    return Fail(ErrorCode::kFailedPrecondition,
                "cannot inspect the backing chain of a " + disk.type +
                    " disk; write it into the domain XML (<backingStore>)");
  }
  auto r = RunProcess({qemu_img_, "info", "-U", "--backing-chain", "--output=json", "-f",
                       disk.format, disk.source},
                      kTimeoutMs);
  if (!r) return tl::unexpected(r.error());
  if (r->exit_code != 0) {
    return Fail(ErrorCode::kFailedPrecondition,
                "qemu-img cannot read " + disk.source + ": " + FirstLine(r->err));
  }
  json j = json::parse(r->out, nullptr, false);
  if (j.is_array() && !j.empty()) return static_cast<int>(j.size());
  if (j.is_object()) return 1;
  return Fail(ErrorCode::kInternal, "unreadable qemu-img info output for " + disk.source);
}

Status RealQemuTools::CheckOptions(const policy::Rules& rules) {
  json opts = policy::DriverOptions(rules, "hc-check", "");
  opts.erase("node-name");
  opts["file"] = json{{"driver", "null-co"}, {"size", 1 << 20}};
  auto r = RunProcess({qemu_img_, "info", "--output=json", "json:" + opts.dump()}, kTimeoutMs);
  if (!r) return tl::unexpected(r.error());
  if (r->exit_code != 0) return Fail(ErrorCode::kInvalidArgument, FirstLine(r->err));
  return {};
}

}  // namespace hc::libvirt
