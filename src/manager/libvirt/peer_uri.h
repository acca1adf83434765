// The libvirt URIs hostcached may open to reach another host's libvirtd
// (a live migration's destination), and the addresses QEMU may stream a
// migration to.  hostcached runs as root, and libvirt runs programs for
// some URIs (qemu+ext://...?command=PROG, ?netcat=, ssh's own options), so
// only a small, checked subset is accepted:
//
//   qemu+tls://HOST[:PORT]/system[?pkipath=DIR][&mode=M]
//   qemu+ssh://[USER@]HOST[:PORT]/system[?keyfile=FILE][&no_tty=0|1][&mode=M][&proxy=P]
//   qemu+unix:///system[?socket=PATH][&mode=M]
//
// HOST is a DNS name ([A-Za-z0-9.-], not starting with '-') or an IP
// literal; USER is [A-Za-z0-9._-], not starting with '-'; DIR, FILE and
// PATH are absolute paths of [A-Za-z0-9._/-]; M is auto, legacy or direct;
// P is auto, native or netcat.  No other query parameter (command, netcat,
// socket with ssh, name, no_verify, tls_priority, known_hosts_verify, auth,
// ...), no ';' separator (libvirt splits on it too), no percent-encoding, no
// fragment, no password.  Parsed with Boost.URL.
//
// Stateless functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace hc::libvirt {

struct PeerUri {
  std::string transport;  // "tls", "ssh" or "unix"
  std::string host;       // "" for unix
};

// kInvalidArgument with what is wrong and what is accepted.
Result<PeerUri> CheckPeerUri(std::string_view uri);

// A migration address tcp://HOST[:PORT] (nothing else: no path, user,
// query or fragment); returns HOST (lowercase, IPv6 without brackets).
// kInvalidArgument otherwise.
Result<std::string> CheckMigrateUri(std::string_view uri);

}  // namespace hc::libvirt
