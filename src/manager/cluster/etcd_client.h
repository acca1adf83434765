// EtcdClient: the few etcd v3 calls the cluster catalogue needs, through
// etcd's JSON gRPC gateway (POST /v3/kv/range, /v3/kv/txn; keys and values
// base64), over plain HTTP/1.1 with Boost.Beast.  No watch: the catalogue
// polls a prefix with the revision (manager/cluster/etcd_catalogue.h).
//
// Endpoints are tried in order, starting with the last one that answered;
// a request fails with kUnavailable only when none answers, its message
// naming the URLs and the last error.
//
// Ownership: values.  Thread-safety: one EtcdClient may be called from any
// thread; calls are serialised by an internal mutex (each makes its own
// connection).  Movable (not while another thread uses it).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"

namespace hc::cluster {

struct EtcdEndpoint {
  std::string url;   // as given, without a trailing '/'
  std::string host;  // name or address (IPv6 without brackets)
  std::string port;
};

// "http://HOST:PORT[,http://HOST:PORT...]" -> endpoints.  Only http with an
// explicit host and port; no userinfo, path, query or fragment.  https is
// refused (hostcached speaks no TLS to etcd; see docs/MANAGER.md).
Result<std::vector<EtcdEndpoint>> ParseEtcdUrls(const std::string& csv);

struct EtcdKeyValue {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0;
};

struct EtcdRange {
  int64_t revision = 0;  // the store's revision when read
  std::vector<EtcdKeyValue> kvs;
};

struct EtcdTxn {
  bool succeeded = false;  // the compare held (the write was done)
  int64_t revision = 0;    // the store's revision after the txn
};

class EtcdClient {
 public:
  EtcdClient(std::vector<EtcdEndpoint> endpoints,
             std::chrono::milliseconds timeout = std::chrono::seconds(3));

  // Every key starting with `prefix`.
  Result<EtcdRange> RangePrefix(const std::string& prefix);
  // Writes key=value if the key's mod_revision is `mod_revision`
  // (0: only if the key does not exist).
  Result<EtcdTxn> PutIf(const std::string& key, const std::string& value, int64_t mod_revision);
  // Deletes key if its mod_revision is `mod_revision`.
  Result<EtcdTxn> DeleteIf(const std::string& key, int64_t mod_revision);

  // "http://a:2379, http://b:2379".
  std::string Describe() const;
  const std::vector<EtcdEndpoint>& endpoints() const { return endpoints_; }

 private:
  // POST `path` with a JSON body to the endpoints in turn; the answer's
  // body (a 200 with JSON), or kUnavailable.
  Result<std::string> Post(const std::string& path, const std::string& body);

  std::vector<EtcdEndpoint> endpoints_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>();  // (movable)
  size_t preferred_ = 0;                                             // guarded by *mu_
};

// For tests and the catalogue: base64 of etcd's JSON gateway.
std::string Base64Encode(const std::string& s);
Result<std::string> Base64Decode(const std::string& s);

}  // namespace hc::cluster
