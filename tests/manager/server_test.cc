// The Beast server on a real socket, and the hostcached binary as a process
// (against libvirt's built-in test driver, test:///default, which needs no
// libvirtd).
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "common/subprocess.h"
#include "common/util.h"
#include "fakes.h"
#include "manager/http/server.h"
#include "manager/store/sqlite_store.h"
#include "web_vm_fixture.h"

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

// ---- clients without the token cannot wear the server down -----------------

// A client socket whose reads give up after 10 s (only a server that does
// not do what the test expects makes one wait that long).
struct Client {
  explicit Client(uint16_t port) : sock(ioc) {
    sock.connect({asio::ip::make_address("127.0.0.1"), port});
  }
  void Write(const std::string& text) { asio::write(sock, asio::buffer(text)); }
  // The response's status; 0 when the connection ended (or the read gave up) first.
  int Status() {
    beast::flat_buffer buf;
    bhttp::response<bhttp::string_body> res;
    beast::error_code ec = asio::error::timed_out;
    bhttp::async_read(sock, buf, res, [&](beast::error_code e, size_t) { ec = e; });
    Run();
    body = res.body();
    return ec ? 0 : static_cast<int>(res.result_int());
  }
  // Whether the server has closed the connection (a read ends without data).
  bool Closed() {
    char c;
    size_t n = 0;
    beast::error_code ec = asio::error::timed_out;
    sock.async_read_some(asio::buffer(&c, 1), [&](beast::error_code e, size_t got) {
      ec = e;
      n = got;
    });
    Run();
    return n == 0 && (ec == asio::error::eof || ec == asio::error::connection_reset);
  }
  // Runs the pending read for 10 s at most.
  void Run() {
    ioc.restart();
    if (ioc.run_for(std::chrono::seconds(10)) == 0 || !ioc.stopped()) {
      sock.cancel();
      ioc.run();
    }
  }
  asio::io_context ioc;
  asio::ip::tcp::socket sock;
  std::string body;
};

std::string Get(const std::string& target, const std::string& token = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\n" +
         (token.empty() ? "" : "Authorization: Bearer " + token + "\r\n") + "\r\n";
}

// A server on a loopback port with the fake libvirt's VM "web", whose
// lookups block while `hold` is set (a libvirtd or QEMU that is slow to
// answer), and the server's log lines.
class ServerLimitsTest : public testing::WebVmTest {
 protected:
  static constexpr const char* kToken = "0123456789abcdef0123";
  void SetUp() override {
    WebVmTest::SetUp();
    lv_.on_lookup = [this](const std::string&) {
      std::unique_lock lock(hold_mu_);
      blocked_++;
      hold_cv_.notify_all();
      hold_cv_.wait(lock, [&] { return !hold_; });
      blocked_--;
    };
    api_ = std::make_unique<Api>(*mgr_, *store_, nullptr, kToken, "test");
    sink_ = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink_));
  }
  void TearDown() override {
    Release();
    if (server_) {
      server_->Stop();
      if (io_.joinable()) io_.join();
    }
    workers_.join();
    spdlog::set_default_logger(previous_);
  }
  uint16_t Start(ServerOptions opts) {
    server_ = std::make_unique<HttpServer>(ioc_, workers_, *api_, opts);
    EXPECT_TRUE(server_->Listen("127.0.0.1:0"));
    io_ = std::thread([this] { ioc_.run(); });
    return server_->Endpoint().port();
  }
  void Hold() {
    std::lock_guard lock(hold_mu_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard lock(hold_mu_);
    hold_ = false;
    hold_cv_.notify_all();
  }
  // Two requests on connections of their own whose handlers wait for
  // libvirt until Release().
  std::vector<std::unique_ptr<Client>> TwoHeldRequests(uint16_t port) {
    Hold();
    std::vector<std::unique_ptr<Client>> held;
    for (int i = 0; i < 2; i++) {
      held.push_back(std::make_unique<Client>(port));
      held.back()->Write(Get("/api/v1/vms/web", kToken));
    }
    std::unique_lock lock(hold_mu_);
    hold_cv_.wait(lock, [&] { return blocked_ >= 2; });
    return held;
  }
  std::string Log() {
    spdlog::default_logger()->flush();
    return log_.str();
  }
  size_t LogCount(const std::string& what) {
    std::string text = Log();
    size_t n = 0;
    for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) n++;
    return n;
  }

  std::unique_ptr<Api> api_;
  asio::io_context ioc_;
  asio::thread_pool workers_{2};
  std::unique_ptr<HttpServer> server_;
  std::thread io_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
  std::mutex hold_mu_;
  std::condition_variable hold_cv_;
  bool hold_ = false;
  int blocked_ = 0;
};

TEST_F(ServerLimitsTest, ARequestWithoutTheTokenIsAnsweredBeforeItsBodyIsRead) {
  ServerOptions opts;
  opts.body_limit = 4096;
  const uint16_t port = Start(opts);
  // Headers announcing a body that never comes: the answer comes at once.
  Client c(port);
  c.Write("POST /api/v1/policies HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
  EXPECT_EQ(c.Status(), 401) << c.body;
  EXPECT_TRUE(c.Closed()) << "the unread body ends the connection";
  // Over the body limit: still 401 without the token, 413 with it, unread.
  Client big(port);
  big.Write("POST /api/v1/policies HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n");
  EXPECT_EQ(big.Status(), 401);
  Client authed(port);
  authed.Write("POST /api/v1/policies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               std::string(kToken) + "\r\nContent-Length: 999999999\r\n\r\n");
  EXPECT_EQ(authed.Status(), 413);
  // No such route: 404, no body read either.
  Client nowhere(port);
  nowhere.Write("PUT /api/v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
  EXPECT_EQ(nowhere.Status(), 404);
  // A request with the token and a body works as before (keep-alive too).
  Client ok(port);
  const std::string body = R"({"name":"db","rules":{"ram-size":"64M"}})";
  ok.Write("POST /api/v1/policies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
           std::string(kToken) + "\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body);
  EXPECT_EQ(ok.Status(), 201) << ok.body;
  ok.Write(Get("/api/v1/policies/db", kToken));
  EXPECT_EQ(ok.Status(), 200);
}

TEST_F(ServerLimitsTest, AtTheConnectionLimitTheConnectionWaitingLongestMakesRoom) {
  ServerOptions opts;
  opts.max_connections = 3;
  const uint16_t port = Start(opts);
  // Three slow clients: connected, half a request line each.
  std::vector<std::unique_ptr<Client>> slow;
  for (int i = 0; i < 3; i++) {
    slow.push_back(std::make_unique<Client>(port));
    slow.back()->Write("GET /api/v1/hea");
  }
  // Once the server has them all (a request on a fourth shows it), the
  // next one in closes the oldest.
  Client c(port);
  c.Write(Get("/api/v1/health"));
  EXPECT_EQ(c.Status(), 200) << c.body;
  EXPECT_TRUE(slow[0]->Closed());
  Client d(port);
  d.Write(Get("/api/v1/health"));
  EXPECT_EQ(d.Status(), 200) << d.body;
  EXPECT_TRUE(slow[1]->Closed());
  EXPECT_EQ(LogCount("the limit (max-connections)"), 1u) << Log();
}

TEST_F(ServerLimitsTest, WhenEveryConnectionHasARequestInProgressNewOnesAreRefused) {
  ServerOptions opts;
  opts.max_connections = 2;
  opts.request_timeout = std::chrono::milliseconds(0);
  const uint16_t port = Start(opts);
  auto held = TwoHeldRequests(port);
  Client& a = *held[0];
  Client& b = *held[1];
  for (int i = 0; i < 3; i++) {
    Client refused(port);
    EXPECT_TRUE(refused.Closed());
  }
  EXPECT_EQ(LogCount("the limit (max-connections)"), 1u) << Log();
  Release();
  EXPECT_EQ(a.Status(), 200);
  EXPECT_EQ(b.Status(), 200);
  a.sock.close();
  b.sock.close();
  // Room again once the server has seen them go.
  for (int i = 0; i < 200 && Log().find("below the connection limit again") == std::string::npos;
       i++) {
    Client again(port);
    again.Write(Get("/api/v1/health"));
    EXPECT_EQ(again.Status(), 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(Log().find("below the connection limit again"), std::string::npos) << Log();
}

TEST_F(ServerLimitsTest, HealthAnswersWhileEveryWorkerIsBusyAndSlowRequestsGetA503) {
  ServerOptions opts;
  opts.request_timeout = std::chrono::milliseconds(300);
  opts.max_requests = 2;
  const uint16_t port = Start(opts);
  // Both workers wait for libvirt.
  auto held = TwoHeldRequests(port);
  Client& a = *held[0];
  Client& b = *held[1];
  auto health = std::async(std::launch::async, [port] {
    Client c(port);
    c.Write(Get("/api/v1/health"));
    return c.Status();
  });
  ASSERT_EQ(health.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "/health waits for a worker";
  EXPECT_EQ(health.get(), 200);
  // At the deadline the slow requests are answered (their handlers go on).
  EXPECT_EQ(a.Status(), 503);
  EXPECT_NE(a.body.find("event log"), std::string::npos) << a.body;
  EXPECT_EQ(b.Status(), 503);
  // Both still hold a worker: a third request is refused at once.
  Client c(port);
  c.Write(Get("/api/v1/policies", kToken));
  EXPECT_EQ(c.Status(), 503);
  EXPECT_NE(c.body.find("busy"), std::string::npos) << c.body;
  Release();
  // The handlers finish, and requests are served again.
  int status = 0;
  for (int i = 0; i < 100 && status != 200; i++) {
    Client d(port);
    d.Write(Get("/api/v1/policies", kToken));
    status = d.Status();
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status, 200);
}

TEST_F(ServerLimitsTest, AnAcceptErrorPausesTheAcceptLoopAndIsLoggedOnce) {
  const uint16_t port = Start(ServerOptions{});
  Client first(port);
  first.Write(Get("/api/v1/health"));
  ASSERT_EQ(first.Status(), 200);
  // Sockets made before the descriptors run out; the server's accept then
  // fails with EMFILE while they connect.
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> socks;
  asio::io_context cioc;
  for (int i = 0; i < 3; i++) {
    socks.push_back(std::make_unique<asio::ip::tcp::socket>(cioc));
    socks.back()->open(asio::ip::tcp::v4());
  }
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  int lowest = dup(0);  // the lowest free descriptor: none below the limit is left
  ASSERT_GE(lowest, 0);
  close(lowest);
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(lowest);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  for (auto& s : socks) s->connect({asio::ip::make_address("127.0.0.1"), port});
  for (int i = 0; i < 200 && LogCount("Too many open files") == 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const size_t warnings = LogCount("Too many open files");
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_EQ(warnings, 1u) << "the accept error is logged once, not in a loop";
  // Descriptors again: the connections waiting in the backlog are served.
  asio::write(*socks[0], asio::buffer(Get("/api/v1/health")));
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  beast::error_code ec = asio::error::timed_out;
  bhttp::async_read(*socks[0], buf, res, [&](beast::error_code e, size_t) { ec = e; });
  if (cioc.run_for(std::chrono::seconds(10)) == 0 || !cioc.stopped()) {
    socks[0]->cancel();
    cioc.run();
  }
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_NE(Log().find("accepting connections again"), std::string::npos) << Log();
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

TEST_F(DaemonTest, AVmNameWithANulIsRefusedNotCutShortByLibvirt) {
  Daemon d(dir_);
  ASSERT_NE(d.port(), 0) << d.Log();
  std::string token(Trim(*ReadFile(dir_ + "/token")));
  EXPECT_EQ(Request1(d.port(), bhttp::verb::get, "/api/v1/vms/test", token).status, 200);
  // libvirt's C API would look up "test".
  auto nul = Request1(d.port(), bhttp::verb::get, "/api/v1/vms/test%00zzz", token);
  EXPECT_EQ(nul.status, 400) << nul.body;
  auto bad = Request1(d.port(), bhttp::verb::get, "/api/v1/vms/%FF", token);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(d.Terminate(), 0);
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
  // Not migrating (not a terminal: one report, no redraw).
  auto mig = ctl({"vm", "migration", "test"});
  EXPECT_EQ(mig.exit_code, 0) << mig.err;
  EXPECT_EQ(mig.out.rfind("test: none\n", 0), 0u) << mig.out;
  auto nomig = ctl({"vm", "migration", "nope"});
  EXPECT_EQ(nomig.exit_code, 1);
  EXPECT_NE(nomig.err.find("error 404"), std::string::npos) << nomig.err;
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
