// The Beast server on a real socket, and the hostcached binary as a process
// (against libvirt's built-in test driver, test:///default, which needs no
// libvirtd).
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include "common/subprocess.h"
#include "common/util.h"
#include "fakes.h"
#include "manager/http/server.h"
#include "manager/store/sqlite_store.h"

extern char** environ;

namespace hc::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using nlohmann::json;

struct Reply {
  int status = 0;
  std::string body;
  std::string content_type;
};

// One request per call on `sock` (keep-alive when the caller reuses it).
Reply Send(asio::ip::tcp::socket& sock, bhttp::verb verb, const std::string& target,
           const std::string& token = "", const std::string& body = "") {
  bhttp::request<bhttp::string_body> req{verb, target, 11};
  req.set(bhttp::field::host, "localhost");
  if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
  req.body() = body;
  req.prepare_payload();
  bhttp::write(sock, req);
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(sock, buf, res);
  return Reply{static_cast<int>(res.result_int()), res.body(),
               std::string(res[bhttp::field::content_type])};
}

Reply Request1(uint16_t port, bhttp::verb verb, const std::string& target,
               const std::string& token = "", const std::string& body = "") {
  asio::io_context ioc;
  asio::ip::tcp::socket sock(ioc);
  sock.connect({asio::ip::make_address("127.0.0.1"), port});
  return Send(sock, verb, target, token, body);
}

TEST(Server, ListenParsing) {
  EXPECT_EQ(*ParseListen("127.0.0.1:8470"), std::make_pair(std::string("127.0.0.1"), uint16_t{8470}));
  EXPECT_EQ(ParseListen("[::1]:80")->first, "::1");
  for (const char* bad : {"", "8470", "host:", "h:99999", "h:8x"}) {
    EXPECT_FALSE(ParseListen(bad)) << bad;
  }
}

TEST(Server, ServesKeepAliveEnforcesBodyLimitAndStopsGracefully) {
  testing::FakeClock clock;
  testing::FakeLibvirt lv;
  testing::FakeQemuTools tools;
  auto store = std::move(*store::SqliteStore::Open(":memory:", clock.now_ms));
  core::Manager mgr(*store, lv, tools, clock, core::ManagerConfig{});
  Api api(mgr, *store, nullptr, "0123456789abcdef0123", "test");
  asio::io_context ioc;
  asio::thread_pool workers(2);
  ServerOptions opts;
  opts.body_limit = 4096;
  HttpServer server(ioc, workers, api, opts);
  ASSERT_TRUE(server.Listen("127.0.0.1:0"));
  uint16_t port = server.Endpoint().port();
  ASSERT_NE(port, 0);
  std::thread io([&] { ioc.run(); });

  asio::io_context cioc;
  asio::ip::tcp::socket sock(cioc);
  sock.connect({asio::ip::make_address("127.0.0.1"), port});
  auto h = Send(sock, bhttp::verb::get, "/api/v1/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.content_type, "application/json");
  auto p = Send(sock, bhttp::verb::get, "/api/v1/policies", "0123456789abcdef0123");
  EXPECT_EQ(p.status, 200);
  EXPECT_EQ(json::parse(p.body)["policies"].size(), 3u);
  auto unauth = Send(sock, bhttp::verb::get, "/api/v1/policies");
  EXPECT_EQ(unauth.status, 401);
  EXPECT_EQ(unauth.content_type, "application/problem+json");

  auto big = Request1(port, bhttp::verb::post, "/api/v1/policies", "0123456789abcdef0123",
                      std::string(10000, 'x'));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(store->ListPolicies()->size(), 3u);

  // Garbage instead of HTTP gets a 400, not a crash.
  {
    asio::ip::tcp::socket raw(cioc);
    raw.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(raw, asio::buffer(std::string("\x16\x03\x01 hello\r\n\r\n")));
    beast::flat_buffer buf;
    bhttp::response<bhttp::string_body> res;
    beast::error_code ec;
    bhttp::read(raw, buf, res, ec);
    EXPECT_EQ(res.result_int(), 400u);
  }

  bool drained = false;
  server.Stop([&] { drained = true; });
  io.join();  // returns once the idle keep-alive connection is closed too
  EXPECT_TRUE(drained);
  workers.join();
}

// ---- the daemon binary ------------------------------------------------------

#ifndef HOSTCACHED_BIN
#error HOSTCACHED_BIN must name the hostcached binary
#endif

class Daemon {
 public:
  Daemon(const std::string& dir, const std::vector<std::string>& extra = {}) : dir_(dir) {
    std::vector<std::string> args = {HOSTCACHED_BIN, "--listen", "127.0.0.1:0",
                                     "--db", dir + "/state.db", "--token-file",
                                     dir + "/token", "--libvirt-uri", "test:///default",
                                     "--qemu-img", "/bin/true", "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    static int seq = 0;
    log_ = dir + "/daemon." + std::to_string(++seq) + ".log";
    posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    EXPECT_EQ(posix_spawn(&pid_, args[0].c_str(), &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    // The port from the log line "REST API on http://127.0.0.1:PORT/...".
    std::regex re("REST API on http://127\\.0\\.0\\.1:([0-9]+)/");
    for (int i = 0; i < 200 && port_ == 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {  // exited (a usage error)
        pid_ = -1;
        exit_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        break;
      }
      std::smatch m;
      std::string text = Log();
      if (std::regex_search(text, m, re)) port_ = static_cast<uint16_t>(std::stoi(m[1]));
    }
  }
  ~Daemon() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // SIGTERM; returns the exit status (-1 when it had to be killed).
  int Terminate() {
    if (pid_ < 0) return exit_;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 200; i++) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  std::string Log() { return ReadFile(log_).value_or(""); }
  uint16_t port() const { return port_; }

 private:
  std::string dir_, log_;
  pid_t pid_ = -1;
  int exit_ = -1;
  uint16_t port_ = 0;
};

class DaemonTest : public ::testing::Test {
 protected:
  const testing::ScratchDir scratch_{"hc-daemon-test."};
  const std::string dir_ = scratch_.path();
};

TEST_F(DaemonTest, CreatesA0600TokenServesAndStopsCleanlyOnSigterm) {
  Daemon d(dir_);
  ASSERT_NE(d.port(), 0) << d.Log();
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string token(Trim(*ReadFile(dir_ + "/token")));
  EXPECT_EQ(token.size(), 64u);
  auto h = Request1(d.port(), bhttp::verb::get, "/api/v1/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(json::parse(h.body)["libvirt"], "connected");
  auto vms = Request1(d.port(), bhttp::verb::get, "/api/v1/vms", token);
  ASSERT_EQ(vms.status, 200) << vms.body;
  EXPECT_EQ(json::parse(vms.body)["vms"][0]["name"], "test");
  auto c = Request1(d.port(), bhttp::verb::post, "/api/v1/policies", token,
                    R"({"name":"kept","rules":{"ram-size":"64M"}})");
  EXPECT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(d.Terminate(), 0) << d.Log();
  EXPECT_NE(d.Log().find("stopped"), std::string::npos);

  // Restarted: same token, same state.
  Daemon again(dir_);
  ASSERT_NE(again.port(), 0) << again.Log();
  EXPECT_EQ(std::string(Trim(*ReadFile(dir_ + "/token"))), token);
  auto g = Request1(again.port(), bhttp::verb::get, "/api/v1/policies/kept", token);
  ASSERT_EQ(g.status, 200);
  EXPECT_EQ(json::parse(g.body)["rules"]["ram-size"], 64 << 20);
  EXPECT_EQ(again.Terminate(), 0);
}

#ifndef HOSTCACHECTL_BIN
#error HOSTCACHECTL_BIN must name the hostcachectl binary
#endif

TEST_F(DaemonTest, HostcachectlDrivesTheApi) {
  Daemon d(dir_);
  ASSERT_NE(d.port(), 0) << d.Log();
  const std::string url = "http://127.0.0.1:" + std::to_string(d.port());
  auto ctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {HOSTCACHECTL_BIN, "--url", url, "--token-file",
                                     dir_ + "/token"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunProcess(argv, 60000);
    EXPECT_TRUE(r);
    return r ? *r : ProcessResult{};
  };
  auto list = ctl({"policy", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("balanced"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("write-through"), std::string::npos) << list.out;
  auto create = ctl({"policy", "create", "fast", "-d", "for tests", "-r", "mode=write-around",
                     "-r", "ram-size=128M", "-r", "admit-after=2"});
  EXPECT_EQ(create.exit_code, 0) << create.err;
  auto show = ctl({"--json", "policy", "show", "fast"});
  EXPECT_EQ(show.exit_code, 0);
  auto j = json::parse(show.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << show.out;
  EXPECT_EQ(j["rules"]["ram-size"], 128 << 20);
  EXPECT_EQ(j["rules"]["admit-after"], 2);
  auto dup = ctl({"policy", "create", "fast"});
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("already exists"), std::string::npos) << dup.err;
  auto bad = ctl({"policy", "create", "odd", "-r", "block-size=1000"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("block-size must be a power of two"), std::string::npos) << bad.err;
  auto vms = ctl({"vm", "list"});
  EXPECT_EQ(vms.exit_code, 0);
  EXPECT_NE(vms.out.find("test"), std::string::npos) << vms.out;
  auto status = ctl({"disk", "status", "test"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("vda"), std::string::npos) << status.out;
  // (The route is reached: the daemon's refusal is printed.)
  auto forget = ctl({"disk", "forget-tier", "test", "vda"});
  EXPECT_EQ(forget.exit_code, 1);
  EXPECT_NE(forget.err.find("error 404: disk vda of VM 'test' has no policy assigned"),
            std::string::npos)
      << forget.err;
  EXPECT_EQ(ctl({"policy", "delete", "fast"}).exit_code, 0);
  EXPECT_EQ(ctl({"policy", "show", "fast"}).exit_code, 1);
  EXPECT_EQ(ctl({"health"}).exit_code, 0);
  EXPECT_EQ(ctl({"policy", "frobnicate"}).exit_code, 2);
  EXPECT_EQ(d.Terminate(), 0);
  auto down = ctl({"policy", "list"});
  EXPECT_EQ(down.exit_code, 3);
  EXPECT_NE(down.err.find("cannot reach hostcached"), std::string::npos) << down.err;
}

TEST_F(DaemonTest, MigrationPeersAndSsdRootsComeFromTheConfig) {
  {
    std::ofstream cfg(dir_ + "/peers.conf");
    cfg << "peer = hostb=qemu+tls://hostb.example.com/system\n"
           "peer = hostc=qemu+ssh://root@hostc/system?keyfile=/root/.ssh/id_migrate&no_tty=1\n"
           "peer-migrate-uri = hostc=tcp://10.0.0.3\n"
           "ssd-root = /srv/ssd-a\nssd-root = /srv/ssd-b\n";
  }
  Daemon d(dir_, {"--config", dir_ + "/peers.conf"});
  ASSERT_NE(d.port(), 0) << d.Log();
  EXPECT_NE(d.Log().find("migration peer 'hostb': qemu+tls://hostb.example.com/system"),
            std::string::npos)
      << d.Log();
  EXPECT_NE(d.Log().find("migration peer 'hostc': qemu+ssh://root@hostc/system?keyfile=/root/"
                         ".ssh/id_migrate&no_tty=1, streams to tcp://10.0.0.3"),
            std::string::npos)
      << d.Log();
  EXPECT_NE(d.Log().find("must lie under them): /srv/ssd-a, /srv/ssd-b"), std::string::npos)
      << d.Log();
  EXPECT_EQ(d.Terminate(), 0);
  Daemon flags(dir_, {"--peer", "a=qemu+unix:///system", "--peer", "b=qemu+tls://b/system"});
  ASSERT_NE(flags.port(), 0) << flags.Log();
  EXPECT_NE(flags.Log().find("migration peer 'a'"), std::string::npos) << flags.Log();
  EXPECT_NE(flags.Log().find("migration peer 'b'"), std::string::npos) << flags.Log();
  EXPECT_NE(flags.Log().find("must lie under them): /var/lib/hostcache/ssd"), std::string::npos)
      << flags.Log();
  EXPECT_EQ(flags.Terminate(), 0);
  // A peer whose URI would have libvirt run a program: the daemon does not
  // start, and says why.
  {
    std::ofstream cfg(dir_ + "/bad.conf");
    cfg << "peer = x=qemu+ext:///system?command=/dev/shm/x\n";
  }
  Daemon bad(dir_, {"--config", dir_ + "/bad.conf"});
  EXPECT_EQ(bad.port(), 0);
  EXPECT_EQ(bad.Terminate(), 2);
  EXPECT_NE(bad.Log().find("peer 'x': libvirt URI 'qemu+ext:///system?command=/dev/shm/x' is "
                           "not accepted: transport 'qemu+ext'"),
            std::string::npos)
      << bad.Log();
  Daemon bad_root(dir_, {"--ssd-root", "relative/dir"});
  EXPECT_EQ(bad_root.Terminate(), 2);
  EXPECT_NE(bad_root.Log().find("ssd-root 'relative/dir'"), std::string::npos) << bad_root.Log();
}

TEST_F(DaemonTest, ConfigFileAndBadFlags) {
  {
    std::ofstream cfg(dir_ + "/hostcached.conf");
    cfg << "# test config\nram-budget = 1G\nstats-interval = 5\nlog-level = debug\n";
  }
  Daemon d(dir_, {"--config", dir_ + "/hostcached.conf"});
  ASSERT_NE(d.port(), 0) << d.Log();
  EXPECT_NE(d.Log().find("RAM budget 1 GiB"), std::string::npos) << d.Log();
  EXPECT_EQ(d.Terminate(), 0);
  Daemon bad(dir_, {"--ram-budget", "lots"});
  EXPECT_EQ(bad.port(), 0);
  EXPECT_EQ(bad.Terminate(), 2);
  EXPECT_NE(bad.Log().find("lots"), std::string::npos) << bad.Log();
}

}  // namespace
}  // namespace hc::http
