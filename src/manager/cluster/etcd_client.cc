#include "manager/cluster/etcd_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <nlohmann/json.hpp>

#include "common/util.h"

namespace hc::cluster {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using nlohmann::json;

Result<EtcdEndpoint> ParseOne(std::string_view text) {
  const std::string shown(text);
  auto bad = [&](const std::string& why) {
    return Fail(ErrorCode::kInvalidArgument,
                "cluster-etcd: '" + ToValidUtf8(shown) + "' " + why +
                    "; give etcd members as http://HOST:PORT[,http://HOST:PORT...]");
  };
  auto u = boost::urls::parse_uri(text);
  if (!u) return bad("is not a URL");
  if (u->scheme() == "https") {
    return bad(
        "uses https, which hostcached does not speak to etcd (no TLS client); use "
        "http to a member or a local gateway on this host");
  }
  if (u->scheme() != "http") return bad("is not an http URL");
  if (u->has_userinfo()) return bad("holds user information (USER@); credentials do not go in it");
  if (u->host_type() == boost::urls::host_type::none || u->encoded_host().empty()) {
    return bad("names no host");
  }
  if (u->encoded_host().find('%') != std::string_view::npos) {
    return bad("has a percent-encoded host");
  }
  if (!u->has_port() || u->port().empty()) return bad("names no port");
  auto port = u->port_number();
  if (port == 0 || std::to_string(port) != u->port()) return bad("has no valid port (1-65535)");
  if (!(u->encoded_path().empty() || u->encoded_path() == "/")) return bad("has a path");
  if (u->has_query() || u->has_fragment()) return bad("has a query or fragment");
  EtcdEndpoint ep;
  ep.host = std::string(u->host_address());
  ep.port = std::string(u->port());
  ep.url = "http://" + std::string(u->encoded_host()) + ":" + ep.port;
  return ep;
}

// etcd's gateway writes int64 as strings; accept numbers too.
int64_t Int64Of(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (...) {
      return 0;
    }
  }
  return 0;
}

std::string PrefixEnd(std::string prefix) {
  // The smallest key greater than every key with the prefix.
  while (!prefix.empty()) {
    auto c = static_cast<unsigned char>(prefix.back());
    if (c < 0xff) {
      prefix.back() = static_cast<char>(c + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

Result<json> ParseAnswer(const std::string& body, const std::string& what) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Fail(ErrorCode::kInternal, "etcd answered " + what + " with something not JSON");
  }
  return j;
}

Result<EtcdTxn> TxnResult(const Result<std::string>& body) {
  if (!body) return tl::unexpected(body.error());
  auto j = ParseAnswer(*body, "a txn");
  if (!j) return tl::unexpected(j.error());
  EtcdTxn t;
  t.succeeded = j->value("succeeded", false);
  if (auto h = j->find("header"); h != j->end() && h->is_object()) {
    t.revision = Int64Of(*h, "revision");
  }
  return t;
}

json CompareMod(const std::string& key, int64_t mod_revision) {
  if (mod_revision == 0) {
    return {{"result", "EQUAL"},
            {"target", "CREATE"},
            {"key", Base64Encode(key)},
            {"create_revision", "0"}};
  }
  return {{"result", "EQUAL"},
          {"target", "MOD"},
          {"key", Base64Encode(key)},
          {"mod_revision", std::to_string(mod_revision)}};
}

std::vector<std::string_view> SplitCommas(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

Result<std::vector<EtcdEndpoint>> ParseEtcdUrls(const std::string& csv) {
  std::vector<EtcdEndpoint> out;
  for (auto part : SplitCommas(csv)) {
    auto t = Trim(part);
    if (t.empty()) {
      return Fail(ErrorCode::kInvalidArgument,
                  "cluster-etcd: an empty URL in '" + ToValidUtf8(csv) +
                      "'; give etcd members as http://HOST:PORT[,http://HOST:PORT...]");
    }
    auto ep = ParseOne(t);
    if (!ep) return tl::unexpected(ep.error());
    out.push_back(std::move(*ep));
  }
  if (out.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "cluster-etcd: no URL given; give etcd members as http://HOST:PORT[,...]");
  }
  return out;
}

std::string Base64Encode(const std::string& s) {
  std::string out(beast::detail::base64::encoded_size(s.size()), '\0');
  out.resize(beast::detail::base64::encode(out.data(), s.data(), s.size()));
  return out;
}

Result<std::string> Base64Decode(const std::string& s) {
  std::string out(beast::detail::base64::decoded_size(s.size()), '\0');
  auto [written, read] = beast::detail::base64::decode(out.data(), s.data(), s.size());
  // decode stops at the padding: only '=' may follow, to a multiple of 4.
  std::string_view rest = std::string_view(s).substr(read);
  if (s.size() % 4 != 0 || rest.size() > 2 || rest.find_first_not_of('=') != rest.npos) {
    return Fail(ErrorCode::kInternal, "etcd sent invalid base64");
  }
  out.resize(written);
  return out;
}

EtcdClient::EtcdClient(std::vector<EtcdEndpoint> endpoints, std::chrono::milliseconds timeout)
    : endpoints_(std::move(endpoints)), timeout_(timeout) {}

std::string EtcdClient::Describe() const {
  std::string out;
  for (const auto& e : endpoints_) out += (out.empty() ? "" : ", ") + e.url;
  return out;
}

Result<std::string> EtcdClient::Post(const std::string& path, const std::string& body) {
  std::lock_guard lock(*mu_);
  std::string last;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    size_t n = (preferred_ + i) % endpoints_.size();
    const auto& ep = endpoints_[n];
    try {
      asio::io_context ioc;
      asio::ip::tcp::resolver resolver(ioc);
      beast::tcp_stream stream(ioc);
      stream.expires_after(timeout_);
      auto addrs = resolver.resolve(ep.host, ep.port);
      stream.connect(addrs);
      bhttp::request<bhttp::string_body> req{bhttp::verb::post, path, 11};
      req.set(bhttp::field::host, ep.host + ":" + ep.port);
      req.set(bhttp::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
      stream.expires_after(timeout_);
      bhttp::write(stream, req);
      beast::flat_buffer buf;
      bhttp::response_parser<bhttp::string_body> parser;
      parser.body_limit(64 << 20);
      bhttp::read(stream, buf, parser);
      beast::error_code ec;
      stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
      auto& res = parser.get();
      if (res.result() != bhttp::status::ok) {
        last = ep.url + " answered " + std::to_string(res.result_int()) + ": " +
               ToValidUtf8(res.body().substr(0, 300));
        continue;
      }
      preferred_ = n;
      return std::move(res.body());
    } catch (const boost::system::system_error& e) {
      last = ep.url + ": " + e.code().message();
    } catch (const std::exception& e) {
      last = ep.url + ": " + e.what();
    }
  }
  return Fail(ErrorCode::kUnavailable,
              "etcd at " + Describe() + " is unreachable (" + ToValidUtf8(last) + ")");
}

Result<EtcdRange> EtcdClient::RangePrefix(const std::string& prefix) {
  json req{{"key", Base64Encode(prefix)}, {"range_end", Base64Encode(PrefixEnd(prefix))}};
  auto body = Post("/v3/kv/range", req.dump());
  if (!body) return tl::unexpected(body.error());
  auto j = ParseAnswer(*body, "a range");
  if (!j) return tl::unexpected(j.error());
  EtcdRange r;
  if (auto h = j->find("header"); h != j->end() && h->is_object()) {
    r.revision = Int64Of(*h, "revision");
  }
  if (auto kvs = j->find("kvs"); kvs != j->end() && kvs->is_array()) {
    for (const auto& kv : *kvs) {
      if (!kv.is_object()) continue;
      auto k = Base64Decode(kv.value("key", ""));
      auto v = Base64Decode(kv.value("value", ""));
      if (!k || !v) return Fail(ErrorCode::kInternal, "etcd sent a key or value not in base64");
      r.kvs.push_back({std::move(*k), std::move(*v), Int64Of(kv, "create_revision"),
                       Int64Of(kv, "mod_revision")});
    }
  }
  return r;
}

Result<EtcdTxn> EtcdClient::PutIf(const std::string& key, const std::string& value,
                                  int64_t mod_revision) {
  json req{{"compare", json::array({CompareMod(key, mod_revision)})},
           {"success",
            json::array({json{
                {"request_put", {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}}}}})}};
  return TxnResult(Post("/v3/kv/txn", req.dump()));
}

Result<EtcdTxn> EtcdClient::DeleteIf(const std::string& key, int64_t mod_revision) {
  json req{
      {"compare", json::array({CompareMod(key, mod_revision)})},
      {"success", json::array({json{{"request_delete_range", {{"key", Base64Encode(key)}}}}})}};
  return TxnResult(Post("/v3/kv/txn", req.dump()));
}

}  // namespace hc::cluster
