// SSD tier files on disk: their state from the driver's superblocks (CRC-
// checked, the newest copy), the SSD roots.
// (The policy engine against fakes of libvirt with a model of QEMU's block
// graph, the QEMU tools and the clock, and a real SQLite store.)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <pugixml.hpp>

#include "hc-ssd.h"

#include "common/util.h"
#include "manager/core/ssd_files.h"
#include "manager_fixture.h"

namespace hc::core {
namespace {

using store::Compliance;

TEST_F(SsdTest, TheStateOfATierFileComesFromItsNewestSuperblock) {
  const SsdRoots roots = *SsdRoots::Make({root_});
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kMissing);
  ASSERT_TRUE(PrepareSsdFile(File(), 1 << 20, false, roots));
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  testing::WriteSsdSuperblockCopy(File(), 3, 1, Origin());
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kClean);
  testing::WriteSsdSuperblockCopy(File(), 4, 2, Origin());  // newer, in use
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen);
  EXPECT_FALSE(RemoveSsdFile(File(), roots));
  EXPECT_TRUE(std::filesystem::exists(File()));
  // Not resized either while it may hold data.
  ASSERT_TRUE(PrepareSsdFile(File(), 2 << 20, true, roots));
  EXPECT_EQ(std::filesystem::file_size(File()), 1u << 20);
  testing::WriteSsdSuperblockCopy(File(), 5, 1, Origin());  // closed cleanly since
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kClean);
  ASSERT_TRUE(PrepareSsdFile(File(), 2 << 20, true, roots));
  EXPECT_EQ(std::filesystem::file_size(File()), 2u << 20);
}

TEST(SsdRoots, SsdDirMustLieUnderOneCanonically) {
  const testing::ScratchDir root("hc-roots-");
  const testing::ScratchDir other("hc-roots-other-");
  auto roots = SsdRoots::Make({root.path(), "/var/lib/hostcache/ssd/"});
  ASSERT_TRUE(roots) << roots.error().message;
  EXPECT_EQ(roots->Describe(), root.path() + ", /var/lib/hostcache/ssd");
  EXPECT_EQ(*roots->Canonical(root.path() + "//tier/"), root.path() + "/tier");
  EXPECT_EQ(*roots->Canonical(root.path()), root.path());
  EXPECT_EQ(*roots->Canonical("/var/lib/hostcache/ssd/fast"), "/var/lib/hostcache/ssd/fast");
  // A link below the root is resolved, and where it leads is checked.
  const std::string in = root.path() + "/in", out = root.path() + "/out";
  std::filesystem::create_directory(root.path() + "/real");
  std::filesystem::create_directory_symlink(root.path() + "/real", in);
  std::filesystem::create_directory_symlink(other.path(), out);
  EXPECT_EQ(*roots->Canonical(in + "/tier"), root.path() + "/real/tier");
  for (const std::string& bad : {std::string("/etc"), std::string("/"), root.path() + "-x",
                                 root.path() + "/../etc", out, out + "/tier",
                                 std::string("relative/dir"), std::string("")}) {
    auto r = roots->Canonical(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find("ssd-root = DIR"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(root.path()), std::string::npos) << r.error().message;
  }
  EXPECT_NE(roots->Canonical(out).error().message.find("resolves to " + other.path()),
            std::string::npos);
  // Locate splits a stored (canonical) path.
  auto where = roots->Locate(root.path() + "/real/tier");
  ASSERT_TRUE(where);
  EXPECT_EQ(where->first, root.path());
  EXPECT_EQ(where->second, "real/tier");
  EXPECT_FALSE(roots->Locate("/etc/x"));
  for (const char* bad : {"relative", "/", "/a/../b", "/a,b"}) {
    EXPECT_FALSE(SsdRoots::Make({bad})) << bad;
  }
  EXPECT_FALSE(SsdRoots::Make({}));
  EXPECT_EQ(SsdRoots().Describe(), kDefaultSsdRoot);
}

// Corrupts one byte of the origin identity of superblock copy `copy`: its
// CRC no longer matches.
void CorruptSuperblockCopy(const std::string& path, int copy) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(copy * 4096 + 130);
  f.put('#');
}

TEST_F(SsdTest, ATierHandedOffByALiveMigrationHoldsCleanCopiesOnly) {
  ASSERT_TRUE(PrepareSsdFile(File(), 1 << 20, false, *SsdRoots::Make({root_})));
  testing::WriteSsdSuperblock(File(), 4, HC_SSD_STATE_HANDED_OFF, Origin());
  auto f = ReadSsdFile(File());
  EXPECT_EQ(f.state, SsdFileState::kClean);
  EXPECT_FALSE(f.unreadable);
  EXPECT_EQ(f.origin_id, Origin());
}

TEST_F(SsdTest, ATierIsReadWithTheDriversDecoderCrcChecked) {
  ASSERT_TRUE(PrepareSsdFile(File(), 1 << 20, false, *SsdRoots::Make({root_})));
  testing::WriteSsdSuperblockCopy(File(), 3, 1, Origin());  // copy 1
  testing::WriteSsdSuperblockCopy(File(), 4, 2, Origin());  // copy 0, newer, in use
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen);
  // A newer copy whose CRC fails (a torn superblock write) is not used: the
  // driver takes the other one too.
  CorruptSuperblockCopy(File(), 0);
  auto f = ReadSsdFile(File());
  EXPECT_EQ(f.state, SsdFileState::kClean);
  EXPECT_FALSE(f.unreadable);
  EXPECT_EQ(f.origin_id, Origin());
  // Neither copy valid: a damaged tier (the driver refuses it); it may hold
  // a journal, so it is never deleted or replaced.
  CorruptSuperblockCopy(File(), 1);
  f = ReadSsdFile(File());
  EXPECT_EQ(f.state, SsdFileState::kOpen);
  EXPECT_TRUE(f.unreadable);
  EXPECT_NE(f.problem.find("neither a hostcache superblock nor zeroes"), std::string::npos)
      << f.problem;
  EXPECT_FALSE(RemoveSsdFile(File(), *SsdRoots::Make({root_})));
  EXPECT_TRUE(std::filesystem::exists(File()));
  // Something else than a tier, not zeroes: the same.
  std::ofstream(File()) << std::string(8192, 'x');
  EXPECT_TRUE(ReadSsdFile(File()).unreadable);
}

}  // namespace
}  // namespace hc::core
