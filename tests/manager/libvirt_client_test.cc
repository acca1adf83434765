// RealLibvirtClient against libvirt's built-in test driver (test:///default,
// no libvirtd): the XML flags it passes, and the destination URIs it
// refuses to open.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "fakes.h"
#include "manager/libvirt/real_libvirt_client.h"

namespace hc::libvirt {
namespace {

class RealClientTest : public ::testing::Test {
protected:
  void SetUp() override { lv_.Start(); }
  void TearDown() override { lv_.Stop(); }
  RealLibvirtClient lv_{"test:///default"};
};

TEST_F(RealClientTest, SecretsAreReadOnlyWhenAsked) {
  ASSERT_TRUE(lv_.DefineXml(
      "<domain type='test'><name>hc-secret</name><memory "
      "unit='KiB'>65536</memory>"
      "<os><type arch='x86_64'>hvm</type></os><devices>"
      "<graphics type='vnc' port='-1' autoport='yes' passwd='vnc-s3cret'/>"
      "<graphics type='spice' autoport='yes' "
      "passwd='spice-s3cret'/></devices></domain>"));
  auto dom = lv_.LookupDomain("hc-secret");
  ASSERT_TRUE(dom) << dom.error().message;
  auto plain = lv_.GetXml(dom->uuid, kXmlInactive);
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(plain->find("s3cret"), std::string::npos) << *plain;
  auto secure = lv_.GetXml(dom->uuid, kXmlInactive | kXmlSecure);
  ASSERT_TRUE(secure) << secure.error().message;
  EXPECT_NE(secure->find("vnc-s3cret"), std::string::npos) << *secure;
  EXPECT_NE(secure->find("spice-s3cret"), std::string::npos) << *secure;
  // Defined back from what was read with its secrets: they stay.
  ASSERT_TRUE(lv_.DefineXml(*secure));
  EXPECT_NE(
      lv_.GetXml(dom->uuid, kXmlInactive | kXmlSecure)->find("vnc-s3cret"),
      std::string::npos);
}

TEST_F(RealClientTest, ADestinationThatWouldRunAProgramIsNeverOpened) {
  const testing::ScratchDir dir("hc-lvclient-");
  const std::string marker = dir.path() + "/ran";
  const std::string prog = dir.path() + "/x";
  std::ofstream(prog) << "#!/bin/sh\ntouch " << marker << "\n";
  ASSERT_EQ(chmod(prog.c_str(), 0755), 0);
  auto dom = lv_.LookupDomain("test"); // test:///default's running domain
  ASSERT_TRUE(dom) << dom.error().message;
  for (const std::string &dest :
       {"qemu+ext:///system?command=" + prog,
        "qemu+ssh://localhost/system?command=" + prog,
        "qemu+ssh://localhost/system?netcat=" + prog}) {
    MigrateRequest req;
    req.destination = dest;
    auto s = lv_.Migrate(dom->uuid, req);
    ASSERT_FALSE(s) << dest;
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument) << s.error().message;
  }
  MigrateRequest elsewhere;
  elsewhere.destination = "qemu+unix:///system?socket=" + dir.path() + "/none";
  elsewhere.migrate_uri = "exec:" + prog;
  auto s = lv_.Migrate(dom->uuid, elsewhere);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument) << s.error().message;
  EXPECT_FALSE(std::filesystem::exists(marker))
      << "libvirt ran the destination's command";
}

} // namespace
} // namespace hc::libvirt
