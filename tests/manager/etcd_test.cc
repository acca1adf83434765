// The etcd client and the cluster catalogue (manager/cluster) against a
// real etcd (Debian's etcd-server) started by the test on private loopback
// ports in a scratch directory, stopped by pid however the test ends.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/util.h"
#include "fakes.h"
#include "manager/cluster/etcd_catalogue.h"
#include "manager/cluster/etcd_client.h"
#include "manager/store/sqlite_store.h"

extern char** environ;

namespace hc::cluster {
namespace {

using store::PolicyChange;

const char* kEtcd = "/usr/bin/etcd";

// A loopback port nobody listens on now.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// One etcd member on 127.0.0.1; Stop() and Start() keep its data and ports.
class Etcd {
 public:
  explicit Etcd(const std::string& dir) : dir_(dir) {
    for (int attempt = 0; attempt < 5 && !ready_; ++attempt) {
      client_port_ = FreePort();
      peer_port_ = FreePort();
      Start();
    }
  }
  ~Etcd() { Stop(); }

  void Start() {
    const std::string c = "http://127.0.0.1:" + std::to_string(client_port_);
    const std::string p = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> args = {kEtcd,
                                     "--name",
                                     "t",
                                     "--data-dir",
                                     dir_ + "/etcd",
                                     "--listen-client-urls",
                                     c,
                                     "--advertise-client-urls",
                                     c,
                                     "--listen-peer-urls",
                                     p,
                                     "--initial-advertise-peer-urls",
                                     p,
                                     "--initial-cluster",
                                     "t=" + p};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = dir_ + "/etcd.log";
    ready_ = false;
    // fork and exec rather than posix_spawn: the member must die with the
    // test even when the test is killed (PR_SET_PDEATHSIG).  Only
    // async-signal-safe calls in the child.
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      int out = open("/dev/null", O_WRONLY);
      int err = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(127);
      execve(kEtcd, argv.data(), environ);
      _exit(127);
    }
    if (pid_ < 0) return;
    // Ready when it answers a read (generous deadline: a loaded machine).
    EtcdClient probe({Endpoint()}, std::chrono::seconds(2));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {  // exited: a port taken meanwhile
        pid_ = -1;
        return;
      }
      if (probe.RangePrefix("/probe/")) {
        ready_ = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool ready() const { return ready_; }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(client_port_); }
  EtcdEndpoint Endpoint() const { return {Url(), "127.0.0.1", std::to_string(client_port_)}; }
  std::string Log() const { return ReadFile(dir_ + "/etcd.log").value_or(""); }

 private:
  std::string dir_;
  int client_port_ = 0, peer_port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
};

// ---- URLs (no etcd needed)
// ----------------------------------------------------

TEST(EtcdUrls, AcceptsHttpMembersWithHostAndPort) {
  auto eps = ParseEtcdUrls("http://10.0.0.1:2379, http://etcd-b.example:2379/,http://[::1]:2381");
  ASSERT_TRUE(eps) << eps.error().message;
  ASSERT_EQ(eps->size(), 3u);
  EXPECT_EQ((*eps)[0].url, "http://10.0.0.1:2379");
  EXPECT_EQ((*eps)[1].host, "etcd-b.example");
  EXPECT_EQ((*eps)[1].url, "http://etcd-b.example:2379");
  EXPECT_EQ((*eps)[2].host, "::1");
  EXPECT_EQ((*eps)[2].port, "2381");
  EXPECT_EQ((*eps)[2].url, "http://[::1]:2381");
}

TEST(EtcdUrls, RefusesWhatIsNotAPlainMemberUrl) {
  const std::pair<const char*, const char*> bad[] = {
      {"", "an empty URL"},
      {"http://a:2379,", "an empty URL"},
      {"https://a:2379", "https"},
      {"ftp://a:2379", "not an http URL"},
      {"http://user:pw@a:2379", "user information"},
      {"http://a:2379@b:2379", "user information"},
      {"http://a", "names no port"},
      {"http://a:", "names no port"},
      {"http://a:0", "no valid port"},
      {"http://a:99999", "no valid port"},
      {"http://a:2379/v3/kv", "has a path"},
      {"http://a:2379?x=1", "query"},
      {"http://a:2379#f", "fragment"},
      {"http://%61:2379", "percent-encoded"},
      {"a:2379", "not an http URL"},
      {"//a:2379", "is not a URL"},
  };
  for (const auto& [url, why] : bad) {
    auto eps = ParseEtcdUrls(url);
    ASSERT_FALSE(eps) << url;
    EXPECT_EQ(eps.error().code, ErrorCode::kInvalidArgument) << url;
    EXPECT_NE(eps.error().message.find(why), std::string::npos)
        << url << ": " << eps.error().message;
    EXPECT_NE(eps.error().message.find("http://HOST:PORT"), std::string::npos) << url;
  }
}

TEST(EtcdUrls, Base64RoundTripsBytes) {
  const std::string all = [] {
    std::string s;
    for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
    return s;
  }();
  for (const std::string& s : {std::string(), std::string("a"), std::string("ab"), all}) {
    auto d = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, s);
  }
  EXPECT_FALSE(Base64Decode("a*b="));
}

TEST(EtcdClientDown, NoMemberAnsweringIsUnavailableNamingTheUrls) {
  const int port = FreePort();
  EtcdClient c({{"http://127.0.0.1:" + std::to_string(port), "127.0.0.1", std::to_string(port)}},
               std::chrono::seconds(2));
  auto r = c.RangePrefix("/x/");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find("etcd at http://127.0.0.1:" + std::to_string(port) +
                                   " is unreachable"),
            std::string::npos)
      << r.error().message;
}

// ---- against a real etcd
// ------------------------------------------------------

class EtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(kEtcd, X_OK), 0)
        << kEtcd << " is missing: install etcd-server (scripts/setup-deps.sh)";
    ASSERT_TRUE(etcd_.ready()) << "etcd did not start: " << etcd_.Log();
  }
  const testing::ScratchDir scratch_{"hc-etcd-test."};
  Etcd etcd_{scratch_.path()};
};

TEST_F(EtcdTest, ClientTransactionsCompareRevisions) {
  EtcdClient c({etcd_.Endpoint()});
  auto empty = c.RangePrefix("/t/");
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_TRUE(empty->kvs.empty());

  const std::string value = std::string("v\0\xff\n{\"json\"}", 12);
  auto put = c.PutIf("/t/a", value, 0);
  ASSERT_TRUE(put) << put.error().message;
  EXPECT_TRUE(put->succeeded);
  auto again = c.PutIf("/t/a", "other", 0);  // create-if-absent: taken
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->succeeded);
  ASSERT_TRUE(c.PutIf("/t0", "outside the prefix", 0));
  ASSERT_TRUE(c.PutIf("/tz/b", "outside too", 0));

  auto r = c.RangePrefix("/t/");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0].key, "/t/a");
  EXPECT_EQ(r->kvs[0].value, value);
  EXPECT_EQ(r->kvs[0].mod_revision, put->revision);
  const int64_t rev = r->kvs[0].mod_revision;

  auto stale = c.PutIf("/t/a", "x", rev - 1);
  ASSERT_TRUE(stale);
  EXPECT_FALSE(stale->succeeded);
  auto upd = c.PutIf("/t/a", "new", rev);
  ASSERT_TRUE(upd);
  EXPECT_TRUE(upd->succeeded);
  EXPECT_GT(upd->revision, rev);
  auto del_stale = c.DeleteIf("/t/a", rev);
  ASSERT_TRUE(del_stale);
  EXPECT_FALSE(del_stale->succeeded);
  EXPECT_EQ(c.RangePrefix("/t/")->kvs.at(0).value, "new");
  auto del = c.DeleteIf("/t/a", upd->revision);
  ASSERT_TRUE(del);
  EXPECT_TRUE(del->succeeded);
  EXPECT_TRUE(c.RangePrefix("/t/")->kvs.empty());
}

TEST_F(EtcdTest, ClientFailsOverToAMemberThatAnswers) {
  const int dead = FreePort();
  EtcdClient c({{"http://127.0.0.1:" + std::to_string(dead), "127.0.0.1", std::to_string(dead)},
                etcd_.Endpoint()});
  auto r = c.RangePrefix("/t/");
  ASSERT_TRUE(r) << r.error().message;
}

// Two hosts (two SQLite stores) sharing the catalogue in one etcd.
class CatalogueTest : public EtcdTest {
 protected:
  std::unique_ptr<store::SqliteStore> Open(const std::string& name) {
    auto s = store::SqliteStore::Open(scratch_.path() + "/" + name + ".db", clock_.NowMs());
    EXPECT_TRUE(s);
    return std::move(*s);
  }
  policy::Policy Pol(const std::string& name, uint64_t ram) {
    policy::Policy p;
    p.name = name;
    p.rules.ram_size = ram;
    return p;
  }
  static bool Has(const std::vector<PolicyChange>& cs, const std::string& name,
                  PolicyChange::Kind k) {
    for (const auto& c : cs) {
      if (c.name == name && c.kind == k) return true;
    }
    return false;
  }
  testing::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> db_a_ = Open("a"), db_b_ = Open("b");
  EtcdCatalogue a_{*db_a_, EtcdClient({etcd_.Endpoint()}), clock_};
  EtcdCatalogue b_{*db_b_, EtcdClient({etcd_.Endpoint()}), clock_};
};

TEST_F(CatalogueTest, ChangesOnOneHostReachTheOtherAndConcurrentWritersConflict) {
  // The first host publishes its (default) policies to the empty catalogue.
  auto defaults = db_a_->ListPolicies();
  ASSERT_TRUE(defaults && !defaults->empty());
  a_.SyncNow();
  ASSERT_TRUE(a_.State().connected) << a_.State().problem;
  ASSERT_TRUE(db_b_->DeletePolicy(defaults->front().name));  // B's copy differs
  auto first_b = b_.SyncNow();
  EXPECT_TRUE(Has(first_b, defaults->front().name, PolicyChange::Kind::kCreated));
  EXPECT_EQ(db_b_->ListPolicies()->size(), defaults->size());

  ASSERT_TRUE(a_.Create(Pol("shared", 64 << 20), clock_.NowMs()));
  auto on_b = b_.SyncNow();
  ASSERT_TRUE(Has(on_b, "shared", PolicyChange::Kind::kCreated));
  EXPECT_EQ(db_b_->GetPolicy("shared")->rules.ram_size, 64u << 20);
  auto dup = b_.Create(Pol("shared", 1 << 20), clock_.NowMs());
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, ErrorCode::kAlreadyExists);

  ASSERT_TRUE(a_.Update(Pol("shared", 128 << 20), clock_.NowMs()));
  // B has not seen A's change yet: its update would lose it, so it is refused.
  auto lost = b_.Update(Pol("shared", 32 << 20), clock_.NowMs());
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, ErrorCode::kConflict) << lost.error().message;
  EXPECT_EQ(db_b_->GetPolicy("shared")->rules.ram_size, 64u << 20);  // unchanged
  on_b = b_.SyncNow();
  ASSERT_TRUE(Has(on_b, "shared", PolicyChange::Kind::kUpdated));
  EXPECT_EQ(db_b_->GetPolicy("shared")->rules.ram_size, 128u << 20);
  ASSERT_TRUE(b_.Update(Pol("shared", 32 << 20), clock_.NowMs()));
  EXPECT_TRUE(a_.SyncNow().size() == 1);
  EXPECT_EQ(db_a_->GetPolicy("shared")->rules.ram_size, 32u << 20);
  EXPECT_TRUE(a_.SyncNow().empty());  // nothing new: nothing reported

  // Deleted on A while a disk of B uses it: B keeps it (retained).
  store::Assignment as;
  as.vm_uuid = "00000000-0000-0000-0000-000000000001";
  as.vm_name = "vm";
  as.target = "vda";
  as.policy = "shared";
  ASSERT_TRUE(db_b_->PutAssignment(as));
  ASSERT_TRUE(a_.Delete("shared"));
  EXPECT_FALSE(db_a_->GetPolicy("shared"));
  on_b = b_.SyncNow();
  EXPECT_TRUE(Has(on_b, "shared", PolicyChange::Kind::kRetained));
  EXPECT_TRUE(db_b_->GetPolicy("shared"));
  EXPECT_EQ(b_.State().retained, std::vector<std::string>{"shared"});
  auto upd_retained = b_.Update(Pol("shared", 1 << 20), clock_.NowMs());
  ASSERT_FALSE(upd_retained);
  EXPECT_EQ(upd_retained.error().code, ErrorCode::kConflict);
  ASSERT_TRUE(db_b_->DeleteAssignment(as.vm_uuid, as.target));
  on_b = b_.SyncNow();
  EXPECT_TRUE(Has(on_b, "shared", PolicyChange::Kind::kDeleted));
  EXPECT_FALSE(db_b_->GetPolicy("shared"));
}

TEST_F(CatalogueTest, WithoutEtcdTheLastCatalogueStaysAndChangesAreRefused) {
  a_.SyncNow();
  ASSERT_TRUE(a_.Create(Pol("kept", 64 << 20), clock_.NowMs()));
  b_.SyncNow();
  etcd_.Stop();

  b_.SyncNow();
  auto st = b_.State();
  EXPECT_FALSE(st.connected);
  EXPECT_NE(st.problem.find("etcd at " + etcd_.Url() + " is unreachable"), std::string::npos)
      << st.problem;
  EXPECT_TRUE(db_b_->GetPolicy("kept"));  // the last catalogue stays
  for (auto s : {b_.Create(Pol("new", 1 << 20), clock_.NowMs()),
                 b_.Update(Pol("kept", 1 << 20), clock_.NowMs()), b_.Delete("kept")}) {
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
    EXPECT_NE(s.error().message.find("etcd at " + etcd_.Url() + " is unreachable"),
              std::string::npos)
        << s.error().message;
    EXPECT_NE(s.error().message.find("refused until it is back"), std::string::npos);
  }
  EXPECT_EQ(db_b_->GetPolicy("kept")->rules.ram_size,
            64u << 20);  // nothing half-changed
  EXPECT_FALSE(db_b_->GetPolicy("new"));

  // A restart of the host without etcd: the copy in its database remains.
  auto b2 = store::SqliteStore::Open(scratch_.path() + "/b.db", clock_.NowMs());
  ASSERT_TRUE(b2);
  EXPECT_TRUE((*b2)->GetPolicy("kept"));

  // etcd back, with a change made meanwhile elsewhere: B catches up.
  etcd_.Start();
  ASSERT_TRUE(etcd_.ready()) << etcd_.Log();
  ASSERT_TRUE(a_.Update(Pol("kept", 256 << 20), clock_.NowMs()));
  auto changes = b_.SyncNow();
  EXPECT_TRUE(b_.State().connected);
  EXPECT_TRUE(Has(changes, "kept", PolicyChange::Kind::kUpdated));
  EXPECT_EQ(db_b_->GetPolicy("kept")->rules.ram_size, 256u << 20);
  EXPECT_TRUE(b_.Update(Pol("kept", 8 << 20), clock_.NowMs()));
}

TEST_F(CatalogueTest, PollThreadReportsChangesToTheHandler) {
  std::mutex mu;
  std::vector<PolicyChange> seen;
  EtcdCatalogue c{*db_b_, EtcdClient({etcd_.Endpoint()}), clock_, std::chrono::milliseconds(100)};
  c.Start([&](const PolicyChange& ch) {
    std::lock_guard lock(mu);
    seen.push_back(ch);
  });
  a_.SyncNow();
  ASSERT_TRUE(a_.Create(Pol("polled", 64 << 20), clock_.NowMs()));
  bool got = false;
  for (int i = 0; i < 600 && !got; ++i) {  // 60 s at most
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::lock_guard lock(mu);
    got = Has(seen, "polled", PolicyChange::Kind::kCreated);
  }
  c.Stop();
  EXPECT_TRUE(got);
}

}  // namespace
}  // namespace hc::cluster
