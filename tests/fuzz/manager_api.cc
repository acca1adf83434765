// Fuzz target manager-api: requests to the REST API (tests/manager's fakes
// for libvirt and QEMU, a real SQLite store in memory).  The target, the
// token and the body are the caller's; the API must answer each with a
// problem document or a result, never crash, never answer 500 (an
// exception it did not expect), and the body of every JSON answer must be
// valid JSON in UTF-8.  What the server decides from the headers alone
// (Api::Admit) must agree with the full answer.
//
// The input is up to 8 requests separated by a 0x1e byte, each
// "METHOD TARGET\nAUTH\nBODY" where AUTH "t" is the right token, anything
// else the Authorization header as it is.  No SSD budget: a policy with an
// SSD tier can be created but never assigned, so nothing touches the file
// system.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/util.h"
#include "fakes.h"
#include "manager/http/api.h"
#include "manager/policy/policy.h"
#include "manager/store/sqlite_store.h"

namespace {

using namespace hc;
using nlohmann::json;

constexpr const char* kWeb = "6a2f3b4c-1d2e-4f50-8a9b-0c1d2e3f4a5b";
constexpr const char* kToken = "0123456789abcdef0123456789abcdef";

std::vector<std::string> Split(const std::string& s, char sep, size_t max) {
  std::vector<std::string> out;
  size_t start = 0;
  while (out.size() + 1 < max) {
    size_t at = s.find(sep, start);
    if (at == std::string::npos) break;
    out.push_back(s.substr(start, at - start));
    start = at + 1;
  }
  out.push_back(s.substr(start));
  return out;
}

void Fail(const char* what, const http::Request& req, const http::Response& r) {
  std::fprintf(stderr, "manager-api: %s\n%s %s\n%s\n-> %d %s\n", what, req.method.c_str(),
               req.target.c_str(), req.body.c_str(), r.status, r.body.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  testing::FakeClock clock;
  testing::FakeLibvirt lv;
  testing::FakeQemuTools tools;
  tools.chains["/var/lib/libvirt/images/web-top.qcow2"] = 3;
  lv.Add(kWeb, "web", testing::TestData("web.inactive.xml"), testing::TestData("web.live.xml"));
  auto store = store::SqliteStore::Open(":memory:", clock.now_ms);
  if (!store) std::abort();
  core::ManagerConfig cfg;
  cfg.ram_budget = 4ull << 30;
  cfg.ssd_budget = 0;
  core::Manager mgr(**store, lv, tools, clock, cfg);
  http::Api api(mgr, **store, nullptr, kToken, "fuzz");
  for (const std::string& text : Split(input, '\x1e', 8)) {
    auto parts = Split(text, '\n', 3);
    parts.resize(3);
    const size_t space = parts[0].find(' ');
    http::Request req;
    req.method = parts[0].substr(0, space);
    req.target = space == std::string::npos ? "/" : parts[0].substr(space + 1);
    req.authorization = parts[1] == "t" ? std::string("Bearer ") + kToken : parts[1];
    req.body = parts[2];
    // The policy rules themselves, as the API reads them.
    json body = json::parse(req.body, nullptr, false);
    if (!body.is_discarded()) {
      (void)policy::PolicyFromJson(body);
      if (body.is_object() && body.contains("rules")) (void)policy::RulesFromJson(body["rules"]);
    }
    const http::Admission adm = api.Admit(http::Request{req.method, req.target,
                                                        req.authorization, ""});
    const http::Response r = api.Handle(req);
    if (r.status == 500) Fail("an internal error", req, r);
    if (adm.response && adm.response->status != r.status) {
      Fail("Admit and Handle disagree", req, r);
    }
    if (!IsValidUtf8(r.body)) Fail("the answer is not UTF-8", req, r);
    if (r.content_type.find("json") != std::string::npos && !r.body.empty() &&
        json::parse(r.body, nullptr, false).is_discarded()) {
      Fail("the answer is not JSON", req, r);
    }
  }
  return 0;
}
