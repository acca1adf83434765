// StaticFiles: the browser dashboard's built files (web/, built by
// scripts/build-web.sh), served by hostcached at / on the API's listener.
//
// Only regular files inside the root directory are served.  A request path
// is a sequence of names made of [A-Za-z0-9._-] that do not start with a
// dot; anything else (percent-encoding of any kind, so encoded dots,
// slashes and NULs too; "." and ".."; empty segments; backslashes) is 404
// without touching the file system.  The path is opened one name at a time
// under the root with O_NOFOLLOW, so a symbolic link inside the root is
// never followed (the root itself may be one: the administrator names it).
// A directory is never listed: "/" is index.html, any other directory 404.
//
// Cache headers: files under assets/ have content hashes in their names
// (the build guarantees it) and are "immutable"; everything else, index.html
// first, is "no-cache".  HTML gets a Content-Security-Policy that allows
// only this origin (no inline script), and every file nosniff.
//
// Thread-safety: Serve() is const and thread-safe; it reads the files on
// each request, so a rebuilt dashboard is served without a restart.
#pragma once

#include <string>

#include "manager/http/api.h"

namespace hc::http {

class StaticFiles {
 public:
  explicit StaticFiles(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  // Whether the root holds an index.html (a built dashboard).
  bool Available() const;

  // The response to `req` (a GET of a path outside /api/).
  Response Serve(const Request& req) const;

  // The Content-Type for a file name (by extension).
  static std::string ContentType(const std::string& name);

 private:
  std::string root_;
};

}  // namespace hc::http
