// The migration peers (core/peers.h) and the libvirt URIs they may have
// (libvirt/peer_uri.h).
#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/core/peers.h"
#include "manager/http/api.h"
#include "manager/libvirt/peer_uri.h"
#include "manager/store/sqlite_store.h"
#include "migration/peer_health.h"

namespace hc::core {
namespace {

TEST(PeerUri, TheSafeTransportsAreAccepted) {
  struct {
    const char *uri;
    const char *transport;
    const char *host;
  } ok[] = {
      {"qemu+tls://hostb.example.com/system", "tls", "hostb.example.com"},
      {"qemu+tls://HostB:16514/system?pkipath=/etc/pki/hostcache", "tls",
       "hostb"},
      {"qemu+ssh://root@hostb/system", "ssh", "hostb"},
      {"qemu+ssh://hostb:2222/system?keyfile=/root/.ssh/"
       "id_migrate&no_tty=1&proxy=native",
       "ssh", "hostb"},
      {"qemu+ssh://10.0.0.2/system?mode=legacy", "ssh", "10.0.0.2"},
      {"qemu+tls://[fd00::2]/system", "tls", "fd00::2"},
      {"qemu+unix:///system", "unix", ""},
      {"qemu+unix:///system?socket=/run/libvirt-b/libvirt-sock", "unix", ""},
  };
  for (const auto &c : ok) {
    auto r = libvirt::CheckPeerUri(c.uri);
    ASSERT_TRUE(r) << c.uri << ": " << r.error().message;
    EXPECT_EQ(r->transport, c.transport) << c.uri;
    EXPECT_EQ(r->host, c.host) << c.uri;
  }
}

TEST(PeerUri, WhatCouldRunAProgramOrWeakenTheConnectionIsRefused) {
  struct {
    const char *uri;
    const char *why; // in the message
  } bad[] = {
      {"qemu+ext:///system?command=/dev/shm/x", "transport 'qemu+ext'"},
      {"qemu+ssh://hostb/system?command=/dev/shm/x",
       "'command' is not allowed"},
      {"qemu+ssh://hostb/system?netcat=/tmp/nc", "'netcat' is not allowed"},
      {"qemu+ssh://hostb/system?socket=/tmp/s",
       "'socket' is not allowed with qemu+ssh"},
      {"qemu+ssh://hostb/system?keyfile=/k;command=/x", "';'"},
      {"qemu+ssh://hostb/system?%63ommand=/x", "'%'"},
      {"qemu+ssh://hostb/system?keyfile=/k&keyfile=/j", "repeated"},
      {"qemu+ssh://hostb/system?keyfile=k", "absolute path"},
      {"qemu+ssh://hostb/system?keyfile=/k/../../etc/shadow", "absolute path"},
      {"qemu+ssh://-oProxyCommand=x/system", "DNS name"},
      {"qemu+ssh://-oProxyCommand@hostb/system", "user"},
      {"qemu+ssh://root:secret@hostb/system", "password"},
      {"qemu+tls://root@hostb/system", "only qemu+ssh takes a user"},
      {"qemu+tls://hostb/system?no_verify=1", "'no_verify' is not allowed"},
      {"qemu+tls://hostb/system?tls_priority=NONE",
       "'tls_priority' is not allowed"},
      {"qemu+tls://hostb/system?name=qemu:///session", "'name' is not allowed"},
      {"qemu+tls://hostb/system?mode=weird", "auto, legacy or direct"},
      {"qemu+tls://hostb/session", "/system"},
      {"qemu+tls://hostb/system#x", "fragment"},
      {"qemu+tls:///system", "no usable host"},
      {"qemu+tls://hostb:0/system", "port"},
      {"qemu+tls://hostb:99999/system", "port"},
      {"qemu+unix://hostb/system", "no host"},
      {"qemu:///system", "transport 'qemu'"},
      {"qemu+tcp://hostb/system", "transport 'qemu+tcp'"},
      {"qemu+libssh2://hostb/system?known_hosts_verify=ignore", "transport"},
      {"test:///default", "transport"},
      {"not a uri", "not a URI"},
      {"", "not a URI"},
  };
  for (const auto &c : bad) {
    auto r = libvirt::CheckPeerUri(c.uri);
    ASSERT_FALSE(r) << c.uri;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.why), std::string::npos)
        << c.uri << ": " << r.error().message;
  }
}

TEST(PeerUri, AMigrationUriIsTcpToAHost) {
  EXPECT_EQ(*libvirt::CheckMigrateUri("tcp://10.0.0.2"), "10.0.0.2");
  EXPECT_EQ(*libvirt::CheckMigrateUri("tcp://HostB:49152"), "hostb");
  EXPECT_EQ(*libvirt::CheckMigrateUri("tcp://[fd00::2]:49152/"), "fd00::2");
  for (const char *bad :
       {"rdma://10.0.0.2", "unix:///tmp/mig", "tcp://10.0.0.2/x",
        "tcp://u@10.0.0.2", "tcp://10.0.0.2?x=1", "tcp:10.0.0.2:4", "tcp://",
        "tcp://-x", "tcp://10.0.0.2:70000", "exec:sh -c x"}) {
    EXPECT_FALSE(libvirt::CheckMigrateUri(bad)) << bad;
  }
}

TEST(Peers, ParsedFromTheConfigAndFoundByName) {
  auto p =
      Peers::Parse({"hostb=qemu+tls://hostb.example.com/system",
                    "local-b=qemu+unix:///system?socket=/run/b/libvirt-sock"},
                   {"local-b=tcp://127.0.0.1"});
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_EQ(p->all().size(), 2u);
  const Peer *b = p->Find("hostb");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->uri, "qemu+tls://hostb.example.com/system");
  EXPECT_EQ(b->transport, "tls");
  EXPECT_EQ(p->Find("local-b")->migrate_uri, "tcp://127.0.0.1");
  EXPECT_EQ(p->Find("nope"), nullptr);
  EXPECT_EQ(p->Describe(), "the configured ones are hostb, local-b");
  EXPECT_EQ(Peers().Describe(), "none is configured");
  // Where the stream goes.
  EXPECT_EQ(*Peers::MigrateUri(*b, ""), "")
      << "the destination libvirtd's choice";
  EXPECT_EQ(*Peers::MigrateUri(*b, "tcp://HOSTB.example.com:49152"),
            "tcp://HOSTB.example.com:49152");
  auto elsewhere = Peers::MigrateUri(*b, "tcp://evil.example.com:4444");
  ASSERT_FALSE(elsewhere);
  EXPECT_NE(elsewhere.error().message.find(
                "streams to its host hostb.example.com only"),
            std::string::npos)
      << elsewhere.error().message;
  const Peer *l = p->Find("local-b");
  EXPECT_EQ(*Peers::MigrateUri(*l, ""), "tcp://127.0.0.1");
  EXPECT_EQ(*Peers::MigrateUri(*l, "tcp://127.0.0.1:49200"),
            "tcp://127.0.0.1:49200");
  EXPECT_FALSE(Peers::MigrateUri(*l, "tcp://10.0.0.9"));
  // A qemu+unix peer without a migrate-uri names no host.
  auto u = Peers::Parse({"u=qemu+unix:///system"}, {});
  auto none = Peers::MigrateUri(u->all()[0], "tcp://127.0.0.1");
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("peer-migrate-uri = u=tcp://HOST"),
            std::string::npos)
      << none.error().message;
}

TEST(Peers, BadEntriesAreRefusedWithTheEntryNamed) {
  struct {
    std::vector<std::string> peers, migrate;
    const char *why;
  } bad[] = {
      {{"qemu+tls://hostb/system"}, {}, "is not NAME=LIBVIRT-URI"},
      {{"-b=qemu+tls://hostb/system"}, {}, "the peer name '-b'"},
      {{"b=qemu+ext:///system?command=/dev/shm/x"},
       {},
       "peer 'b': libvirt URI"},
      {{"b=qemu+tls://hostb/system", "b=qemu+tls://hostc/system"},
       {},
       "configured twice"},
      {{"b=qemu+tls://hostb/system"},
       {"c=tcp://hostc"},
       "names no configured peer"},
      {{"b=qemu+tls://hostb/system"},
       {"b=tcp://hostb", "b=tcp://hostb:2"},
       "more than one"},
      {{"b=qemu+tls://hostb/system"},
       {"b=exec:/bin/sh"},
       "peer-migrate-uri of peer 'b'"},
  };
  for (const auto &c : bad) {
    auto r = Peers::Parse(c.peers, c.migrate);
    ASSERT_FALSE(r) << c.why;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.why), std::string::npos)
        << r.error().message;
  }
}

// The peers' health (migration/peer_health.h) and GET /api/v1/peers.
TEST(PeerHealth, ProbesEachPeerAndTheApiListsThem) {
  auto peers = Peers::Parse({"hostb=qemu+ssh://hostb/system", "hostc=qemu+tls://hostc/system"},
                            {"hostc=tcp://10.0.0.3"});
  ASSERT_TRUE(peers) << peers.error().message;
  testing::FakeLibvirt lv;
  testing::FakeClock clock;
  lv.peer_errors["qemu+tls://hostc/system"] = "unable to connect to server at 'hostc:16514'";
  migration::PeerHealth health(*peers, lv, clock);
  auto before = health.Snapshot();
  ASSERT_EQ(before.size(), 2u);
  EXPECT_FALSE(before[0].reachable.has_value());
  health.ProbeAll();
  auto st = health.Snapshot();
  EXPECT_TRUE(*st[0].reachable);
  EXPECT_FALSE(*st[1].reachable);
  EXPECT_NE(st[1].last_error.find("unable to connect"), std::string::npos);

  auto store = std::move(*store::SqliteStore::Open(":memory:", clock.now_ms));
  testing::FakeQemuTools tools;
  ManagerConfig cfg;
  Manager mgr(*store, lv, tools, clock, cfg);
  http::Api api(mgr, *store, nullptr, "tok", "test");
  api.SetPeerHealth(&health);
  auto r = api.Handle(http::Request{"GET", "/api/v1/peers", "Bearer tok", ""});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = nlohmann::json::parse(r.body)["peers"];
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["name"], "hostb");
  EXPECT_EQ(j[0]["reachable"], true);
  EXPECT_EQ(j[1]["uri"], "qemu+tls://hostc/system");
  EXPECT_EQ(j[1]["migrate_uri"], "tcp://10.0.0.3");
  EXPECT_EQ(j[1]["reachable"], false);
  EXPECT_NE(j[1]["last_error"].get<std::string>().find("hostc:16514"), std::string::npos);
  EXPECT_EQ(api.Handle(http::Request{"GET", "/api/v1/peers", "", ""}).status, 401);
  // Back: reachable again.
  lv.peer_errors.clear();
  health.ProbeAll();
  EXPECT_TRUE(*health.Snapshot()[1].reachable);
}

} // namespace
} // namespace hc::core
