// Peers: the other hosts hostcached may live-migrate VMs to, from its
// configuration (the API names a peer; it never takes a libvirt URI):
//
//   peer = NAME=LIBVIRT-URI                  (repeatable; --peer)
//   peer-migrate-uri = NAME=tcp://HOST[:PORT] (optional, one per peer)
//
// NAME is [A-Za-z0-9][A-Za-z0-9._-]{0,62}; LIBVIRT-URI is checked by
// libvirt::CheckPeerUri (qemu+tls, qemu+ssh or qemu+unix to /system, no
// parameter that runs a program).  The migration stream goes to the
// peer's migrate-uri when one is configured, else where the destination
// libvirtd says (its qemu.conf migration_host, or its host name).  A
// request may name its own migrate_uri only as tcp://HOST[:PORT] of that
// same host: the configured migrate-uri's, or else the libvirt URI's (a
// qemu+unix peer without a migrate-uri takes none).
//
// A plain value, built once at start-up; const methods are thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace hc::core {

struct Peer {
  std::string name;
  std::string uri;           // the libvirt URI (checked)
  std::string transport;     // "tls", "ssh", "unix"
  std::string host;          // the libvirt URI's host ("" for unix)
  std::string migrate_uri;   // configured tcp://HOST[:PORT], or ""
  std::string migrate_host;  // the host a migrate_uri must name ("" = none may be named)
};

class Peers {
 public:
  Peers() = default;
  // From the "NAME=URI" values of `peer` and the "NAME=tcp://..." values of
  // `peer-migrate-uri`.  kInvalidArgument naming the entry and the problem
  // (a bad name or URI, a name twice, a migrate-uri for no peer).
  static Result<Peers> Parse(const std::vector<std::string>& peers,
                             const std::vector<std::string>& migrate_uris);

  const std::vector<Peer>& all() const { return peers_; }
  // nullptr when there is no peer of that name.
  const Peer* Find(std::string_view name) const;
  // What a migration to peer `p` streams to: `requested` ("" = the
  // default above) when it is tcp://HOST[:PORT] of p's migration host;
  // kInvalidArgument otherwise.
  static Result<std::string> MigrateUri(const Peer& p, const std::string& requested);
  // For messages: the configured names ("none configured" when empty) and
  // how to add one.
  std::string Describe() const;
  static std::string HowToConfigure();

 private:
  std::vector<Peer> peers_;
};

}  // namespace hc::core
