// The dashboard's static files: content types, cache headers, and nothing
// outside the root served (traversal, symbolic links, encodings, NULs,
// hidden files, directories, special files).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/http/static_files.h"

namespace hc::http {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSecret = "SECRET-OUTSIDE-THE-ROOT";

void Write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string Header(const Response& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

class StaticFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(dir_.path()) / "web";
    Write(root_ / "index.html", "<!doctype html><title>hostcache</title>");
    Write(root_ / "assets" / "app-ABCD1234.js", "console.log(1)");
    Write(root_ / "assets" / "app-ABCD1234.css", "body{}");
    Write(root_ / "favicon.svg", "<svg/>");
    Write(root_ / "notes.weird", "x");
    Write(root_ / ".hidden", kSecret);
    Write(root_ / "sub" / "inner.txt", "inner");
    Write(fs::path(dir_.path()) / "secret.txt", kSecret);
    fs::create_symlink("../secret.txt", root_ / "link.txt");
    fs::create_symlink("..", root_ / "up");
    fs::create_directory_symlink(fs::path(dir_.path()), root_ / "assets" / "outside");
    ASSERT_EQ(::mkfifo((root_ / "fifo.txt").c_str(), 0600), 0);
  }
  Response Get(const std::string& target, const std::string& method = "GET") {
    StaticFiles web(root_.string());
    return web.Serve(Request{method, target, "", ""});
  }

  testing::ScratchDir dir_{"hcweb-"};
  fs::path root_;
};

TEST_F(StaticFilesTest, ServesIndexAndAssetsWithTypesAndCacheHeaders) {
  for (const char* t : {"/", "/index.html", "/?x=1"}) {
    auto r = Get(t);
    ASSERT_EQ(r.status, 200) << t;
    EXPECT_EQ(r.body, "<!doctype html><title>hostcache</title>");
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
    EXPECT_EQ(Header(r, "Cache-Control"), "no-cache");
    EXPECT_EQ(Header(r, "X-Content-Type-Options"), "nosniff");
    EXPECT_NE(Header(r, "Content-Security-Policy").find("script-src 'self'"), std::string::npos);
    EXPECT_EQ(Header(r, "Content-Security-Policy").find("unsafe"), std::string::npos);
  }
  auto js = Get("/assets/app-ABCD1234.js");
  ASSERT_EQ(js.status, 200);
  EXPECT_EQ(js.body, "console.log(1)");
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(Header(js, "Cache-Control"), "public, max-age=31536000, immutable");
  EXPECT_EQ(Header(js, "Content-Security-Policy"), "");
  auto css = Get("/assets/app-ABCD1234.css");
  EXPECT_EQ(css.content_type, "text/css; charset=utf-8");
  auto svg = Get("/favicon.svg");
  EXPECT_EQ(svg.content_type, "image/svg+xml");
  EXPECT_EQ(Header(svg, "Cache-Control"), "no-cache");  // not under assets/: not hashed
  EXPECT_EQ(Get("/notes.weird").content_type, "application/octet-stream");
  EXPECT_EQ(Get("/sub/inner.txt").body, "inner");
}

TEST_F(StaticFilesTest, NothingOutsideTheRootAndNoListings) {
  const char* refused[] = {
      "/../secret.txt",        "/%2e%2e/secret.txt",   "/%2E%2E/secret.txt",
      "/..%2fsecret.txt",      "/assets/..%2f..%2fsecret.txt",
      "/assets/../../secret.txt", "/./index.html",    "/link.txt",
      "/up/secret.txt",        "/assets/outside/secret.txt",
      "/.hidden",              "/%2ehidden",           "/sub",
      "/sub/",                 "/assets/",             "//index.html",
      "/index.html%00",        "/index.html%00.png",   "/%69ndex.html",
      "/a\\..\\secret.txt",    "/..\\secret.txt",      "/fifo.txt",
      "/nope.js",              "index.html",           "",
      "http://x/index.html",   "/sub/inner.txt/",      "/index.html/.",
  };
  for (const char* t : refused) {
    auto r = Get(t);
    EXPECT_EQ(r.status, 404) << t;
    EXPECT_EQ(r.body.find(kSecret), std::string::npos) << t;
    EXPECT_EQ(r.content_type, "application/problem+json") << t;
  }
  // A NUL in the target itself (not encoded).
  auto nul = Get(std::string("/index.html\0.png", 16));
  EXPECT_EQ(nul.status, 404);
  // Too deep or too long.
  std::string deep;
  for (int i = 0; i < 20; i++) deep += "/sub";
  EXPECT_EQ(Get(deep + "/inner.txt").status, 404);
  EXPECT_EQ(Get("/" + std::string(300, 'a')).status, 404);
}

TEST_F(StaticFilesTest, OnlyGet) {
  for (const char* m : {"POST", "PUT", "DELETE", "HEAD", "OPTIONS"}) {
    auto r = Get("/index.html", m);
    EXPECT_EQ(r.status, 405) << m;
    EXPECT_EQ(Header(r, "Allow"), "GET");
  }
}

TEST_F(StaticFilesTest, AMissingDashboardSaysHowToBuildIt) {
  StaticFiles none((fs::path(dir_.path()) / "no-such-dir").string());
  EXPECT_FALSE(none.Available());
  auto r = none.Serve(Request{"GET", "/", "", ""});
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("--web-dir"), std::string::npos) << r.body;
  fs::remove(root_ / "index.html");
  StaticFiles empty(root_.string());
  EXPECT_FALSE(empty.Available());
  auto e = empty.Serve(Request{"GET", "/", "", ""});
  EXPECT_EQ(e.status, 404);
  EXPECT_NE(e.body.find("has no index.html"), std::string::npos) << e.body;
  EXPECT_TRUE(StaticFiles(root_.string()).Serve(Request{"GET", "/favicon.svg", "", ""}).status ==
              200);
}

TEST_F(StaticFilesTest, ARootThatIsASymlinkIsFollowed) {
  // The administrator names the root; only links inside it are refused.
  fs::create_directory_symlink(root_, fs::path(dir_.path()) / "web-link");
  StaticFiles web((fs::path(dir_.path()) / "web-link").string());
  EXPECT_TRUE(web.Available());
  EXPECT_EQ(web.Serve(Request{"GET", "/", "", ""}).status, 200);
}

}  // namespace
}  // namespace hc::http
