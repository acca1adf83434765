#include "manager/core/peers.h"

#include <algorithm>
#include <cctype>

#include "manager/libvirt/peer_uri.h"

namespace hc::core {

namespace {

bool ValidPeerName(std::string_view n) {
  if (n.empty() || n.size() > 63) return false;
  for (size_t i = 0; i < n.size(); i++) {
    const char c = n[i];
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) ||
                    (i > 0 && (c == '.' || c == '_' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

// "NAME=VALUE" -> {NAME, VALUE}, the name checked.
Result<std::pair<std::string, std::string>> Split(const std::string& entry, const std::string& key,
                                                  const std::string& form) {
  const size_t eq = entry.find('=');
  if (eq == std::string::npos) {
    return Fail(ErrorCode::kInvalidArgument, key + " '" + entry + "' is not " + form);
  }
  std::string name = entry.substr(0, eq);
  if (!ValidPeerName(name)) {
    return Fail(ErrorCode::kInvalidArgument,
                key + " '" + entry + "': the peer name '" + name +
                    "' is not 1 to 63 letters, digits and ._- starting with a letter or digit");
  }
  return std::make_pair(std::move(name), entry.substr(eq + 1));
}

}  // namespace

Result<Peers> Peers::Parse(const std::vector<std::string>& peers,
                           const std::vector<std::string>& migrate_uris) {
  Peers out;
  for (const auto& entry : peers) {
    auto kv = Split(entry, "peer", "NAME=LIBVIRT-URI (such as hostb=qemu+tls://hostb/system)");
    if (!kv) return tl::unexpected(kv.error());
    if (out.Find(kv->first)) {
      return Fail(ErrorCode::kInvalidArgument, "peer '" + kv->first + "' is configured twice");
    }
    auto uri = libvirt::CheckPeerUri(kv->second);
    if (!uri) {
      return Fail(ErrorCode::kInvalidArgument, "peer '" + kv->first + "': " + uri.error().message);
    }
    out.peers_.push_back(Peer{kv->first, kv->second, uri->transport, uri->host, "", uri->host});
  }
  for (const auto& entry : migrate_uris) {
    auto kv = Split(entry, "peer-migrate-uri", "NAME=tcp://HOST[:PORT]");
    if (!kv) return tl::unexpected(kv.error());
    auto it = std::find_if(out.peers_.begin(), out.peers_.end(),
                           [&](const Peer& p) { return p.name == kv->first; });
    if (it == out.peers_.end()) {
      return Fail(ErrorCode::kInvalidArgument,
                  "peer-migrate-uri '" + entry + "' names no configured peer (peer = " + kv->first +
                      "=LIBVIRT-URI)");
    }
    if (!it->migrate_uri.empty()) {
      return Fail(ErrorCode::kInvalidArgument,
                  "peer '" + kv->first + "' has more than one peer-migrate-uri");
    }
    auto host = libvirt::CheckMigrateUri(kv->second);
    if (!host) {
      return Fail(ErrorCode::kInvalidArgument,
                  "peer-migrate-uri of peer '" + kv->first + "': " + host.error().message);
    }
    it->migrate_uri = kv->second;
    it->migrate_host = *host;
  }
  return out;
}

const Peer* Peers::Find(std::string_view name) const {
  for (const auto& p : peers_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

Result<std::string> Peers::MigrateUri(const Peer& p, const std::string& requested) {
  if (requested.empty()) return p.migrate_uri;
  auto host = libvirt::CheckMigrateUri(requested);
  if (!host) return tl::unexpected(host.error());
  if (p.migrate_host.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "migrate_uri '" + requested + "' is not accepted: peer '" + p.name +
                    "' has no migration host configured; leave migrate_uri out (the destination "
                    "libvirtd chooses) or set peer-migrate-uri = " +
                    p.name + "=tcp://HOST in hostcached's config file");
  }
  if (*host != p.migrate_host) {
    return Fail(ErrorCode::kInvalidArgument,
                "migrate_uri '" + requested + "' is not accepted: a migration to peer '" + p.name +
                    "' streams to its host " + p.migrate_host +
                    " only; leave migrate_uri out, or change peer-migrate-uri in hostcached's "
                    "config file");
  }
  return requested;
}

std::string Peers::Describe() const {
  if (peers_.empty()) return "none is configured";
  std::string names;
  for (const auto& p : peers_) names += (names.empty() ? "" : ", ") + p.name;
  return "the configured ones are " + names;
}

std::string Peers::HowToConfigure() {
  return "configure a peer in hostcached's config file (peer = NAME=qemu+tls://HOST/system, "
         "or qemu+ssh://HOST/system; --peer NAME=URI) and restart it";
}

}  // namespace hc::core
