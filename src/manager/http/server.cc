#include "manager/http/server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <mutex>
#include <set>
#include <spdlog/spdlog.h>

namespace hc::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using asio::ip::tcp;

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& ioc, asio::thread_pool& workers, Api& api, ServerOptions opts)
      : ioc(ioc), workers(workers), api(api), opts(opts), acceptor(ioc) {}

  asio::awaitable<void> Accept();
  asio::awaitable<void> Session(tcp::socket socket);
  Response Dispatch(bhttp::request<bhttp::string_body>& req);

  asio::io_context& ioc;
  asio::thread_pool& workers;
  Api& api;
  const ServerOptions opts;
  tcp::acceptor acceptor;
  std::mutex mu;
  bool stopping = false;                        // guarded by mu
  std::set<std::shared_ptr<beast::tcp_stream>> idle;  // guarded by mu: waiting for a request
  int sessions = 0;                  // I/O thread only
  std::function<void()> drained;     // I/O thread only

  void SessionEnded() {
    if (--sessions == 0 && drained) std::exchange(drained, nullptr)();
  }
};

Result<std::pair<std::string, uint16_t>> ParseListen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return Fail(ErrorCode::kInvalidArgument,
                "--listen must be HOST:PORT (e.g. 127.0.0.1:8470), not '" + listen + "'");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned long port = 0;
  try {
    size_t used = 0;
    port = std::stoul(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1 || port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    return Fail(ErrorCode::kInvalidArgument, "the port in --listen '" + listen + "' is not 0..65535");
  }
  return std::make_pair(host, static_cast<uint16_t>(port));
}

HttpServer::HttpServer(asio::io_context& ioc, asio::thread_pool& workers, Api& api,
                       ServerOptions opts)
    : impl_(std::make_shared<Impl>(ioc, workers, api, opts)) {}

HttpServer::~HttpServer() = default;

Status HttpServer::Listen(const std::string& listen) {
  auto hp = ParseListen(listen);
  if (!hp) return tl::unexpected(hp.error());
  beast::error_code ec;
  auto addr = asio::ip::make_address(hp->first, ec);
  if (ec) {
    return Fail(ErrorCode::kInvalidArgument,
                "--listen needs an IP address, not '" + hp->first + "'");
  }
  tcp::endpoint ep(addr, hp->second);
  auto& acc = impl_->acceptor;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Fail(ErrorCode::kUnavailable, "cannot listen on " + listen + ": " + ec.message());
  }
  asio::co_spawn(impl_->ioc, impl_->Accept(), asio::detached);
  return {};
}

tcp::endpoint HttpServer::Endpoint() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec);
}

void HttpServer::Stop(std::function<void()> drained) {
  auto impl = impl_;
  asio::post(impl->ioc, [impl, drained = std::move(drained)]() mutable {
    std::set<std::shared_ptr<beast::tcp_stream>> idle;
    {
      std::lock_guard lock(impl->mu);
      impl->stopping = true;
      idle.swap(impl->idle);
    }
    beast::error_code ec;
    impl->acceptor.close(ec);
    for (auto& s : idle) s->socket().shutdown(tcp::socket::shutdown_receive, ec);
    if (impl->sessions == 0) {
      if (drained) drained();
    } else {
      impl->drained = std::move(drained);
    }
  });
}

asio::awaitable<void> HttpServer::Impl::Accept() {
  auto self = shared_from_this();
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      spdlog::warn("accept: {}", ec.message());
      continue;
    }
    asio::co_spawn(ioc, Session(std::move(socket)), asio::detached);
  }
}

Response HttpServer::Impl::Dispatch(bhttp::request<bhttp::string_body>& req) {
  Request r;
  r.method = std::string(req.method_string());
  r.target = std::string(req.target());
  r.authorization = std::string(req[bhttp::field::authorization]);
  r.body = std::move(req.body());
  return api.Handle(r);
}

asio::awaitable<void> HttpServer::Impl::Session(tcp::socket socket) {
  auto self = shared_from_this();
  auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
  beast::flat_buffer buffer;
  sessions++;
  for (;;) {
    {
      std::lock_guard lock(mu);
      if (stopping) break;
      idle.insert(stream);
    }
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(opts.body_limit);
    parser.header_limit(16 * 1024);
    stream->expires_after(opts.timeout);
    auto [ec, n] = co_await bhttp::async_read(*stream, buffer, parser,
                                              asio::as_tuple(asio::use_awaitable));
    {
      std::lock_guard lock(mu);
      idle.erase(stream);
    }
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
        ec == beast::error::timeout || ec == asio::error::connection_reset) {
      break;
    }
    Response resp;
    bool keep_alive = false;
    unsigned version = 11;
    if (ec == bhttp::error::body_limit) {
      resp = Problem(413, "the request body is larger than " + std::to_string(opts.body_limit) +
                              " bytes");
    } else if (ec) {
      resp = Problem(400, "malformed HTTP request: " + ec.message());
    } else {
      auto& req = parser.get();
      keep_alive = req.keep_alive();
      version = req.version();
      // Off the I/O thread: the API blocks on libvirt.
      resp = co_await asio::co_spawn(
          workers, [this, &req]() -> asio::awaitable<Response> { co_return Dispatch(req); },
          asio::use_awaitable);
    }
    {
      std::lock_guard lock(mu);
      if (stopping) keep_alive = false;
    }
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(resp.status), version};
    res.set(bhttp::field::server, "hostcached");
    if (resp.status != 204) res.set(bhttp::field::content_type, resp.content_type);
    res.set(bhttp::field::cache_control, "no-store");
    for (const auto& [k, v] : resp.headers) res.set(k, v);
    res.body() = std::move(resp.body);
    res.keep_alive(keep_alive);
    res.prepare_payload();
    stream->expires_after(opts.timeout);
    auto [wec, wn] = co_await bhttp::async_write(*stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !keep_alive) break;
  }
  beast::error_code ec;
  stream->socket().shutdown(tcp::socket::shutdown_send, ec);
  stream->close();
  SessionEnded();
}

}  // namespace hc::http
