// HttpServer: the REST API on Boost.Beast, after Beast's
// http_server_awaitable and advanced_server examples: one coroutine per
// connection, a timeout on every read and write, a body limit, keep-alive,
// and a graceful stop that lets requests in progress finish.
//
// Threads: the server's coroutines run on the io_context given to it (one
// I/O thread in hostcached); Api::Handle runs on the worker pool, because
// it blocks on libvirt.  Stop() may be called from any thread.
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
  std::chrono::seconds timeout{30};  // per read/write of a request or response
  size_t body_limit = 1 << 20;       // bytes of request body
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
