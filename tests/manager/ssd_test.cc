// The SSD tier through the Manager: the tier file made, attached live and in
// the definition, emptied, replaced, recorded once formatted, lost and stale
// tiers, forgetting.
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

TEST_F(SsdTest, TheTierFileIsCreatedAndAttachedLiveAndInTheDefinition) {
  auto a = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  // The directory (0700) and a sparse file of ssd-size bytes.
  struct stat ds, fs;
  ASSERT_EQ(stat(dir_.c_str(), &ds), 0);
  EXPECT_EQ(ds.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(File().c_str(), &fs), 0) << File();
  EXPECT_EQ(fs.st_size, 1 << 20);
  EXPECT_EQ(fs.st_mode & 0777, 0600u);
  // The running filter has the file as its ssd child, and the disk's own
  // origin-id.
  auto& hc = Qemu().nodes["hc-vda"];
  EXPECT_EQ(hc.ssd, "hc-vda-ssd");
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  EXPECT_EQ(hc.options["origin-id"], std::string(kWeb) + "/vda");
  // The definition: the same child inline in the -blockdev.
  auto p = Persistent();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p["vda"].options["ssd"],
            (json{{"driver", "file"}, {"filename", File()}, {"node-name", "hc-vda-ssd"}}));
  EXPECT_EQ(p["vda"].options["origin-id"], std::string(kWeb) + "/vda");
  EXPECT_EQ(mgr_->Budget().ssd_used, 1u << 20);
}

TEST_F(SsdTest, FilesBelongToTheUserQemuRunsAs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  lv_.qemu_owner = libvirt::ProcessOwner{64055, 64056};
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  struct stat ds, fs;
  ASSERT_EQ(stat(dir_.c_str(), &ds), 0);
  ASSERT_EQ(stat(File().c_str(), &fs), 0);
  EXPECT_EQ(ds.st_uid, 64055u);
  EXPECT_EQ(ds.st_gid, 64056u);
  EXPECT_EQ(fs.st_uid, 64055u);
  EXPECT_EQ(fs.st_gid, 64056u);
  // A file found with another owner is given to QEMU's user.
  ASSERT_EQ(chown(File().c_str(), 0, 0), 0);
  mgr_->CheckVm(kWeb);
  ASSERT_EQ(stat(File().c_str(), &fs), 0);
  EXPECT_EQ(fs.st_uid, 64055u);
}

TEST_F(SsdTest, AnExistingTierFileIsReusedByAStartThroughTheDefinition) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  EXPECT_EQ(CachedBlock(), "cached block") << "a warm tier must survive";
  // Recorded as the driver's (an upgraded database learns it the same
  // way), and opened with ssd-create off.
  auto t = *store_->GetSsdTier(kWeb, "vda");
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->formatted);
  EXPECT_EQ(t->path, File());
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The VM starts from its definition: the filter is there from the first
  // I/O, so nothing the guest writes escapes it; the tier stays warm.
  StartThroughTheDefinition(4);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  EXPECT_EQ(CachedBlock(), "cached block");
  EXPECT_EQ(Count("ssd-emptied"), 0);
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-add"), 0);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
}

TEST_F(SsdTest, ALiveInsertionEmptiesATierClosedCleanlyFirst) {
  // The VM has run without the filter: the guest may have written to the
  // disk since the tier's copies were made.
  WarmTier();
  auto a = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  EXPECT_EQ(CachedBlock(), std::string(12, '\0')) << "stale copies must not be served";
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  EXPECT_EQ(Count("ssd-emptied"), 1);
  // The driver formatted the fresh file: recorded, and the definition
  // opens it with ssd-create off as after any live insertion.
  ASSERT_TRUE(Tier());
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The running filter's own tier is not emptied again.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(SsdTest, ATierEmptiedForAFailedInsertionIsOpenedWithSsdCreateOn) {
  WarmTier();
  Qemu().fail["blockdev-add"] = "fake: blockdev-add failed";
  auto a = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  // The next start formats the blank file (ssd-create off would refuse it).
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  EXPECT_EQ(Count("ssd-lost"), 0);
}

// The VM ran from its definition's start without the filter (edited by
// hand, say) and the filter could not be put in live: the warm tier left
// with the disk would serve stale copies at the next start through the
// definition, so it is emptied while the VM runs without it.
TEST_F(SsdTest, ACleanTierTheRunningVmDoesNotHaveOpenIsEmptied) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The driver formats the tier in the blockdev-add, the device refuses
  // the switch, and the blockdev-del that undoes it closes the tier
  // cleanly: a formatted tier in state 1 that no filter has open.
  lv_.Add(kWeb, "web", lv_.domains[kWeb].inactive_xml, TestData("web.live.xml"));
  Qemu().fail["qom-set"] = "fake: the device refuses the switch";
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kStarted);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(Qemu().devs[kVdaDev], "libvirt-4-format");
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-del"), 1);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  EXPECT_EQ(CachedBlock(), std::string(12, '\0'));
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1) << "one event for one check";
  EXPECT_EQ(Count("ssd-lost"), 0);
}

TEST_F(SsdTest, ACleanTierIsEmptiedWhileTheRunningVmLacksItsDisk) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // The VM runs without vda (hot-unplugged): nothing is inserted, and the
  // guest may write to the disk through another path meanwhile.
  std::string live = TestData("web.live.xml");
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(live.c_str()));
  auto vda = doc.select_node("//disk[target/@dev='vda']").node();
  ASSERT_TRUE(vda);
  vda.parent().remove_child(vda);
  std::ostringstream out;
  doc.save(out);
  lv_.Add(kWeb, "web", lv_.domains[kWeb].inactive_xml, out.str());
  mgr_->OnLifecycle(kWeb, "web", libvirt::Lifecycle::kStarted);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant) << a->reason;
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-add"), 0);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  // A blank tier is not emptied again.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Count("ssd-emptied"), 1);
}

TEST_F(SsdTest, ARunningFiltersCleanTierIsKept) {
  lv_.domains[kWeb].active = false;
  WarmTier();
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StartThroughTheDefinition(4);
  // Even in state 1 (as far as hostcached reads it), a tier the running
  // VM has open is the running filter's: not emptied.
  testing::WriteSsdSuperblock(File(), 5, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  EXPECT_EQ(CachedBlock(), "cached block");
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kClean);
  EXPECT_EQ(Count("ssd-emptied"), 0);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
}

TEST_F(SsdTest, EditingThePolicyReopensWithTheSsdChildAndANewSizeReplacesIt) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().log.clear();
  auto p = *store_->GetPolicy("ssd");
  p.rules.mode = policy::CacheMode::kWriteAround;
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users) << users.error().message;
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  auto& log = Qemu().log;
  EXPECT_NE(std::find(log.begin(), log.end(), "blockdev-reopen"), log.end());
  EXPECT_EQ(std::find(log.begin(), log.end(), "blockdev-del"), log.end());
  EXPECT_EQ(Qemu().nodes["hc-vda"].ssd, "hc-vda-ssd");
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["mode"], "write-around");
  // A new ssd-size cannot be reopened: the filter is replaced, the file
  // made the new size while no filter has it open.
  log.clear();
  p.rules.ssd_size = 2 << 20;
  users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  EXPECT_NE(std::find(log.begin(), log.end(), "blockdev-del"), log.end());
  EXPECT_EQ(std::filesystem::file_size(File()), 2u << 20);
  EXPECT_EQ(Qemu().nodes["hc-vda"].ssd, "hc-vda-ssd");
  // Dropping the tier: replaced without it, the file deleted.
  p.rules.ssd_size = 0;
  users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kCompliant) << (*users)[0].reason;
  EXPECT_TRUE(Qemu().nodes["hc-vda"].ssd.empty());
  EXPECT_EQ(Qemu().nodes.count("hc-vda-ssd"), 0u);
  EXPECT_FALSE(std::filesystem::exists(File()));
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"));
}

TEST_F(SsdTest, WriteBackRemovalReopensWithTheSsdChildThenTheFileGoes) {
  CreatePolicy("ssd-wb", json{{"mode", "write-back"}, {"ssd-size", "1M"}, {"ssd-dir", dir_}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
  // A failed removal keeps the file: the filter may still use it.
  Qemu().fail["qom-set"] = "device is busy";
  ASSERT_FALSE(mgr_->Unassign("web", "vda"));
  EXPECT_TRUE(std::filesystem::exists(File()));
  Qemu().log.clear();
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  std::vector<std::string> got;
  for (const auto& c : Qemu().log) {
    if (c == "blockdev-reopen" || c == "qom-set" || c == "blockdev-del") got.push_back(c);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"qom-set", "blockdev-del"}))
      << "the first attempt already reopened to write-through";
  EXPECT_EQ(Qemu().nodes.count("hc-vda"), 0u);
  EXPECT_EQ(Qemu().nodes.count("hc-vda-ssd"), 0u);
  EXPECT_FALSE(std::filesystem::exists(File()));
  auto evs = Events();
  EXPECT_NE(std::find(evs.begin(), evs.end(), "ssd"), evs.end());
}

TEST_F(SsdTest, TheTierFileIsKeptWhileQemuMayStillHaveIt) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // The device is not where the live XML says (hostcached cannot remove
  // the filter), but the filter node is still in use.
  auto& q = Qemu();
  q.devs["/machine/peripheral/elsewhere/virtio-backend"] = q.devs[kVdaDev];
  q.devs.erase(kVdaDev);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_EQ(q.nodes.count("hc-vda-ssd"), 1u);
  EXPECT_TRUE(std::filesystem::exists(File())) << "deleted under a filter that may use it";
}

TEST_F(SsdTest, AnUnusableSsdDirIsRefusedAndLaterReported) {
  // A regular file where the directory should be.
  const std::string blocker = root_ + "/not-a-dir";
  std::ofstream(blocker) << "x";
  CreatePolicy("bad", json{{"ssd-size", "1M"}, {"ssd-dir", blocker + "/tier"}});
  auto r = mgr_->Assign("web", "vda", "bad");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message.find(blocker), std::string::npos) << r.error().message;
  EXPECT_TRUE(store_->ListAssignments()->empty());
  EXPECT_TRUE(Qemu().log.empty());
  // An assigned policy changed to such a directory: RAM only, and said so.
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_dir = blocker + "/tier";
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users);
  EXPECT_EQ((*users)[0].state, Compliance::kNotCompliant);
  EXPECT_NE((*users)[0].reason.find("RAM only"), std::string::npos) << (*users)[0].reason;
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  EXPECT_TRUE(Qemu().nodes["hc-vda"].ssd.empty());
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"))
      << "a definition naming an unusable file would not start";
}

// Runs `fn` on another thread; false when it has not returned after 10 s
// (blocked opening the FIFO `fifo`: a writer then releases it).
template <typename F>
bool ReturnsPromptly(F fn, const std::string& fifo) {
  auto done = std::async(std::launch::async, fn);
  if (done.wait_for(std::chrono::seconds(10)) == std::future_status::ready) return true;
  int fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  done.wait();
  if (fd >= 0) close(fd);
  return false;
}

TEST_F(SsdTest, AFifoInPlaceOfTheTierIsRefusedAndNeverBlocks) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // QEMU's user owns the directory and plants a FIFO in place of the file.
  std::filesystem::remove(File());
  ASSERT_EQ(mkfifo(File().c_str(), 0600), 0);
  SsdFileInfo f;
  EXPECT_TRUE(ReturnsPromptly([&] { f = ReadSsdFile(File()); }, File()));
  EXPECT_EQ(f.state, SsdFileState::kOpen);
  EXPECT_TRUE(f.unreadable);
  EXPECT_NE(f.problem.find("is a FIFO, not a regular file"), std::string::npos) << f.problem;
  // The reconciler's check of the VM (with the VM's lock held) returns, and
  // the disk says why; the FIFO is left alone.
  EXPECT_TRUE(ReturnsPromptly([&] { mgr_->CheckVm(kWeb); }, File()));
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("is a FIFO"), std::string::npos) << a->reason;
  EXPECT_TRUE(std::filesystem::is_fifo(File()));
  EXPECT_TRUE(ReturnsPromptly([&] { (void)mgr_->Unassign("web", "vda"); }, File()));
  EXPECT_TRUE(std::filesystem::is_fifo(File()));
}

TEST_F(SsdTest, LinksInTheTierDirectoryAreNeverFollowed) {
  // A file of someone else's that QEMU's user would like to own.
  const testing::ScratchDir elsewhere("hcmgr-victim-");
  const std::string victim = elsewhere.path() + "/shadow";
  std::ofstream(victim) << "root:secret";
  std::filesystem::resize_file(victim, 1 << 20);
  ASSERT_EQ(chmod(victim.c_str(), 0640), 0);
  if (geteuid() == 0) lv_.qemu_owner = libvirt::ProcessOwner{64055, 64056};
  struct stat before;
  ASSERT_EQ(stat(victim.c_str(), &before), 0);
  auto untouched = [&] {
    struct stat now;
    ASSERT_EQ(stat(victim.c_str(), &now), 0);
    EXPECT_EQ(now.st_uid, before.st_uid);
    EXPECT_EQ(now.st_mode, before.st_mode);
    EXPECT_EQ(now.st_size, before.st_size);
    EXPECT_EQ(*ReadFile(victim), std::string("root:secret") + std::string((1 << 20) - 11, '\0'));
  };
  // A symbolic link as the tier file.
  std::filesystem::create_directories(dir_);
  std::filesystem::create_symlink(victim, File());
  auto r = mgr_->Assign("web", "vda", "ssd");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message.find("is a symbolic link, not a regular file"), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(ReadSsdFile(File()).unreadable);
  untouched();
  // A hard link as the tier file (where the kernel allows making one).
  std::filesystem::remove(File());
  std::error_code ec;
  std::filesystem::create_hard_link(victim, File(), ec);
  if (!ec) {
    r = mgr_->Assign("web", "vda", "ssd");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("hard links"), std::string::npos) << r.error().message;
    untouched();
    std::filesystem::remove(File());
  }
  // ssd-dir itself a link to elsewhere.
  std::filesystem::remove_all(dir_);
  std::filesystem::create_directory_symlink(elsewhere.path(), dir_);
  r = mgr_->Assign("web", "vda", "ssd");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(dir_ + " is a symbolic link"), std::string::npos)
      << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(elsewhere.path() + "/" + kWeb + "-vda.hcssd"));
  untouched();
  EXPECT_TRUE(store_->ListAssignments()->empty());
}

TEST_F(SsdTest, AStoredPolicyOutsideTheSsdRootsGetsNoTierAndSaysWhy) {
  // A policy stored before the roots were checked, with its tier file there.
  const testing::ScratchDir outside("hcmgr-outside-");
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_dir = outside.path();
  ASSERT_TRUE(store_->UpdatePolicy(p, clock_.NowMs()));
  const std::string old_file = outside.path() + "/" + kWeb + "-vda.hcssd";
  std::ofstream(old_file) << "";
  std::filesystem::resize_file(old_file, 1 << 20);
  testing::WriteSsdSuperblock(old_file, 3, 1, Origin());
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("is not under an SSD root (" + root_ + ")"), std::string::npos)
      << a->reason;
  EXPECT_NE(a->reason.find("cached in RAM only"), std::string::npos) << a->reason;
  // The definition's filter has no tier; nothing was made or deleted there.
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"));
  EXPECT_EQ(ReadSsdFileState(old_file), SsdFileState::kClean);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(outside.path()),
                          std::filesystem::directory_iterator()),
            1);
  // Unassigning deletes nothing outside the roots either.
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_TRUE(std::filesystem::exists(old_file));
}

TEST_F(SsdTest, ATierNotClosedCleanlyKeepsItsFilterUntilTheVmRan) {
  CreatePolicy("ssd-wb", json{{"mode", "write-back"}, {"ssd-size", "1M"}, {"ssd-dir", dir_}});
  CreatePolicy("ssd-wt", json{{"ssd-size", "1M"}, {"ssd-dir", dir_}});
  CreatePolicy("elsewhere", json{{"mode", "write-back"}, {"ssd-size", "1M"},
                                 {"ssd-dir", root_ + "/other"}});
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
  // The VM (or the host) crashed with written data in the tier's journal.
  testing::WriteSsdSuperblockCopy(File(), 7, 2, Origin());
  const std::string def = lv_.domains[kWeb].inactive_xml;
  // Unassigning would start the VM without the filter: refused.
  auto u = mgr_->Unassign("web", "vda");
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(u.error().message.find("start VM 'web' once with its current policy"),
            std::string::npos)
      << u.error().message;
  EXPECT_EQ(Persistent().size(), 1u);
  // So is every change that would lose the journal: no tier, another tier
  // file, not write-back, another block size; nothing changes.
  struct Change {
    json rules;
    const char* why;
  } changes[] = {{json{{"ssd-size", 0}}, "without this SSD tier"},
                 {json{{"mode", "write-through"}}, "write-through, not write-back"},
                 {json{{"block-size", 65536}, {"ssd-size", "1M"}}, "block-size"},
                 {json{{"ssd-dir", root_ + "/moved"}}, "move the disk's SSD tier"}};
  for (const auto& c : changes) {
    auto p = *store_->GetPolicy("ssd-wb");
    p.rules = *policy::RulesFromJson(c.rules, p.rules);
    auto users = mgr_->UpdatePolicy(p);
    ASSERT_FALSE(users) << c.rules.dump();
    EXPECT_EQ(users.error().code, ErrorCode::kFailedPrecondition);
    EXPECT_NE(users.error().message.find(c.why), std::string::npos) << users.error().message;
    EXPECT_NE(users.error().message.find("not closed cleanly"), std::string::npos);
    EXPECT_EQ(store_->GetPolicy("ssd-wb")->rules.mode, policy::CacheMode::kWriteBack);
    EXPECT_EQ(store_->GetPolicy("ssd-wb")->rules.ssd_size, 1u << 20);
  }
  for (const char* other : {"ssd-wt", "elsewhere", "balanced"}) {
    auto a = mgr_->Assign("web", "vda", other);
    ASSERT_FALSE(a) << other;
    EXPECT_EQ(a.error().code, ErrorCode::kFailedPrecondition);
    EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->policy, "ssd-wb");
  }
  EXPECT_EQ(lv_.domains[kWeb].inactive_xml, def);
  // A change that keeps the journal readable applies.
  auto p = *store_->GetPolicy("ssd-wb");
  p.rules.ram_size = 512 << 20;
  auto users = mgr_->UpdatePolicy(p);
  ASSERT_TRUE(users) << users.error().message;
  EXPECT_EQ((*users)[0].state, Compliance::kPendingRestart) << (*users)[0].reason;
  EXPECT_EQ(Persistent()["vda"].options["ram-size"], 512 << 20);
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
  EXPECT_TRUE(std::filesystem::exists(File()));
  // One that would not, made behind the API's back (the store edited):
  // the definition keeps the filter as it was, and says why.
  p.rules.ssd_size = 0;
  ASSERT_TRUE(store_->UpdatePolicy(p, clock_.now_ms));
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("not closed cleanly"), std::string::npos) << a->reason;
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
  // The VM ran and closed the tier cleanly: the change applies now.
  testing::WriteSsdSuperblockCopy(File(), 8, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_FALSE(Persistent()["vda"].options.contains("ssd"));
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
}

TEST_F(SsdTest, ASwitchedOffTierIsNotCompliant) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().ssd_active = false;
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("switched off"), std::string::npos) << a->reason;
}

TEST_F(SsdTest, AForeignFileUnderTheFilterIsReplacedByThePolicysOne) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().nodes["hc-vda-ssd"].filename = root_ + "/elsewhere.img";
  // Ours was closed cleanly when it left the node (left open by a crash
  // while the VM ran on without it, it would be stale: StaleTierTest).
  testing::WriteSsdSuperblock(File(), 8, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(SsdTest, ALiveInsertedTierIsRecordedAndThenOpenedWithSsdCreateOff) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  // The filter was added with ssd-create on: hostcached had just made the
  // file, and the driver formatted it.
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(ReadSsdFile(File()).origin_id, Origin());
  auto t = Tier();
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->formatted);
  EXPECT_EQ(t->path, File());
  EXPECT_EQ(t->origin_id, Origin());
  // The definition says off from then on.
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ(Count("ssd"), 1);
  // Reopens name it too (it is mutable), and a check changes nothing more.
  int defines = lv_.defines;
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(lv_.defines, defines);
  EXPECT_EQ(Count("ssd"), 1);
}

TEST_F(SsdTest, AfterAStartTheFormattedTierIsRecordedAndTheDefinitionSaysOff) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true) << "a blank file hostcached made";
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  // The VM starts from its definition; the driver formats the tier.
  StartThroughTheDefinition(1);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(SsdTest, AMissingFormattedTierIsNotMadeAgainButReported) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(2);  // ran, then destroyed: journal data may be in it
  ASSERT_TRUE(Tier()->formatted);
  std::filesystem::remove(File());
  const std::string def_before = lv_.domains[kWeb].inactive_xml;
  mgr_->CheckVm(kWeb);
  mgr_->CheckVm(kWeb);
  EXPECT_FALSE(std::filesystem::exists(File())) << "a blank tier made in its place";
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  for (const std::string& want : {File(), std::string("is missing"),
                                  std::string("write-back data"),
                                  std::string("hostcachectl disk forget-tier web vda"),
                                  std::string("ssd-create=off")}) {
    EXPECT_NE(a->reason.find(want), std::string::npos) << want << " in " << a->reason;
  }
  EXPECT_EQ(Count("ssd-lost"), 1) << "one event, not one per check";
  // The definition still names the tier, with ssd-create off: a start
  // fails instead of running without the tier's data.
  EXPECT_EQ(lv_.domains[kWeb].inactive_xml, def_before);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
  // Assigning the policy again does not make it either.
  auto again = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->state, Compliance::kError);
  EXPECT_FALSE(std::filesystem::exists(File()));
  // Unassigning gives it up too, and says so.
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_FALSE(Tier());
  EXPECT_EQ(Count("ssd-forget"), 1);
}

TEST_F(SsdTest, ABlankOrForeignReplacementIsLostToo) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(1);
  std::filesystem::remove(File());
  {
    std::ofstream f(File());
  }
  std::filesystem::resize_file(File(), 1 << 20);  // blank, the same size
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  EXPECT_NE(a->reason.find("is blank"), std::string::npos) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank) << "left as it is";
  // Another disk's tier copied over it.
  testing::WriteSsdSuperblock(File(), 4, 1, std::string(kWeb) + "/vdb");
  mgr_->CheckVm(kWeb);
  a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  EXPECT_NE(a->reason.find("another origin ('" + std::string(kWeb) + "/vdb')"),
            std::string::npos)
      << a->reason;
  // Its own tier back: fine again.
  testing::WriteSsdSuperblock(File(), 5, 1, Origin());
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(SsdTest, ForgettingALostTierMakesANewOne) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(2);
  // While the tier is there, there is nothing to forget.
  auto intact = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_FALSE(intact);
  EXPECT_EQ(intact.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(intact.error().message.find("nothing is lost"), std::string::npos)
      << intact.error().message;
  EXPECT_TRUE(Tier()->formatted);
  std::filesystem::remove(File());
  mgr_->CheckVm(kWeb);
  ASSERT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kError);
  auto a = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank) << "a new blank tier";
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-forget"), 1);
  // A disk without a tier has nothing to forget.
  ASSERT_TRUE(mgr_->Assign("web", "vdb", "balanced"));
  auto none = mgr_->ForgetSsdTier("web", "vdb");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(mgr_->ForgetSsdTier("web", "vdc").error().code, ErrorCode::kNotFound);
}

TEST_F(SsdTest, ARunningVmsTierIsNotForgotten) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  auto r = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Count("ssd-forget"), 0);
}

// The write-back tier's QEMU crashed (superblock `state`), and the VM was
// started again from a definition without the filter (edited by hand): it
// runs uncached, with the tier file left as it was.
class StaleTierTest : public SsdTest {
 protected:
  void SetUp() override {
    SsdTest::SetUp();
    CreatePolicy("ssd-wb", json{{"mode", "write-back"}, {"ssd-size", "1M"}, {"ssd-dir", dir_}});
  }
  void CrashThenStartWithoutFilter(uint32_t state) {
    ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
    ASSERT_TRUE(Tier() && Tier()->formatted);
    testing::WriteSsdSuperblock(File(), 9, state, Origin());
    lv_.domains[kWeb].qemu = testing::FakeQemu{};
    lv_.Add(kWeb, "web", TestData("web.inactive.xml"), TestData("web.live.xml"));
    ASSERT_NE(Qemu().devs[kVdaDev], "hc-vda");
  }
  bool Added() {
    auto& log = Qemu().log;
    return std::find(log.begin(), log.end(), "blockdev-add") != log.end();
  }
};

TEST_F(StaleTierTest, ATierLeftOpenIsNotInsertedIntoAVmRunningWithoutItsFilter) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  mgr_->CheckVm(kWeb);
  EXPECT_FALSE(Added()) << "the old journal would be written back over newer data";
  EXPECT_EQ(Qemu().devs[kVdaDev], "libvirt-4-format");
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kError);
  for (const std::string& want :
       {File(), std::string("not closed cleanly"), std::string("ran without its filter"),
        std::string("overwrite newer data"),
        std::string("'hostcachectl disk forget-tier web vda'"),
        std::string("inserted with a fresh tier")}) {
    EXPECT_NE(a->reason.find(want), std::string::npos) << want << " in " << a->reason;
  }
  EXPECT_EQ(Count("ssd-stale"), 1) << "one event, not one per check";
  EXPECT_TRUE(Tier()->stale);
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen) << "left as it is";
  // Nor does the definition get it back: the next start would open it.
  EXPECT_EQ(Persistent().count("vda"), 0u);
  // Stopped, the VM is still not given the tier; the record remembers.
  lv_.domains[kWeb].active = false;
  lv_.domains[kWeb].qemu = testing::FakeQemu{};
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kError);
  EXPECT_EQ(Persistent().count("vda"), 0u);
  EXPECT_EQ(Count("ssd-stale"), 1);
}

TEST_F(StaleTierTest, ForgettingItInsertsTheFilterWithAFreshTier) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  ASSERT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kError);
  auto a = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  EXPECT_EQ(Count("ssd-forget"), 1);
  // A new blank file, which the driver formatted (ssd-create on).
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Qemu().nodes["hc-vda-ssd"].filename, File());
  ASSERT_TRUE(Tier());
  EXPECT_FALSE(Tier()->stale);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  // The running filter's tier: in use, nothing to forget, no alarm.
  mgr_->CheckVm(kWeb);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  EXPECT_EQ(mgr_->ForgetSsdTier("web", "vda").error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Count("ssd-stale"), 1);
}

TEST_F(StaleTierTest, AStoppedVmsStaleTierCanBeForgottenToo) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  lv_.domains[kWeb].active = false;
  lv_.domains[kWeb].qemu = testing::FakeQemu{};
  auto a = mgr_->ForgetSsdTier("web", "vda");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->state, Compliance::kPendingRestart) << a->reason;
  EXPECT_EQ(ReadSsdFileState(File()), SsdFileState::kBlank);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
}

TEST_F(StaleTierTest, ACleanTierIsEmptiedThenInserted) {
  CrashThenStartWithoutFilter(1);
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  EXPECT_EQ(Qemu().devs[kVdaDev], "hc-vda");
  // Clean copies only, but the VM ran without the filter: they may be
  // stale, so the filter gets the file emptied.
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
  EXPECT_FALSE(Tier()->stale);
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  EXPECT_EQ(Count("ssd-stale"), 0);
  EXPECT_EQ(mgr_->ForgetSsdTier("web", "vda").error().code, ErrorCode::kFailedPrecondition);
}

TEST_F(StaleTierTest, AnInsertionThatFailedPartWayIsNoFalseAlarm) {
  // qom-set fails, and so does the blockdev-del that undoes the
  // blockdev-add: the filter node stays in QEMU with its tier open.
  Qemu().fail["qom-set"] = "fake: qom-set failed";
  Qemu().fail["blockdev-del"] = "fake: blockdev-del failed";
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd-wb"));
  ASSERT_TRUE(Qemu().nodes.count("hc-vda"));
  ASSERT_EQ(ReadSsdFileState(File()), SsdFileState::kOpen);
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->reason.find("ran without its filter"), std::string::npos) << a->reason;
  EXPECT_EQ(Count("ssd-stale"), 0);
  EXPECT_FALSE(Tier()->stale);
  EXPECT_EQ(Persistent()["vda"].options["ssd"]["filename"], File());
}

TEST_F(StaleTierTest, UnassigningDeletesTheStaleFile) {
  CrashThenStartWithoutFilter(2);
  mgr_->CheckVm(kWeb);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_FALSE(std::filesystem::exists(File()));
  EXPECT_FALSE(Tier());
}

TEST_F(SsdTest, AResizedCleanTierStartsOverWithSsdCreateOn) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(1);  // closed cleanly: clean copies only
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], false);
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_size = 2 << 20;
  ASSERT_TRUE(mgr_->UpdatePolicy(p));
  EXPECT_EQ(std::filesystem::file_size(File()), 2u << 20);
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ(Persistent()["vda"].options["ssd-create"], true);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(SsdTest, AMovedTierLeavesTheOldFileWhenItHeldCleanCopiesOnly) {
  lv_.domains[kWeb].active = false;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  StopWithTier(1);
  const std::string old = File();
  auto p = *store_->GetPolicy("ssd");
  p.rules.ssd_dir = root_ + "/moved";
  ASSERT_TRUE(mgr_->UpdatePolicy(p));
  const std::string now = root_ + "/moved/" + kWeb + "-vda.hcssd";
  EXPECT_FALSE(std::filesystem::exists(old));
  EXPECT_EQ(ReadSsdFileState(now), SsdFileState::kBlank);
  EXPECT_EQ(Tier()->path, now);
  EXPECT_FALSE(Tier()->formatted);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kPendingRestart);
}

TEST_F(SsdTest, UnassigningForgetsTheRecord) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  ASSERT_TRUE(Tier());
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_FALSE(Tier());
  EXPECT_FALSE(std::filesystem::exists(File()));
  // Assigned again: a new tier, made and formatted afresh.
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  EXPECT_TRUE(Tier()->formatted);
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
}

TEST_F(SsdTest, AFailedTierIsReportedAndReplacedWhenThePolicyIsReapplied) {
  Qemu().report_options = true;
  ASSERT_TRUE(mgr_->Assign("web", "vda", "ssd"));
  Qemu().ssd_failed.insert("hc-vda");
  Qemu().log.clear();
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_EQ(a->reason.rfind("the SSD tier failed with an I/O error; writes go through to the "
                            "origin; check the device, then re-apply the policy",
                            0),
            0u)
      << a->reason;
  // A check repairs nothing (a reopen cannot; a failing device would fail
  // again).
  for (const char* c : {"blockdev-reopen", "blockdev-del", "blockdev-add"}) {
    EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), c), 0) << c;
  }
  // Re-applying the policy replaces the filter: the tier is attached again.
  auto again = mgr_->Assign("web", "vda", "ssd");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->state, Compliance::kCompliant) << again->reason;
  EXPECT_NE(std::find(Qemu().log.begin(), Qemu().log.end(), "blockdev-del"), Qemu().log.end());
  EXPECT_EQ(Qemu().nodes["hc-vda"].ssd, "hc-vda-ssd");
  // Its copies missed what was written since it failed (and while the
  // filter was out): emptied, and formatted afresh.
  EXPECT_EQ(Qemu().nodes["hc-vda"].options["ssd-create"], true);
  EXPECT_EQ(Count("ssd-emptied"), 1);
}

TEST_F(SsdTest, ReportedSettingsAreComparedNotReasserted) {
  Qemu().report_options = true;
  CreatePolicy("tuned", json{{"admit-after", 2}, {"seq-cutoff", "1M"}, {"max-dirty", "64M"},
                             {"max-dirty-age-ms", 800}, {"mode", "write-back"}});
  ASSERT_TRUE(mgr_->Assign("web", "vda", "tuned"));
  Qemu().log.clear();
  mgr_->CheckVm(kWeb);
  EXPECT_EQ(std::count(Qemu().log.begin(), Qemu().log.end(), "blockdev-reopen"), 0)
      << "the driver reports them: nothing to re-assert";
  EXPECT_EQ((*store_->GetAssignment(kWeb, "vda"))->state, Compliance::kCompliant);
  // Changed behind hostcached's back and not put back (the reopen fails):
  // each named.
  auto& o = Qemu().nodes["hc-vda"].options;
  o["seq-cutoff"] = 0;
  o["max-dirty"] = 32 << 20;
  Qemu().fail["blockdev-reopen"] = "busy";
  mgr_->CheckVm(kWeb);
  auto a = *store_->GetAssignment(kWeb, "vda");
  EXPECT_EQ(a->state, Compliance::kNotCompliant);
  EXPECT_NE(a->reason.find("seq-cutoff is 0, the policy says 1M"), std::string::npos)
      << a->reason;
  EXPECT_NE(a->reason.find("max-dirty is 32M, the policy says 64M"), std::string::npos)
      << a->reason;
}

}  // namespace
}  // namespace hc::core
