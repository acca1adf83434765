// hostcachectl: command-line client of hostcached's REST API.
//
//   hostcachectl policy list|show NAME|create NAME ...|update NAME ...|delete NAME
//   hostcachectl disk assign VM TARGET POLICY|unassign VM TARGET|status VM [TARGET]|stats VM TARGET
//                    |forget-tier VM TARGET
//   hostcachectl vm list|show VM|migration VM|migration-xml VM|migrate VM PEER
//   hostcachectl events [--limit N]
//   hostcachectl health
//
// --json prints the API's JSON as it is.  The bearer token is read from
// --token-file (default /var/lib/hostcache/token, or $HOSTCACHE_TOKEN_FILE).
// Exit status: 0 done, 1 the daemon refused (its message is printed),
// 2 usage error, 3 the daemon cannot be reached.
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <nlohmann/json.hpp>

#include "common/util.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using nlohmann::json;

struct Options {
  std::string url = "http://127.0.0.1:8470";
  std::string token_file = "/var/lib/hostcache/token";
  bool json = false;
};

struct HttpResult {
  int status = 0;
  std::string content_type;
  std::string body;
};

class Client {
 public:
  explicit Client(const Options& o) : opts_(o) {}

  // Exits with 3 when the daemon cannot be reached.
  HttpResult Call(bhttp::verb method, const std::string& path, const std::string& body = "",
                  bool auth = true) {
    std::string why;
    auto r = TryCall(method, path, body, auth, &why);
    if (!r) Die(3, why);
    return *r;
  }

  // As Call, but nullopt (`why` says why) when the daemon cannot be reached.
  std::optional<HttpResult> TryCall(bhttp::verb method, const std::string& path,
                                    const std::string& body, bool auth, std::string* why) {
    auto u = boost::urls::parse_uri(opts_.url);
    if (!u || u->scheme() != "http") Die(2, "--url must be http://HOST:PORT, not " + opts_.url);
    std::string host(u->host_address());
    std::string port = u->has_port() ? std::string(u->port()) : "80";
    std::string token = auth ? Token() : "";
    try {
      asio::io_context ioc;
      asio::ip::tcp::resolver resolver(ioc);
      asio::ip::tcp::socket sock(ioc);
      asio::connect(sock, resolver.resolve(host, port));
      timeval tv{120, 0};
      setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(sock.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      bhttp::request<bhttp::string_body> req{method, "/api/v1" + path, 11};
      req.set(bhttp::field::host, host);
      req.set(bhttp::field::user_agent, "hostcachectl");
      if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
      if (!body.empty()) {
        req.set(bhttp::field::content_type, "application/json");
        req.body() = body;
      }
      req.prepare_payload();
      bhttp::write(sock, req);
      beast::flat_buffer buf;
      bhttp::response_parser<bhttp::string_body> parser;
      parser.body_limit(64 << 20);
      bhttp::read(sock, buf, parser);
      auto& res = parser.get();
      beast::error_code ec;
      sock.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
      return HttpResult{static_cast<int>(res.result_int()),
                        std::string(res[bhttp::field::content_type]), res.body()};
    } catch (const std::exception& e) {
      *why = "cannot reach hostcached at " + opts_.url + ": " + e.what() +
             " (is it running? systemctl status hostcached)";
    }
    return std::nullopt;
  }

  // Calls and exits 1 with the problem's detail unless the status is 2xx.
  json Expect(bhttp::verb method, const std::string& path, const std::string& body = "") {
    HttpResult r = Call(method, path, body);
    if (r.status < 200 || r.status >= 300) {
      json p = json::parse(r.body, nullptr, false);
      std::string detail = p.is_object() && p.contains("detail") ? p["detail"].get<std::string>()
                                                                : r.body;
      if (opts_.json && !r.body.empty()) std::cout << r.body;
      Die(1, "error " + std::to_string(r.status) + ": " + detail);
    }
    if (r.body.empty()) return json();
    json j = json::parse(r.body, nullptr, false);
    if (j.is_discarded()) return json(r.body);
    return j;
  }

  [[noreturn]] static void Die(int code, const std::string& msg) {
    std::cerr << "hostcachectl: " << msg << "\n";
    std::exit(code);
  }

 private:
  std::string Token() {
    auto t = hc::ReadFile(opts_.token_file);
    if (!t) {
      Die(2, "cannot read the token file " + opts_.token_file +
                 " (use --token-file, or run as a user that can read it)");
    }
    return std::string(hc::Trim(*t));
  }
  const Options& opts_;
};

std::string Seg(const std::string& s) {
  return boost::urls::encode(s, boost::urls::unreserved_chars);
}

std::string Str(const json& j, const char* key, const std::string& dflt = "-") {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return dflt;
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

std::string Size(const json& v) {
  return v.is_number_unsigned() ? hc::FormatSize(v.get<uint64_t>()) : v.dump();
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); i++) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); i++) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

void PrintPolicy(const json& p) {
  std::cout << "name:         " << Str(p, "name") << "\n"
            << "description:  " << Str(p, "description", "") << "\n"
            << "rules:\n";
  for (auto it = p["rules"].begin(); it != p["rules"].end(); ++it) {
    bool size = it.key() == "ram-size" || it.key() == "block-size" || it.key() == "seq-cutoff" ||
                it.key() == "ssd-size";
    std::string v = size ? Size(it.value())
                         : it.value().is_string() ? it.value().get<std::string>()
                                                  : it.value().dump();
    std::cout << "  " << it.key() << std::string(17 - std::min<size_t>(16, it.key().size()), ' ')
              << (v.empty() ? "-" : v) << "\n";
  }
  if (p.contains("disks")) {
    std::cout << "disks:\n";
    if (p["disks"].empty()) std::cout << "  (none)\n";
    for (const auto& a : p["disks"]) {
      std::cout << "  " << Str(a, "vm") << "/" << Str(a, "target") << "  "
                << Str(a["compliance"], "state") << ": " << Str(a["compliance"], "reason") << "\n";
    }
  }
}

void PrintAssignment(const json& a) {
  std::cout << Str(a, "vm") << "/" << Str(a, "target") << ": policy " << Str(a, "policy")
            << "\n  compliance: " << Str(a["compliance"], "state")
            << "\n  reason:     " << Str(a["compliance"], "reason")
            << "\n  checked:    " << Str(a["compliance"], "checked") << "\n";
  if (a.contains("ssd_tier") && a["ssd_tier"].is_object()) {
    const json& t = a["ssd_tier"];
    std::cout << "  ssd tier:   " << Str(t, "path") << " ("
              << (t.value("formatted", false) ? "formatted by the driver" : "not formatted yet")
              << ")\n";
  }
}

// "k=v" -> rules object; numbers stay numbers, sizes may carry suffixes.
json ParseRules(const std::vector<std::string>& kvs) {
  json rules = json::object();
  for (const auto& kv : kvs) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) Client::Die(2, "--rule wants KEY=VALUE, not " + kv);
    std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
    bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
    rules[k] = digits ? json(std::stoull(v)) : json(v);
  }
  return rules;
}

// What the domain XML `xml` has of hostcache: filters (which need this
// host prepared before QEMU starts) and carried assignments.
struct HookFinds {
  bool filters = false;
  bool carried = false;
};

HookFinds FindHostcache(const std::string& xml) {
  // (No XML parser here: the markers are unambiguous.  Attribute values
  // come with &quot; for '"'; blanks inside the JSON are dropped.)
  std::string flat;
  flat.reserve(xml.size());
  for (size_t i = 0; i < xml.size(); i++) {
    if (xml.compare(i, 6, "&quot;") == 0) {
      flat += '"';
      i += 5;
    } else if (xml[i] != ' ' && xml[i] != '\t' && xml[i] != '\n' && xml[i] != '\r') {
      flat += xml[i];
    }
  }
  HookFinds f;
  f.filters = flat.find("\"driver\":\"hostcache\"") != std::string::npos;
  // The namespace of the carried assignments (src/migration/metadata.h).
  f.carried = xml.find("https://hostcache.dev/xmlns/assignments/1") != std::string::npos;
  return f;
}

// libvirt's hook: args = DOMAIN OPERATION SUB-OPERATION EXTRA, the domain
// XML on stdin.  Returns the exit status (non-zero fails the migration;
// libvirt shows stderr to whoever runs virsh migrate).
int LibvirtHook(Client& client, const std::vector<std::string>& args) {
  constexpr size_t kMaxXml = 16 << 20;
  std::string xml;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), stdin)) > 0) {
    if (xml.size() + n > kMaxXml) {
      std::cerr << "hostcache: the domain XML on stdin is larger than " << kMaxXml << " bytes\n";
      return 1;
    }
    xml.append(buf, n);
  }
  if (args.size() < 2 || args[1] != "migrate") return 0;  // nothing to do for other operations
  const std::string dom = args[0];
  const HookFinds finds = FindHostcache(xml);
  if (!finds.filters && !finds.carried) return 0;  // not a VM of ours: unchanged
  std::string why;
  auto r = client.TryCall(bhttp::verb::post, "/migrations/prepare", json{{"xml", xml}}.dump(),
                          true, &why);
  if (!r) {
    if (!finds.filters) {
      // Its assignments are adopted when hostcached starts here.
      std::cerr << "hostcache: hostcached is not running on this host; VM '" << dom
                << "' carries hostcache assignments, adopted once it starts\n";
      return 0;
    }
    std::cerr << "hostcache: migration of VM '" << dom << "' refused on this host: its disks "
              << "have hostcache filters whose SSD tier files and cache budget hostcached "
              << "prepares before QEMU starts here, and " << why
              << "; start hostcached on this host and migrate again\n";
    return 1;
  }
  json j = json::parse(r->body, nullptr, false);
  if (r->status != 200) {
    std::string detail = j.is_object() && j.contains("detail") && j["detail"].is_string()
                             ? j["detail"].get<std::string>()
                             : r->body.substr(0, 2000);
    std::cerr << "hostcache: " << detail << "\n";
    return 1;
  }
  if (!j.is_object() || !j.contains("xml") || !j["xml"].is_string()) {
    std::cerr << "hostcache: hostcached answered without the XML to start from\n";
    return 1;
  }
  std::cout << j["xml"].get<std::string>();
  return std::cout.flush() ? 0 : 1;
}

// How far a migration (GET /vms/{vm}/migration) is, 0..1, and of what:
// the write-back data drained while it migrates, the warm-up's blocks on a
// destination; negative when there is nothing to measure.
std::pair<double, std::string> MigrationFraction(const json& m) {
  const std::string phase = m.value("phase", "");
  uint64_t part = 0, whole = 0;
  for (const auto& d : m.value("disks", json::array())) {
    if (!d.value("reported", false)) continue;
    if (phase == "warming-up") {
      part += d["warm_up"].value("done", uint64_t{0});
      whole += d["warm_up"].value("blocks", uint64_t{0});
    } else {
      const uint64_t drained = d.value("drained_bytes", uint64_t{0});
      part += drained;
      whole += drained + d.value("dirty_bytes", uint64_t{0});
    }
  }
  if (phase == "none" || phase == "incoming" || whole == 0) return {-1, ""};
  return {static_cast<double>(part) / static_cast<double>(whole),
          phase == "warming-up" ? "blocks warmed" : "dirty data written back"};
}

// "[#########.................]  33% dirty data written back".
std::string ProgressBar(double fraction, const std::string& what, int width = 30) {
  const int full = static_cast<int>(fraction * width + 0.5);
  return "[" + std::string(full, '#') + std::string(width - full, '.') + "] " +
         std::to_string(static_cast<int>(fraction * 100 + 0.5)) + "% " + what;
}

// One line: "web: switch-over for 2.5 s" with the bar when there is one.
std::string MigrationLine(const json& m) {
  std::string line = Str(m, "vm") + ": " + Str(m, "phase");
  if (m.value("phase", "") != "none") {
    line += " for " + hc::HumanSeconds(m.value("seconds", 0.0));
  }
  auto [fraction, what] = MigrationFraction(m);
  if (fraction >= 0) line += "  " + ProgressBar(fraction, what);
  return line;
}

// The disks' figures, a line each.
void PrintMigrationDisks(const json& m) {
  for (const auto& d : m.value("disks", json::array())) {
    if (!d.value("reported", false)) {
      std::cout << "  " << Str(d, "target") << ": no statistics from QEMU\n";
      continue;
    }
    const json& w = d["warm_up"];
    std::cout << "  " << Str(d, "target") << ": "
              << hc::HumanSize(d.value("dirty_bytes", uint64_t{0})) << " dirty, "
              << hc::HumanSize(d.value("drained_bytes", uint64_t{0})) << " drained; warm-up "
              << Str(w, "state") << " (" << w.value("done", uint64_t{0}) << "/"
              << w.value("blocks", uint64_t{0}) << " blocks, "
              << hc::HumanSize(w.value("bytes_received", uint64_t{0})) << " received)\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opts;
  if (const char* e = std::getenv("HOSTCACHE_URL")) opts.url = e;
  if (const char* e = std::getenv("HOSTCACHE_TOKEN_FILE")) opts.token_file = e;
  CLI::App app{"hostcachectl: manage hostcache storage policies through hostcached"};
  app.require_subcommand(1);
  app.add_option("--url", opts.url, "hostcached's address ($HOSTCACHE_URL)")
      ->capture_default_str();
  app.add_option("--token-file", opts.token_file, "bearer token file ($HOSTCACHE_TOKEN_FILE)")
      ->capture_default_str();
  app.add_flag("--json", opts.json, "print the API's JSON");
  Client client(opts);
  std::function<void()> action;

  auto* policy = app.add_subcommand("policy", "storage policies")->require_subcommand(1);
  policy->add_subcommand("list", "list policies")->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get, "/policies");
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      std::vector<std::vector<std::string>> rows = {
          {"NAME", "MODE", "RAM", "BLOCK", "DISKS", "DESCRIPTION"}};
      for (const auto& p : j["policies"]) {
        std::string d = Str(p, "description", "");
        if (d.size() > 60) d = d.substr(0, 57) + "...";
        rows.push_back({Str(p, "name"), Str(p["rules"], "mode"), Size(p["rules"]["ram-size"]),
                        Size(p["rules"]["block-size"]), Str(p, "assigned_disks"), d});
      }
      PrintTable(rows);
    };
  });
  std::string pname, pdesc, pfile;
  std::vector<std::string> prules;
  auto* pshow = policy->add_subcommand("show", "show a policy and the disks using it");
  pshow->add_option("name", pname, "policy name")->required();
  pshow->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get, "/policies/" + Seg(pname));
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      PrintPolicy(j);
    };
  });
  auto* pcreate = policy->add_subcommand("create", "create a policy");
  pcreate->add_option("name", pname, "policy name")->required();
  pcreate->add_option("--description,-d", pdesc, "what the policy is for");
  pcreate->add_option("--rule,-r", prules, "a rule as KEY=VALUE (mode=write-through, ram-size=1G)");
  pcreate->add_option("--from-file,-f", pfile, "read the policy's JSON from FILE");
  pcreate->callback([&] {
    action = [&] {
      json body;
      if (!pfile.empty()) {
        auto text = hc::ReadFile(pfile);
        if (!text) Client::Die(2, text.error().message);
        body = json::parse(*text, nullptr, false);
        if (!body.is_object()) Client::Die(2, pfile + " does not hold a JSON object");
      }
      body["name"] = pname;
      if (!pdesc.empty()) body["description"] = pdesc;
      if (!prules.empty()) body["rules"] = ParseRules(prules);
      json j = client.Expect(bhttp::verb::post, "/policies", body.dump());
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      std::cout << "created policy " << pname << "\n";
      PrintPolicy(j);
    };
  });
  auto* pupdate = policy->add_subcommand(
      "update", "change a policy's rules or description; re-applied to its disks");
  pupdate->add_option("name", pname, "policy name")->required();
  pupdate->add_option("--description,-d", pdesc, "new description");
  pupdate->add_option("--rule,-r", prules, "a rule as KEY=VALUE; others keep their value");
  pupdate->callback([&] {
    action = [&] {
      json body = json::object();
      if (!pdesc.empty()) body["description"] = pdesc;
      if (!prules.empty()) body["rules"] = ParseRules(prules);
      json j = client.Expect(bhttp::verb::put, "/policies/" + Seg(pname), body.dump());
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      PrintPolicy(j);
    };
  });
  auto* pdelete = policy->add_subcommand("delete", "delete a policy no disk uses");
  pdelete->add_option("name", pname, "policy name")->required();
  pdelete->callback([&] {
    action = [&] {
      client.Expect(bhttp::verb::delete_, "/policies/" + Seg(pname));
      if (!opts.json) std::cout << "deleted policy " << pname << "\n";
    };
  });

  std::string vm, target, pol;
  auto* disk = app.add_subcommand("disk", "policies of VM disks")->require_subcommand(1);
  auto* assign = disk->add_subcommand("assign", "assign a policy to a disk (live and persistent)");
  assign->add_option("vm", vm, "VM name or UUID")->required();
  assign->add_option("target", target, "disk target (vda)")->required();
  assign->add_option("policy", pol, "policy name")->required();
  assign->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::put, "/vms/" + Seg(vm) + "/disks/" + Seg(target) +
                                                   "/policy",
                             json{{"policy", pol}}.dump());
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      PrintAssignment(j);
    };
  });
  auto* unassign = disk->add_subcommand("unassign", "remove a disk's policy (written back first)");
  unassign->add_option("vm", vm, "VM name or UUID")->required();
  unassign->add_option("target", target, "disk target (vda)")->required();
  unassign->callback([&] {
    action = [&] {
      client.Expect(bhttp::verb::delete_,
                    "/vms/" + Seg(vm) + "/disks/" + Seg(target) + "/policy");
      if (!opts.json) std::cout << "unassigned " << vm << "/" << target << "\n";
    };
  });
  auto* forget = disk->add_subcommand(
      "forget-tier",
      "give up a disk's lost or stale SSD tier (its write-back data is lost); a new tier is "
      "made");
  forget->add_option("vm", vm, "VM name or UUID")->required();
  forget->add_option("target", target, "disk target (vda)")->required();
  forget->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::post, "/vms/" + Seg(vm) + "/disks/" + Seg(target) +
                                                    "/ssd-tier/forget",
                             "{}");
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      std::cout << "forgot the SSD tier of " << vm << "/" << target << "\n";
      PrintAssignment(j);
    };
  });
  auto* status = disk->add_subcommand("status", "policy and compliance of a VM's disks");
  status->add_option("vm", vm, "VM name or UUID")->required();
  status->add_option("target", target, "disk target (all disks when absent)");
  status->callback([&] {
    action = [&] {
      if (!target.empty()) {
        json j = client.Expect(bhttp::verb::get,
                               "/vms/" + Seg(vm) + "/disks/" + Seg(target) + "/policy");
        if (opts.json) return void(std::cout << j.dump(2) << "\n");
        return PrintAssignment(j);
      }
      json j = client.Expect(bhttp::verb::get, "/vms/" + Seg(vm));
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      std::vector<std::vector<std::string>> rows = {
          {"TARGET", "SOURCE", "POLICY", "COMPLIANCE", "REASON"}};
      for (const auto& d : j["disks"]) {
        rows.push_back({Str(d, "target"), Str(d, "source"), Str(d, "policy"),
                        d.contains("compliance") ? Str(d["compliance"], "state") : "-",
                        d.contains("compliance") ? Str(d["compliance"], "reason") : ""});
      }
      std::cout << Str(j, "name") << " (" << Str(j, "state") << ")\n";
      PrintTable(rows);
    };
  });
  auto* dstats = disk->add_subcommand("stats", "cache counters of a disk");
  dstats->add_option("vm", vm, "VM name or UUID")->required();
  dstats->add_option("target", target, "disk target (vda)")->required();
  dstats->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get,
                             "/vms/" + Seg(vm) + "/disks/" + Seg(target) + "/stats?points=10");
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      if (j["current"].is_null()) {
        std::cout << "no samples yet (the VM may be shut off)\n";
        return;
      }
      std::cout << Str(j, "vm") << "/" << Str(j, "target") << " (policy " << Str(j, "policy")
                << ") at " << Str(j["current"], "time") << "\n";
      std::printf("  hit ratio  %.1f%%\n", j["current"]["hit_ratio"].get<double>() * 100.0);
      for (auto it = j["current"]["counters"].begin(); it != j["current"]["counters"].end();
           ++it) {
        std::cout << "  " << it.key() << " " << it.value().dump() << "\n";
      }
    };
  });

  auto* vmcmd = app.add_subcommand("vm", "VMs")->require_subcommand(1);
  vmcmd->add_subcommand("list", "VMs and their assigned disks")->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get, "/vms");
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      std::vector<std::vector<std::string>> rows = {{"NAME", "STATE", "UUID", "CACHED DISKS"}};
      for (const auto& v : j["vms"]) {
        std::string disks;
        for (const auto& d : v["disks"]) {
          disks += (disks.empty() ? "" : ", ") + Str(d, "target") + ":" + Str(d, "policy") + " (" +
                   Str(d["compliance"], "state") + ")";
        }
        rows.push_back({Str(v, "name"), Str(v, "state"), Str(v, "uuid"), disks.empty() ? "-" : disks});
      }
      PrintTable(rows);
    };
  });
  auto* vshow = vmcmd->add_subcommand("show", "a VM's disks");
  vshow->add_option("vm", vm, "VM name or UUID")->required();
  vshow->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get, "/vms/" + Seg(vm));
      std::cout << j.dump(2) << "\n";
    };
  });

  auto* vmig = vmcmd->add_subcommand(
      "migration-xml", "the XML to live-migrate a running VM with its filters (virsh migrate --xml)");
  vmig->add_option("vm", vm, "VM name or UUID")->required();
  vmig->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get, "/vms/" + Seg(vm) + "/migration-xml");
      std::cout << (j.is_string() ? j.get<std::string>() : j.dump(2));
    };
  });

  auto* vprog = vmcmd->add_subcommand(
      "migration", "where a VM's live migration is (on a terminal: a progress bar until it ends)");
  vprog->add_option("vm", vm, "VM name or UUID")->required();
  vprog->callback([&] {
    action = [&] {
      const std::string path = "/vms/" + Seg(vm) + "/migration";
      json m = client.Expect(bhttp::verb::get, path);
      if (opts.json) return void(std::cout << m.dump(2) << "\n");
      if (isatty(STDOUT_FILENO)) {
        // Redrawn once a second on one line until the migration ends.
        while (m.value("phase", "none") != "none") {
          std::cout << "\r\033[K" << MigrationLine(m) << std::flush;
          std::this_thread::sleep_for(std::chrono::seconds(1));
          m = client.Expect(bhttp::verb::get, path);
        }
        std::cout << "\r\033[K";
      }
      std::cout << MigrationLine(m) << "\n";
      PrintMigrationDisks(m);
    };
  });

  std::string dest, migrate_uri;
  bool unsafe = false, undefine_source = false, transient = false;
  double drain_timeout = -1;
  auto* vmigrate = vmcmd->add_subcommand(
      "migrate", "live-migrate a running VM to another libvirtd, its cached disks' filters along");
  vmigrate->add_option("vm", vm, "VM name or UUID")->required();
  vmigrate->add_option("peer", dest,
                       "the destination: a peer configured in hostcached's config file "
                       "(peer = NAME=qemu+tls://HOST/system), by name")
      ->required();
  vmigrate->add_option("--migrate-uri", migrate_uri,
                       "where QEMU streams to: tcp://HOST[:PORT] of the peer's migration host "
                       "(default: the peer's peer-migrate-uri, else the destination's choice)");
  vmigrate->add_flag("--unsafe", unsafe, "even when libvirt cannot tell the storage is shared");
  vmigrate->add_flag("--undefine-source", undefine_source, "remove the definition here");
  vmigrate->add_flag("--transient", transient, "do not define it on the destination");
  vmigrate->add_option("--drain-timeout", drain_timeout,
                       "seconds to write back dirty write-back data first (0: none; default: "
                       "the daemon's)")
      ->check(CLI::Range(0.0, 3600.0));
  vmigrate->callback([&] {
    action = [&] {
      json body{{"destination", dest}, {"unsafe", unsafe}, {"undefine_source", undefine_source},
                {"persistent", !transient}};
      if (!migrate_uri.empty()) body["migrate_uri"] = migrate_uri;
      if (drain_timeout >= 0) body["drain_timeout_s"] = drain_timeout;
      json j = client.Expect(bhttp::verb::post, "/vms/" + Seg(vm) + "/migrate", body.dump());
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      std::cout << vm << " migrated to " << Str(j, "destination") << " in "
                << (j.contains("seconds") ? j["seconds"].dump() : "?") << " s\n";
    };
  });

  int limit = 20;
  auto* events = app.add_subcommand("events", "what hostcached did and why (newest first)");
  events->add_option("--limit,-n", limit, "how many")->check(CLI::Range(1, 1000));
  events->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get, "/events?limit=" + std::to_string(limit));
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      for (const auto& e : j["events"]) {
        std::string where = Str(e, "vm", "");
        if (!Str(e, "target", "").empty()) where += "/" + Str(e, "target");
        std::cout << Str(e, "time") << " " << Str(e, "level") << " "
                  << (where.empty() ? "" : where + " ") << "[" << Str(e, "action") << "] "
                  << Str(e, "message") << "\n";
      }
    };
  });
  app.add_subcommand("health", "is the daemon up, and connected to libvirtd")->callback([&] {
    action = [&] {
      HttpResult r = client.Call(bhttp::verb::get, "/health", "", /*auth=*/false);
      json j = json::parse(r.body, nullptr, false);
      if (opts.json || !j.is_object()) {
        std::cout << r.body;
      } else {
        std::cout << "status " << Str(j, "status") << ", libvirt " << Str(j, "libvirt")
                  << ", version " << Str(j, "version") << "\n";
      }
      if (r.status != 200) std::exit(1);
    };
  });

  auto* peer = app.add_subcommand("peer", "migration peers")->require_subcommand(1);
  peer->add_subcommand("list", "configured peers and whether each can be reached")->callback([&] {
    action = [&] {
      json j = client.Expect(bhttp::verb::get, "/peers");
      if (opts.json) return void(std::cout << j.dump(2) << "\n");
      std::vector<std::vector<std::string>> rows = {{"NAME", "URI", "REACHABLE", "CHECKED",
                                                     "LAST ERROR"}};
      for (const auto& p : j["peers"]) {
        const json& r = p["reachable"];
        rows.push_back({Str(p, "name"), Str(p, "uri"),
                        r.is_boolean() ? (r.get<bool>() ? "yes" : "no") : "not yet probed",
                        Str(p, "checked"), Str(p, "last_error", "")});
      }
      PrintTable(rows);
    };
  });

  std::vector<std::string> hook_args;
  auto* hook = app.add_subcommand(
      "libvirt-hook",
      "libvirt's qemu hook (/etc/libvirt/hooks/qemu.d/hostcache runs it): on 'migrate begin' "
      "the domain XML on stdin goes to hostcached, which prepares this host, and the XML to "
      "start from is printed");
  hook->add_option("args", hook_args, "DOMAIN OPERATION SUB-OPERATION EXTRA, as libvirt passes")
      ->required();
  hook->callback([&] { action = [&] { std::exit(LibvirtHook(client, hook_args)); }; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (action) action();
  return 0;
}
