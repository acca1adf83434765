#include "manager/http/server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <spdlog/spdlog.h>

#include "common/util.h"

namespace hc::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using asio::ip::tcp;

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& ioc, asio::thread_pool& workers, Api& api, ServerOptions opts)
      : ioc(ioc), workers(workers), api(api), opts(opts), acceptor(ioc), accept_timer(ioc) {}

  // One connection.
  struct Conn {
    Conn(tcp::socket s, uint64_t id) : stream(std::move(s)), id(id) {}
    beast::tcp_stream stream;
    const uint64_t id;     // in the order connections were accepted
    bool evicted = false;  // closed to let a new connection in
  };
  // A request handed to a worker; shared with it.
  struct Job {
    explicit Job(asio::io_context& ioc) : timer(ioc) {}
    Request req;
    Response resp;
    asio::steady_timer timer;  // I/O thread: cancelled when the response is there
    bool done = false;         // I/O thread
    bool abandoned = false;    // I/O thread: answered with a 503 at the deadline
  };

  asio::awaitable<void> Accept();
  void Admit(tcp::socket socket);
  asio::awaitable<void> Session(std::shared_ptr<Conn> conn);
  asio::awaitable<Response> Run(Request req, const Admission& adm);
  Response Dispatch(const Request& req) { return api.Handle(req); }

  asio::io_context& ioc;
  asio::thread_pool& workers;
  Api& api;
  const ServerOptions opts;
  tcp::acceptor acceptor;
  asio::steady_timer accept_timer;  // the pause after an accept error
  asio::thread_pool light{1};       // the light routes (Admission::light)
  // Everything below: I/O thread only.
  bool stopping = false;
  uint64_t next_conn = 0;
  std::map<uint64_t, std::shared_ptr<Conn>> waiting;  // waiting for a request, oldest first
  size_t sessions = 0;                // open connections
  size_t closing = 0;                 // of them, evicted ones not ended yet
  size_t requests = 0;                // requests running or waiting for a worker
  bool at_limit = false;              // a connection-limit episode is going on (logged once)
  uint64_t evicted = 0, refused = 0;  // during that episode
  std::function<void()> drained;

  void SessionEnded(const Conn& c) {
    if (c.evicted) closing--;
    if (--sessions == 0 && drained) std::exchange(drained, nullptr)();
  }
};

namespace {

std::string Millis(std::chrono::milliseconds ms) {
  return ms.count() % 1000 == 0 ? std::to_string(ms.count() / 1000) + " s"
                                : std::to_string(ms.count()) + " ms";
}

bool ConnectionGone(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == beast::error::timeout || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ||
         ec == asio::error::broken_pipe;
}

}  // namespace

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
    impl->stopping = true;
    beast::error_code ec;
    impl->acceptor.close(ec);
    impl->accept_timer.cancel();
    for (auto& [_, c] : std::exchange(impl->waiting, {})) {
      c->stream.socket().shutdown(tcp::socket::shutdown_receive, ec);
    }
    if (impl->sessions == 0) {
      if (drained) drained();
    } else {
      impl->drained = std::move(drained);
    }
  });
}

asio::awaitable<void> HttpServer::Impl::Accept() {
  auto self = shared_from_this();
  auto pause = opts.accept_backoff;
  uint64_t failures = 0;
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (stopping || !acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // EMFILE and the like: the connection stays in the backlog, so an
      // immediate retry fails again at once.  Pause, log once.
      if (failures++ == 0) {
        spdlog::warn("cannot accept connections: {}; retrying after a pause of {} growing to "
                     "2 s (logged again when it works)",
                     ec.message(), Millis(pause));
      }
      accept_timer.expires_after(pause);
      co_await accept_timer.async_wait(asio::as_tuple(asio::use_awaitable));
      pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::seconds(2));
      continue;
    }
    if (failures > 0) {
      spdlog::info("accepting connections again after {} failed attempts", failures);
      failures = 0;
      pause = opts.accept_backoff;
    }
    Admit(std::move(socket));
  }
}

void HttpServer::Impl::Admit(tcp::socket socket) {
  if (sessions - closing >= opts.max_connections) {
    if (!at_limit) {
      at_limit = true;
      spdlog::warn("{} connections are open, the limit (max-connections): the connections that "
                   "have waited longest for a request are closed to let new ones in, and new "
                   "ones are refused while every connection has a request in progress",
                   sessions - closing);
    }
    if (waiting.empty()) {
      refused++;
      beast::error_code ec;
      socket.close(ec);
      return;
    }
    auto oldest = waiting.begin();
    oldest->second->evicted = true;
    closing++;
    evicted++;
    beast::error_code ec;
    oldest->second->stream.socket().close(ec);
    waiting.erase(oldest);
  } else if (at_limit) {
    spdlog::info("below the connection limit again; meanwhile {} waiting connection(s) were "
                 "closed and {} refused",
                 evicted, refused);
    at_limit = false;
    evicted = refused = 0;
  }
  auto conn = std::make_shared<Conn>(std::move(socket), next_conn++);
  sessions++;
  waiting[conn->id] = conn;
  asio::co_spawn(ioc, Session(std::move(conn)), asio::detached);
}

asio::awaitable<Response> HttpServer::Impl::Run(Request req, const Admission& adm) {
  if (adm.light) {
    co_return co_await asio::co_spawn(
        light, [this, &req]() -> asio::awaitable<Response> { co_return Dispatch(req); },
        asio::use_awaitable);
  }
  if (requests >= opts.max_requests) {
    Response r = Problem(503, "hostcached is busy: " + std::to_string(requests) +
                                  " requests are in progress, the most it takes; try again "
                                  "shortly");
    r.headers.emplace_back("Retry-After", "5");
    co_return r;
  }
  requests++;
  auto self = shared_from_this();
  auto job = std::make_shared<Job>(ioc);
  job->req = std::move(req);
  // Off the I/O thread: the API blocks on libvirt.
  asio::post(workers, [self, job] {
    Response r = self->Dispatch(job->req);
    asio::post(self->ioc, [self, job, r = std::move(r)]() mutable {
      self->requests--;
      job->done = true;
      if (job->abandoned) {
        spdlog::info("{} {} finished after its deadline: {}", job->req.method,
                     ToValidUtf8(job->req.target), r.status);
      }
      job->resp = std::move(r);
      job->timer.cancel();
    });
  });
  const bool deadline = !adm.unbounded && opts.request_timeout.count() > 0;
  if (deadline) {
    job->timer.expires_after(opts.request_timeout);
  } else {
    job->timer.expires_at(asio::steady_timer::time_point::max());
  }
  while (!job->done) {
    auto [ec] = co_await job->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (!ec && !job->done) break;  // the deadline passed
  }
  if (job->done) co_return std::move(job->resp);
  job->abandoned = true;
  spdlog::warn("{} {} has taken more than {}; answered 503, it goes on", job->req.method,
               ToValidUtf8(job->req.target), Millis(opts.request_timeout));
  Response r = Problem(503, "the request has taken more than " + Millis(opts.request_timeout) +
                                " and goes on in hostcached (a VM's QEMU or libvirtd may be "
                                "slow to answer); its outcome will be in the event log (GET "
                                "/api/v1/events) and the disk's compliance");
  r.headers.emplace_back("Retry-After", "30");
  co_return r;
}

asio::awaitable<void> HttpServer::Impl::Session(std::shared_ptr<Conn> conn) {
  auto self = shared_from_this();
  beast::tcp_stream& stream = conn->stream;
  const uint64_t id = conn->id;
  beast::flat_buffer buffer;
  for (;;) {
    if (stopping || conn->evicted) break;
    waiting[id] = conn;
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(boost::none);  // checked once the request is admitted
    stream.expires_after(opts.header_timeout);
    auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, parser,
                                                     asio::as_tuple(asio::use_awaitable));
    waiting.erase(id);
    if (ConnectionGone(ec) || conn->evicted) break;
    Response resp;
    bool keep_alive = false;
    unsigned version = 11;
    if (ec) {
      resp = Problem(400, "malformed HTTP request: " + ec.message());
    } else {
      const auto& head = parser.get();
      version = head.version();
      Request req;
      req.method = std::string(head.method_string());
      req.target = std::string(head.target());
      req.authorization = std::string(head[bhttp::field::authorization]);
      Admission adm = api.Admit(req);
      const auto length = parser.content_length();
      if (adm.response) {
        // No body is read for a request refused on its headers: the
        // connection ends after the answer unless there is none.
        resp = std::move(*adm.response);
        keep_alive = head.keep_alive() && parser.is_done();
      } else if (length && *length > opts.body_limit) {
        resp = Problem(
            413, "the request body is larger than " + std::to_string(opts.body_limit) + " bytes");
      } else {
        bool read = true;
        if (!parser.is_done()) {
          parser.body_limit(opts.body_limit);  // a chunked body
          if (beast::iequals(head[bhttp::field::expect], "100-continue")) {
            bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, version};
            stream.expires_after(opts.timeout);
            auto [cec, cn] =
                co_await bhttp::async_write(stream, cont, asio::as_tuple(asio::use_awaitable));
            if (cec) break;
          }
          stream.expires_after(opts.timeout);
          auto [bec, bn] = co_await bhttp::async_read(stream, buffer, parser,
                                                      asio::as_tuple(asio::use_awaitable));
          if (ConnectionGone(bec)) break;
          if (bec == bhttp::error::body_limit) {
            resp = Problem(413, "the request body is larger than " +
                                    std::to_string(opts.body_limit) + " bytes");
            read = false;
          } else if (bec) {
            resp = Problem(400, "malformed HTTP request: " + bec.message());
            read = false;
          }
        }
        if (read) {
          keep_alive = parser.get().keep_alive();
          req.body = std::move(parser.get().body());
          resp = co_await Run(std::move(req), adm);
        }
      }
    }
    if (stopping) keep_alive = false;
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(resp.status), version};
    res.set(bhttp::field::server, "hostcached");
    if (resp.status != 204) res.set(bhttp::field::content_type, resp.content_type);
    res.set(bhttp::field::cache_control, "no-store");
    for (const auto& [k, v] : resp.headers) res.set(k, v);
    res.body() = std::move(resp.body);
    res.keep_alive(keep_alive);
    res.prepare_payload();
    stream.expires_after(opts.timeout);
    auto [wec, wn] = co_await bhttp::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !keep_alive) break;
  }
  waiting.erase(id);
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.close();
  SessionEnded(*conn);
}

}  // namespace hc::http
