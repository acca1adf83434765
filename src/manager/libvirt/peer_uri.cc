#include "manager/libvirt/peer_uri.h"

#include <algorithm>
#include <cctype>
#include <set>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

namespace hc::libvirt {

namespace {

constexpr const char* kAccepted =
    "qemu+tls://HOST/system, qemu+ssh://[USER@]HOST/system or qemu+unix:///system, with at "
    "most the query parameters pkipath (tls), keyfile and no_tty (ssh), socket (unix), mode "
    "and proxy (ssh)";

tl::unexpected<Error> Bad(std::string_view uri, const std::string& why) {
  return Fail(ErrorCode::kInvalidArgument, "libvirt URI '" + std::string(uri) +
                                               "' is not accepted: " + why + "; use " + kAccepted);
}

bool NameChars(std::string_view s, std::string_view extra) {
  return !s.empty() && s.front() != '-' && std::all_of(s.begin(), s.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || extra.find(c) != std::string_view::npos;
  });
}

bool AbsolutePath(std::string_view s) {
  return s.size() > 1 && s.front() == '/' && s.find("/../") == std::string_view::npos &&
         !s.ends_with("/..") && NameChars(s.substr(1), "._/-");
}

// HOST of a URI with an authority: a DNS name or an IP literal.
Result<std::string> HostOf(const boost::urls::url_view& u, std::string_view uri,
                           std::string_view what) {
  using boost::urls::host_type;
  switch (u.host_type()) {
    case host_type::ipv4:
      return std::string(u.encoded_host());
    case host_type::ipv6:
      return u.host_ipv6_address().to_string();
    case host_type::name: {
      std::string h(u.encoded_host());
      if (h.empty()) {
        return Fail(ErrorCode::kInvalidArgument,
                    std::string(what) + " '" + std::string(uri) + "' has no usable host");
      }
      if (!NameChars(h, ".-")) {
        return Fail(ErrorCode::kInvalidArgument,
                    std::string(what) + " '" + std::string(uri) + "' has host '" + h +
                        "': a host is a DNS name (letters, digits, '.', '-', not starting "
                        "with '-') or an IP address");
      }
      std::transform(h.begin(), h.end(), h.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      return h;
    }
    default:
      return Fail(ErrorCode::kInvalidArgument,
                  std::string(what) + " '" + std::string(uri) + "' has no usable host");
  }
}

Status CheckPort(const boost::urls::url_view& u, std::string_view uri, std::string_view what) {
  if (!u.has_port()) return {};
  const std::string port(u.port());
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoul(port) == 0 || std::stoul(port) > 65535) {
    return Fail(ErrorCode::kInvalidArgument, std::string(what) + " '" + std::string(uri) +
                                                 "' has port '" + std::string(u.port()) +
                                                 "': a port is a number from 1 to 65535");
  }
  return {};
}

// The query parameters a transport may have, each with its check.
struct Param {
  const char* name;
  std::set<std::string> transports;
  bool (*ok)(std::string_view);
  const char* expect;
};

bool OneOfModes(std::string_view v) { return v == "auto" || v == "legacy" || v == "direct"; }
bool OneOfProxies(std::string_view v) { return v == "auto" || v == "native" || v == "netcat"; }
bool ZeroOrOne(std::string_view v) { return v == "0" || v == "1"; }

const Param kParams[] = {
    {"pkipath", {"tls"}, AbsolutePath, "an absolute path of letters, digits and ._/-"},
    {"keyfile", {"ssh"}, AbsolutePath, "an absolute path of letters, digits and ._/-"},
    {"no_tty", {"ssh"}, ZeroOrOne, "0 or 1"},
    {"socket", {"unix"}, AbsolutePath, "an absolute path of letters, digits and ._/-"},
    {"mode", {"tls", "ssh", "unix"}, OneOfModes, "auto, legacy or direct"},
    {"proxy", {"ssh"}, OneOfProxies, "auto, native or netcat"},
};

Status CheckQuery(std::string_view uri, std::string_view query, const std::string& transport) {
  if (query.find_first_of(";%+") != std::string_view::npos) {
    return Bad(uri,
               "its query has ';', '%' or '+' (libvirt splits parameters on ';' too; "
               "write parameters literally, separated by '&')");
  }
  std::set<std::string> seen;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t end = query.find('&', pos);
    if (end == std::string_view::npos) end = query.size();
    std::string_view item = query.substr(pos, end - pos);
    pos = end + 1;
    size_t eq = item.find('=');
    std::string key(item.substr(0, eq));
    if (eq == std::string_view::npos || key.empty()) {
      return Bad(uri, "query item '" + std::string(item) + "' is not NAME=VALUE");
    }
    std::string_view value = item.substr(eq + 1);
    const Param* p = nullptr;
    for (const auto& c : kParams) {
      if (key == c.name) p = &c;
    }
    if (!p || !p->transports.count(transport)) {
      return Bad(uri, "query parameter '" + key + "' is not allowed with qemu+" + transport +
                          " (parameters such as command, netcat, name, no_verify or "
                          "tls_priority run programs or weaken the connection's checks)");
    }
    if (!seen.insert(key).second) return Bad(uri, "query parameter '" + key + "' is repeated");
    if (!p->ok(value)) {
      return Bad(uri, "query parameter '" + key + "' is '" + std::string(value) + "'; it must be " +
                          p->expect);
    }
  }
  return {};
}

}  // namespace

Result<PeerUri> CheckPeerUri(std::string_view uri) {
  auto parsed = boost::urls::parse_uri(uri);
  if (!parsed) return Bad(uri, "it is not a URI (" + parsed.error().message() + ")");
  const boost::urls::url_view& u = *parsed;
  std::string scheme(u.scheme());
  PeerUri out;
  if (scheme == "qemu+tls" || scheme == "qemu+ssh" || scheme == "qemu+unix") {
    out.transport = scheme.substr(5);
  } else {
    return Bad(uri, "transport '" + scheme + "' is not one of qemu+tls, qemu+ssh, qemu+unix");
  }
  if (!u.has_authority()) return Bad(uri, "it has no '//' authority part");
  if (u.has_fragment()) return Bad(uri, "it has a fragment ('#')");
  if (u.has_password()) return Bad(uri, "it has a password; use keys or certificates");
  if (u.has_userinfo() && out.transport != "ssh") {
    return Bad(uri, "only qemu+ssh takes a user name");
  }
  if (u.has_userinfo() && !NameChars(u.encoded_user(), "._-")) {
    return Bad(uri, "user '" + std::string(u.encoded_user()) +
                        "' is not letters, digits and ._- (not starting with '-')");
  }
  if (out.transport == "unix") {
    if (!u.encoded_host().empty() || u.has_port()) {
      return Bad(uri, "qemu+unix takes no host or port (qemu+unix:///system)");
    }
  } else {
    auto host = HostOf(u, uri, "libvirt URI");
    if (!host) return tl::unexpected(host.error());
    if (auto s = CheckPort(u, uri, "libvirt URI"); !s) return tl::unexpected(s.error());
    out.host = *host;
  }
  if (u.encoded_path() != "/system") {
    return Bad(uri, "its path is '" + std::string(u.encoded_path()) +
                        "'; a destination is the peer's system daemon, /system");
  }
  if (u.has_query()) {
    if (auto s = CheckQuery(uri, u.encoded_query(), out.transport); !s) {
      return tl::unexpected(s.error());
    }
  }
  return out;
}

Result<std::string> CheckMigrateUri(std::string_view uri) {
  auto bad = [&](const std::string& why) {
    return Fail(ErrorCode::kInvalidArgument, "migration URI '" + std::string(uri) +
                                                 "' is not accepted: " + why +
                                                 "; use tcp://HOST or tcp://HOST:PORT");
  };
  auto parsed = boost::urls::parse_uri(uri);
  if (!parsed) return bad("it is not a URI (" + parsed.error().message() + ")");
  const boost::urls::url_view& u = *parsed;
  if (u.scheme() != "tcp") return bad("its scheme is not tcp");
  if (!u.has_authority() || u.has_userinfo() || u.has_query() || u.has_fragment() ||
      !(u.encoded_path().empty() || u.encoded_path() == "/")) {
    return bad("it has more than a host and a port");
  }
  auto host = HostOf(u, uri, "migration URI");
  if (!host) return tl::unexpected(host.error());
  if (auto s = CheckPort(u, uri, "migration URI"); !s) return tl::unexpected(s.error());
  return *host;
}

}  // namespace hc::libvirt
