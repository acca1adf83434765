// The assignment that travels with a VM (src/migration/metadata.h,
// adopt.h): the metadata codec against hostile input, the manager writing
// it on assign/unassign/policy change, and a destination adopting it.
#include <gtest/gtest.h>

#include "manager/http/api.h"
#include "migration/adopt.h"
#include "migration/metadata.h"
#include "migration/prepare.h"

#include <filesystem>
#include "web_vm_fixture.h"

namespace hc::migration {
namespace {

using store::Compliance;
using testing::kWeb;

CarriedDisk Disk(const std::string& target, const std::string& policy) {
  CarriedDisk d{target, policy, "hc-" + target, policy::Rules{}};
  d.rules.mode = policy::CacheMode::kWriteBack;
  d.rules.ram_size = 32ull << 20;
  d.rules.ssd_size = 8ull << 20;
  d.rules.ssd_dir = "/var/lib/hostcache/ssd";
  return d;
}

std::string Wrap(const std::string& disks, const std::string& version = "1") {
  return "<hostcache:assignments xmlns:hostcache=\"" + std::string(kMetadataUri) +
         "\" version=\"" + version + "\">" + disks + "</hostcache:assignments>";
}

std::string DiskXml(const std::string& target, const std::string& policy,
                    const std::string& rules, const std::string& node = "") {
  return "<hostcache:disk target=\"" + target + "\" policy=\"" + policy + "\" node=\"" +
         (node.empty() ? "hc-" + target : node) + "\">" + rules + "</hostcache:disk>";
}

TEST(MetadataCodec, RoundTripWithAndWithoutPrefix) {
  std::vector<CarriedDisk> in{Disk("vda", "wb"), Disk("sdb", "fast.1")};
  auto plain = DecodeAssignments(EncodeAssignments(in));
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(*plain, in);
  // As libvirt gives it back: prefixed, with the namespace declared.
  auto prefixed = DecodeAssignments(
      Wrap(DiskXml("vda", "wb", policy::RulesToJson(in[0].rules).dump())));
  ASSERT_TRUE(prefixed) << prefixed.error().message;
  ASSERT_EQ(prefixed->size(), 1u);
  EXPECT_EQ((*prefixed)[0], in[0]);
  auto none = DecodeAssignments(EncodeAssignments({}));
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

TEST(MetadataCodec, HostileInputIsRefusedWithAMessage) {
  const std::string ok = R"({"mode":"write-through","ram-size":"64M"})";
  struct Case {
    std::string xml, says;
  };
  const std::vector<Case> cases{
      {"", "not XML"},
      {"<assignments version='1'><disk", "not XML"},
      {"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><assignments version='1'>&a;</assignments>",
       "DOCTYPE"},
      {"<assignments version='1'>&amp;</assignments>", "text outside"},
      {"<other version='1'/>", "not <assignments>"},
      {Wrap("", "2"), "version '2'"},
      {Wrap("<x/>"), "unknown element"},
      {Wrap(DiskXml("vda", "../../etc", ok)), "policy name"},
      {Wrap(DiskXml("vda", "", ok)), "policy name"},
      {Wrap(DiskXml("vda", std::string(200, 'p'), ok)), "policy name"},
      {Wrap(DiskXml("vd/a", "wb", ok)), "target"},
      {Wrap(DiskXml("../x", "wb", ok)), "target"},
      {Wrap(DiskXml("vda", "wb", ok, "hc-vdb")), "node"},
      {Wrap(DiskXml("vda", "wb", ok) + DiskXml("vda", "wb", ok)), "twice"},
      {Wrap(DiskXml("vda", "wb", "{not json")), "not JSON"},
      {Wrap(DiskXml("vda", "wb", "[1,2]")), "must be an object"},
      {Wrap(DiskXml("vda", "wb", R"({"ram-size":"99999999999999999999T"})")), "ram-size"},
      {Wrap(DiskXml("vda", "wb", R"({"ram-size":18446744073709551615})")), "ram-size"},
      {Wrap(DiskXml("vda", "wb", R"({"block-size":3})")), "block-size"},
      {Wrap(DiskXml("vda", "wb", R"({"mode":"fastest"})")), "mode"},
      {Wrap(DiskXml("vda", "wb", R"({"rm -rf":1})")), "rm -rf"},
      {std::string(kMaxMetadataBytes + 1, ' '), "more than"},
      {Wrap(DiskXml("vda", "wb", ok)) + std::string(1, '\0'), "NUL"},
  };
  for (const auto& c : cases) {
    auto r = DecodeAssignments(c.xml);
    ASSERT_FALSE(r) << c.xml.substr(0, 200);
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.says), std::string::npos)
        << r.error().message << " / " << c.xml.substr(0, 200);
    EXPECT_NE(r.error().message.find(kMetadataUri), std::string::npos) << r.error().message;
  }
  // Too many disks.
  std::string many;
  for (size_t i = 0; i <= kMaxCarriedDisks; i++) {
    many += DiskXml(std::string("vd") + char('a' + i / 26) + char('a' + i % 26), "p", "{}");
  }
  auto r = DecodeAssignments(Wrap(many));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("more than"), std::string::npos) << r.error().message;
}

class CarriedTest : public testing::WebVmTest {
 protected:
  std::vector<CarriedDisk> Carried(bool live) {
    auto& m = live ? lv_.domains[kWeb].metadata_live : lv_.domains[kWeb].metadata_config;
    if (!m.count(kMetadataUri)) return {};
    auto d = DecodeAssignments(m[kMetadataUri]);
    EXPECT_TRUE(d) << d.error().message;
    return d ? *d : std::vector<CarriedDisk>{};
  }
  std::vector<store::Event> Events(const std::string& action) {
    std::vector<store::Event> out;
    auto evs = store_->ListEvents(0, 1000, "");
    for (const auto& e : *evs) {
      if (e.action == action) out.push_back(e);
    }
    return out;
  }
};

TEST_F(CarriedTest, AssignUnassignAndPolicyChangesAreWrittenLiveAndPersistent) {
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  for (bool live : {true, false}) {
    auto c = Carried(live);
    ASSERT_EQ(c.size(), 1u) << live;
    EXPECT_EQ(c[0].target, "vda");
    EXPECT_EQ(c[0].policy, "balanced");
    EXPECT_EQ(c[0].rules, mgr_->GetPolicy("balanced")->rules);
  }
  auto p = *mgr_->GetPolicy("balanced");
  p.rules.ram_size = 128ull << 20;
  ASSERT_TRUE(mgr_->UpdatePolicy(p));
  EXPECT_EQ(Carried(true)[0].rules.ram_size, 128ull << 20);
  EXPECT_EQ(Carried(false)[0].rules.ram_size, 128ull << 20);
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  EXPECT_TRUE(Carried(true).empty());
  EXPECT_TRUE(Carried(false).empty());
}

TEST_F(CarriedTest, AFailedMetadataWriteKeepsTheAssignmentAndSaysSo) {
  lv_.metadata_error = "metadata refused (fake)";
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  auto ev = Events("metadata");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_NE(ev[0].message.find("do not travel"), std::string::npos) << ev[0].message;
  EXPECT_TRUE(Carried(true).empty());
  // The next pass writes it (as for assignments older than the metadata).
  lv_.metadata_error.clear();
  Adopter adopter(*mgr_, lv_);
  adopter.AdoptAll();
  ASSERT_EQ(Carried(true).size(), 1u);
  EXPECT_EQ(Carried(false)[0].policy, "balanced");
  EXPECT_TRUE(Events("adopt").empty());
}

TEST_F(CarriedTest, ADestinationAdoptsTheCarriedAssignment) {
  // The VM arrives (filter already in QEMU, as from the definition) with
  // metadata written on another host; this host has the policy.
  ASSERT_TRUE(mgr_->Assign("web", "vda", "balanced"));
  const auto meta = lv_.domains[kWeb].metadata_live;
  ASSERT_TRUE(store_->DeleteAssignment(kWeb, "vda"));
  ASSERT_FALSE(*store_->GetAssignment(kWeb, "vda"));
  Adopter adopter(*mgr_, lv_);
  adopter.AdoptAll();
  auto a = *store_->GetAssignment(kWeb, "vda");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->policy, "balanced");
  EXPECT_EQ(a->state, Compliance::kCompliant) << a->reason;
  auto ev = Events("adopt");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_NE(ev[0].message.find("adopted the assignment"), std::string::npos) << ev[0].message;
  // Adopted once: a second pass changes nothing.
  adopter.AdoptAll();
  EXPECT_EQ(Events("adopt").size(), 1u);
  EXPECT_EQ(lv_.domains[kWeb].metadata_live, meta);
}

TEST_F(CarriedTest, APolicyMissingHereLeavesTheDiskWithItsRulesAndSaysSo) {
  CarriedDisk d = Disk("vda", "gold");
  lv_.domains[kWeb].metadata_live[kMetadataUri] = Wrap(DiskXml(
      "vda", "gold", policy::RulesToJson(d.rules).dump()));
  Adopter adopter(*mgr_, lv_);
  Qemu().log.clear();
  adopter.AdoptVm(kWeb, "web");
  adopter.AdoptVm(kWeb, "web");
  EXPECT_TRUE(Qemu().log.empty()) << "the filter it came with is left alone";
  EXPECT_FALSE(*store_->GetAssignment(kWeb, "vda"));
  auto u = adopter.Unmanaged(kWeb, "vda");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->carried.policy, "gold");
  EXPECT_NE(u->reason.find("does not exist on this host"), std::string::npos) << u->reason;
  auto ev = Events("adopt");
  ASSERT_EQ(ev.size(), 1u) << "logged once";
  EXPECT_EQ(ev[0].level, "warning");
  // The API reports the disk's compliance.
  http::Api api(*mgr_, *store_, nullptr, "tok", "test");
  api.SetAdopter(&adopter);
  auto r = api.Handle(http::Request{"GET", "/api/v1/vms/web/disks/vda/policy", "Bearer tok", ""});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["policy"], "gold");
  EXPECT_EQ(j["carried"], true);
  EXPECT_EQ(j["compliance"]["state"], "not-compliant");
  EXPECT_NE(j["compliance"]["reason"].get<std::string>().find("keeps the rules it came with"),
            std::string::npos) << j.dump();
  // Created here: adopted at the next pass.
  policy::Policy gold{"gold", "", d.rules};
  gold.rules.ssd_size = 0;
  gold.rules.ssd_dir.clear();
  ASSERT_TRUE(mgr_->CreatePolicy(gold));
  adopter.AdoptVm(kWeb, "web");
  ASSERT_TRUE(*store_->GetAssignment(kWeb, "vda"));
  EXPECT_FALSE(adopter.Unmanaged(kWeb, "vda"));
  ASSERT_TRUE(mgr_->Unassign("web", "vda"));
  // Hostile metadata: reported, nothing adopted.
  lv_.domains[kWeb].metadata_live[kMetadataUri] = Wrap(DiskXml("vda", "../x", "{}"));
  adopter.AdoptVm(kWeb, "web");
  EXPECT_FALSE(*store_->GetAssignment(kWeb, "vda"));
  EXPECT_NE(Events("adopt")[0].message.find("policy name"), std::string::npos)
      << Events("adopt")[0].message;
}

// ---- the destination prepared (prepare.h) ---------------------------------------

// A source host (the fixture's manager) and a destination host (its own
// store and manager over the same fake libvirt), each with its SSD root.
class PrepareTest : public testing::WebVmTest {
 protected:
  void SetUp() override {
    WebVmTest::SetUp();
    src_root_ = scratch_.path() + "/a";
    dst_root_ = scratch_.path() + "/b";
    std::filesystem::create_directories(src_root_);
    std::filesystem::create_directories(dst_root_);
    mgr_ = std::make_unique<core::Manager>(*store_, lv_, tools_, clock_, Config(src_root_, 64));
    ASSERT_TRUE(mgr_->CreatePolicy(Wb(src_root_)));
    ASSERT_TRUE(mgr_->Assign("web", "vda", "wb"));
  }
  static core::ManagerConfig Config(const std::string& root, uint64_t ssd_mib) {
    core::ManagerConfig cfg;
    cfg.ram_budget = 2ull << 30;
    cfg.ssd_budget = ssd_mib << 20;
    cfg.emulator = "/opt/hostcache/qemu-system-x86_64";
    cfg.ssd_roots = *core::SsdRoots::Make({root});
    return cfg;
  }
  static policy::Policy Wb(const std::string& dir, bool without_ssd = false) {
    policy::Policy p;
    p.name = "wb";
    p.rules.ram_size = 32ull << 20;
    p.rules.ssd_size = 8ull << 20;
    p.rules.ssd_dir = dir;
    p.rules.migrate_without_ssd = without_ssd;
    return p;
  }
  // The destination: its own database, budget and policy wb (or none).
  core::Manager& Destination(uint64_t ssd_mib, bool policy = true, bool without_ssd = false) {
    dst_store_ = std::move(*store::SqliteStore::Open(":memory:", clock_.now_ms));
    dst_ = std::make_unique<core::Manager>(*dst_store_, lv_, tools_, clock_,
                                           Config(dst_root_, ssd_mib));
    if (policy) {
      EXPECT_TRUE(dst_->CreatePolicy(Wb(dst_root_, without_ssd)));
    }
    return *dst_;
  }
  // The XML libvirt hands the destination's hook: the definition with the
  // filter (SSD tier under the source's root) and the carried metadata.
  std::string Incoming() {
    std::string xml = lv_.domains[kWeb].inactive_xml;
    const std::string meta = lv_.domains[kWeb].metadata_config[kMetadataUri];
    EXPECT_FALSE(meta.empty());
    return xml.insert(xml.rfind("</domain>"), "<metadata>" + meta + "</metadata>");
  }
  std::string DstFile() const { return dst_root_ + "/" + kWeb + "-vda.hcssd"; }

  const testing::ScratchDir scratch_{"hcmig-prep-"};
  std::string src_root_, dst_root_;
  std::unique_ptr<store::SqliteStore> dst_store_;
  std::unique_ptr<core::Manager> dst_;
};

TEST_F(PrepareTest, TheTierMovesUnderThisHostsRootAndTheFileIsMade) {
  const std::string in = Incoming();
  ASSERT_NE(in.find(src_root_), std::string::npos);
  auto p = PrepareIncoming(Destination(64), lv_, in, "host 'b'");
  ASSERT_TRUE(p) << p.error().message;
  // (The carried rules keep the source's ssd-dir, as they were there.)
  EXPECT_EQ(libvirt::ParseInstalledFilters(p->xml)->at("vda").options.dump().find(src_root_),
            std::string::npos) << p->xml;
  EXPECT_NE(p->xml.find(DstFile()), std::string::npos) << p->xml;
  EXPECT_NE(p->xml.find("ssd-create&quot;:true"), std::string::npos) << p->xml;
  EXPECT_NE(p->xml.find(kMetadataUri), std::string::npos) << "the metadata goes on";
  EXPECT_EQ(std::filesystem::file_size(DstFile()), 8ull << 20);
  auto f = libvirt::ParseInstalledFilters(p->xml);
  ASSERT_TRUE(f && f->count("vda"));
  EXPECT_EQ(f->at("vda").options["ssd"]["filename"], DstFile());
}

TEST_F(PrepareTest, NotEnoughSsdRefusesWithWhatIsShortAndMakesNothing) {
  const std::string in = Incoming();
  auto p = PrepareIncoming(Destination(4), lv_, in, "host 'b'");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kConflict);
  for (const char* want : {"host 'b' refuses the migration of VM 'web'",
                           "not enough SSD cache space", "vda 8 MiB", "short by 4 MiB",
                           "migrate-without-ssd"}) {
    EXPECT_NE(p.error().message.find(want), std::string::npos) << p.error().message;
  }
  EXPECT_FALSE(std::filesystem::exists(DstFile()));
  EXPECT_TRUE(dst_->AssignmentsOf(kWeb)->empty());
}

TEST_F(PrepareTest, MigrateWithoutSsdAdmitsWithoutTheTier) {
  auto p = PrepareIncoming(Destination(4, true, true), lv_, Incoming(), "host 'b'");
  ASSERT_TRUE(p) << p.error().message;
  auto f = libvirt::ParseInstalledFilters(p->xml);
  ASSERT_TRUE(f && f->count("vda"));
  EXPECT_FALSE(f->at("vda").options.contains("ssd")) << f->at("vda").options.dump();
  EXPECT_FALSE(std::filesystem::exists(DstFile()));
  EXPECT_NE(p->notes[0].find("without SSD tiers"), std::string::npos) << p->notes[0];
}

TEST_F(PrepareTest, APolicyMissingHereUsesTheCarriedRulesUnderTheFirstRoot) {
  auto p = PrepareIncoming(Destination(64, false), lv_, Incoming(), "host 'b'");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_NE(p->xml.find(DstFile()), std::string::npos);
  EXPECT_EQ(std::filesystem::file_size(DstFile()), 8ull << 20);
}

TEST_F(PrepareTest, HostileOrForeignXml) {
  core::Manager& dst = Destination(64);
  // A VM without hostcache: unchanged, nothing made.
  const std::string plain = testing::TestData("web.inactive.xml");
  auto p = PrepareIncoming(dst, lv_, plain, "h");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->xml, plain);
  std::string in = Incoming();
  // Too large, a NUL, not XML, a UUID that would leave the root.
  EXPECT_EQ(PrepareIncoming(dst, lv_, in + std::string(kMaxIncomingXml, ' '), "h").error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(PrepareIncoming(dst, lv_, in + std::string(1, '\0'), "h").error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(PrepareIncoming(dst, lv_, "<domain", "h").error().code,
            ErrorCode::kInvalidArgument);
  std::string bad = in;
  bad.replace(bad.find(kWeb), std::string(kWeb).size(), "../../../../../../../etc/x");
  auto r = PrepareIncoming(dst, lv_, bad, "h");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("uuid"), std::string::npos) << r.error().message;
  // Hostile carried metadata: refused, nothing made.
  std::string meta = in;
  meta.replace(meta.find("policy=\"wb\""), 11, "policy=\"../x\"");
  r = PrepareIncoming(dst, lv_, meta, "h");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("policy name"), std::string::npos) << r.error().message;
  EXPECT_FALSE(std::filesystem::exists(DstFile()));
}

}  // namespace
}  // namespace hc::migration
