// HttpServer: the REST API on Boost.Beast, after Beast's
// http_server_awaitable and advanced_server examples: one coroutine per
// connection, a timeout on every read and write, a body limit, keep-alive,
// and a graceful stop that lets requests in progress finish.
//
// Clients without the token cannot wear it down: a request's line and
// headers are read first (with a short timeout) and a request that lacks
// the token, or names no route, is answered without reading its body; at
// most max_connections connections are open (at the limit, the one that
// has waited longest for a request is closed to let a new one in, and when
// every connection has a request in progress new ones are refused); an
// accept error (EMFILE) is retried after a growing pause, logged once; at
// most max_requests requests run or wait for a worker (503 beyond); a
// handler that takes longer than request_timeout gets a 503 sent for it
// (it goes on, its outcome is logged).  /health and /metrics never call
// libvirt and run on a thread of their own, so they answer while every
// worker is busy.
//
// Threads: the server's coroutines run on the io_context given to it, which
// exactly one thread must run (hostcached's I/O thread); Api::Handle runs
// on the worker pool, because it blocks on libvirt, or for the light
// routes on the server's own thread.  Stop() may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/error.h"
#include "manager/http/api.h"

namespace hc::http {

struct ServerOptions {
  std::chrono::milliseconds timeout{30000};         // per read of a body, write of a response
  std::chrono::milliseconds header_timeout{10000};  // for a request's line and headers
  // For a handler's answer (0: none); the handler itself goes on.  The
  // migrate route has none: it lasts as long as the migration.
  std::chrono::milliseconds request_timeout{300000};
  std::chrono::milliseconds accept_backoff{100};  // first pause after an accept error (to 2 s)
  size_t body_limit = 1 << 20;   // bytes of request body
  size_t max_connections = 64;   // open connections at most
  size_t max_requests = 64;      // requests running or waiting for a worker at most
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& ioc, boost::asio::thread_pool& workers, Api& api,
             ServerOptions opts = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting.  `listen` is "HOST:PORT" (port 0 = any).
  Status Listen(const std::string& listen);
  // The bound endpoint (after Listen).
  boost::asio::ip::tcp::endpoint Endpoint() const;
  // Stops accepting, ends idle connections; requests in flight finish.
  // `drained` runs on the I/O thread once the last connection is gone.
  void Stop(std::function<void()> drained = nullptr);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Splits "HOST:PORT" ("[::1]:8470" for IPv6).
Result<std::pair<std::string, uint16_t>> ParseListen(const std::string& listen);

}  // namespace hc::http
