// Units without I/O: sizes, tokens, budgets, policy rules and their limits.
#include <gtest/gtest.h>

#include "common/util.h"
#include "manager/core/config.h"
#include "manager/policy/policy.h"

namespace hc {
namespace {

using nlohmann::json;
using policy::CacheMode;
using policy::Rules;

TEST(Util, ParseSizeAcceptsBytesAndBinarySuffixes) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("4k"), 4096u);
  EXPECT_EQ(*ParseSize("256M"), 256u << 20);
  EXPECT_EQ(*ParseSize("1G"), 1ull << 30);
  EXPECT_EQ(*ParseSize("2MiB"), 2u << 20);
  EXPECT_EQ(*ParseSize(" 1.5G "), 3ull << 29);
  EXPECT_EQ(*ParseSize("1T"), 1ull << 40);
}

TEST(Util, ParseSizeRejectsGarbage) {
  for (const char* bad : {"", "M", "-1", "12Q", "1.2.3G", "0.3", "99999999999999999999",
                          "18446744073709551615G", "4 k b"}) {
    auto r = ParseSize(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument) << bad;
    }
  }
}

TEST(Util, FormatSizeIsTheInverseOfParseSize) {
  for (uint64_t v : {0ull, 1ull, 512ull, 4096ull, 65536ull, 256ull << 20, 3ull << 29,
                     1ull << 40, 12345ull}) {
    EXPECT_EQ(*ParseSize(FormatSize(v)), v) << FormatSize(v);
  }
  EXPECT_EQ(FormatSize(256u << 20), "256M");
  EXPECT_EQ(HumanSize(3ull << 29), "1.5 GiB");
}

TEST(Util, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
}

TEST(Util, RandomHexIsRandomAndHex) {
  auto a = RandomHex(32), b = RandomHex(32);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->size(), 64u);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(Config, BudgetAsSizeOrShareOfRam) {
  EXPECT_EQ(*core::ResolveBudget("4G", 0), 4ull << 30);
  EXPECT_EQ(*core::ResolveBudget("25%", 16ull << 30), 4ull << 30);
  EXPECT_FALSE(core::ResolveBudget("125%", 16ull << 30));
  EXPECT_FALSE(core::ResolveBudget("x%", 16ull << 30));
  EXPECT_FALSE(core::ResolveBudget("10%", 0));
  EXPECT_GT(core::HostMemoryBytes(), 0u);
}

TEST(Policy, DefaultsAreValidAndDistinct) {
  auto defs = policy::DefaultPolicies();
  ASSERT_GE(defs.size(), 3u);
  for (const auto& p : defs) EXPECT_TRUE(policy::Validate(p)) << p.name;
  EXPECT_EQ(defs[0].name, "balanced");
}

TEST(Policy, BlockSizeMustBeAPowerOfTwoFrom512To2M) {
  Rules r;
  for (uint64_t bs : {512ull, 4096ull, 65536ull, 2ull << 20}) {
    r.block_size = bs;
    EXPECT_TRUE(policy::ValidateRules(r)) << bs;
  }
  for (uint64_t bs : {0ull, 256ull, 1000ull, 3ull << 10, 4ull << 20}) {
    r.block_size = bs;
    auto s = policy::ValidateRules(r);
    ASSERT_FALSE(s) << bs;
    EXPECT_NE(s.error().message.find("block-size"), std::string::npos);
  }
}

TEST(Policy, RamSizeHoldsAtLeastOneBlockAndAtMostTheSlotLimit) {
  Rules r;
  r.block_size = 65536;
  r.ram_size = 65535;
  auto s = policy::ValidateRules(r);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("ram-size must be at least one cache block"),
            std::string::npos);
  r.ram_size = 65536;
  EXPECT_TRUE(policy::ValidateRules(r));
  r.block_size = 512;
  r.ram_size = 512ull * 0x80000000ull;
  EXPECT_FALSE(policy::ValidateRules(r));
}

TEST(Policy, OtherLimits) {
  Rules r;
  r.admit_after = 0;
  EXPECT_FALSE(policy::ValidateRules(r));
  r = Rules{};
  r.seq_cutoff = 0;  // off
  EXPECT_TRUE(policy::ValidateRules(r));
  r.ssd_size = 1ull << 30;
  EXPECT_FALSE(policy::ValidateRules(r)) << "ssd-size needs ssd-dir";
  r.ssd_dir = "relative/dir";
  EXPECT_FALSE(policy::ValidateRules(r));
  r.ssd_dir = "/var/cache/hostcache";
  EXPECT_TRUE(policy::ValidateRules(r));
  // The smallest tier the driver takes (measured against it: 16k for 4k
  // blocks, 128k for 64k blocks, 4M for 2M blocks).
  EXPECT_EQ(policy::MinSsdSize(4096), 16384u);
  EXPECT_EQ(policy::MinSsdSize(512), 12800u);
  EXPECT_EQ(policy::MinSsdSize(65536), 131072u);
  EXPECT_EQ(policy::MinSsdSize(2u << 20), 4u << 20);
  r.ssd_size = 16383;
  auto small = policy::ValidateRules(r);
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().message.find("at least 16k"), std::string::npos)
      << small.error().message;
  r.ssd_size = 16384;
  EXPECT_TRUE(policy::ValidateRules(r));
  r.max_dirty = 100;  // below one block
  EXPECT_FALSE(policy::ValidateRules(r));
  r.max_dirty = r.ram_size + 4096;
  EXPECT_FALSE(policy::ValidateRules(r));
  r.max_dirty = r.ram_size;
  EXPECT_TRUE(policy::ValidateRules(r));
  r.max_dirty_age_ms = 0;
  EXPECT_FALSE(policy::ValidateRules(r));
  r.max_dirty_age_ms = 3600001;
  EXPECT_FALSE(policy::ValidateRules(r));
}

TEST(Policy, NamesAreRestricted) {
  EXPECT_TRUE(policy::ValidateName("db-fast_1.2"));
  for (const char* bad : {"", "-x", ".x", "a b", "a/b", "x'; DROP TABLE policies;--", "é"}) {
    EXPECT_FALSE(policy::ValidateName(bad)) << bad;
  }
  EXPECT_FALSE(policy::ValidateName(std::string(64, 'a')));
  EXPECT_TRUE(policy::ValidateName(std::string(63, 'a')));
}

TEST(Policy, RulesFromJsonAcceptsSizesAsNumbersOrStrings) {
  auto r = policy::RulesFromJson(
      json{{"mode", "write-around"}, {"ram-size", "1G"}, {"block-size", 65536},
           {"admit-after", 2}, {"seq-cutoff", "0"}, {"max-dirty", "64M"},
           {"max-dirty-age-ms", 1000}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->mode, CacheMode::kWriteAround);
  EXPECT_EQ(r->ram_size, 1ull << 30);
  EXPECT_EQ(r->block_size, 65536u);
  EXPECT_EQ(r->admit_after, 2u);
  EXPECT_EQ(r->seq_cutoff, 0u);
  EXPECT_EQ(r->max_dirty, 64u << 20);
  EXPECT_EQ(r->max_dirty_age_ms, 1000u);
}

TEST(Policy, RulesFromJsonRejectsWrongInputWithTheRuleName) {
  struct Case {
    json j;
    const char* word;
  } cases[] = {
      {json{{"mode", "write-sometimes"}}, "mode"},
      {json{{"mode", 3}}, "mode"},
      {json{{"ram-size", -1}}, "ram-size"},
      {json{{"ram-size", true}}, "ram-size"},
      {json{{"ram-size", "lots"}}, "ram-size"},
      {json{{"admit-after", 1.5}}, "admit-after"},
      {json{{"admit-after", 0}}, "admit-after"},
      {json{{"cache-everything", true}}, "unknown rule 'cache-everything'"},
      {json::array(), "rules"},
  };
  for (const auto& c : cases) {
    auto r = policy::RulesFromJson(c.j);
    ASSERT_FALSE(r) << c.j.dump();
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.word), std::string::npos) << r.error().message;
  }
}

TEST(Policy, PartialRulesStartFromTheBase) {
  Rules base;
  base.mode = CacheMode::kWriteAround;
  base.ram_size = 1 << 30;
  auto r = policy::RulesFromJson(json{{"ram-size", "512M"}}, base);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->mode, CacheMode::kWriteAround);
  EXPECT_EQ(r->ram_size, 512u << 20);
}

TEST(Policy, JsonRoundTrip) {
  for (const auto& p : policy::DefaultPolicies()) {
    auto back = policy::PolicyFromJson(policy::PolicyToJson(p));
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, p);
  }
  EXPECT_FALSE(policy::PolicyFromJson(json{{"name", "x"}, {"colour", "red"}}));
  EXPECT_FALSE(policy::PolicyFromJson(json{{"description", "no name"}}));
  EXPECT_FALSE(policy::PolicyFromJson(json{{"name", "x"}, {"description", 5}}));
  EXPECT_FALSE(policy::PolicyFromJson(json{{"name", "x"}, {"description", std::string(2000, 'd')}}));
}

TEST(Policy, WriteBackIsStorable) {
  auto p = policy::PolicyFromJson(json{{"name", "wb"}, {"rules", {{"mode", "write-back"}}}});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->rules.mode, CacheMode::kWriteBack);
}

TEST(Policy, DriverOptionsUseTheDriversNames) {
  Rules r;
  r.mode = CacheMode::kWriteAround;
  json o = policy::DriverOptions(r, "hc-vda", "libvirt-1-format");
  EXPECT_EQ(o["driver"], "hostcache");
  EXPECT_EQ(o["node-name"], "hc-vda");
  EXPECT_EQ(o["file"], "libvirt-1-format");
  EXPECT_EQ(o["mode"], "write-around");
  EXPECT_EQ(o["ram-size"], 256u << 20);
  EXPECT_EQ(o["block-size"], 4096);
  EXPECT_EQ(o["admit-after"], 1);
  EXPECT_EQ(o["seq-cutoff"], 4u << 20);
  EXPECT_EQ(o["max-dirty-age-ms"], 5000);
  EXPECT_FALSE(o.contains("max-dirty")) << "0 leaves the driver's default";
  // Options the driver does not know must not reach it ("does not support
  // the option"): no SSD rules.
  EXPECT_EQ(o.size(), 9u);
  r.max_dirty = 64 << 20;
  EXPECT_EQ(policy::DriverOptions(r, "n", "f")["max-dirty"], 64 << 20);
  // With an SSD tier: the child, origin-id and ssd-create (off unless
  // said otherwise: a tier must not be formatted by accident).
  policy::SsdSpec ssd{"/ssd/u-vda.hcssd", "hc-vda-ssd", "u/vda"};
  json t = policy::DriverOptions(r, "hc-vda", "f", &ssd);
  EXPECT_EQ(t["ssd"]["filename"], "/ssd/u-vda.hcssd");
  EXPECT_EQ(t["origin-id"], "u/vda");
  EXPECT_EQ(t["ssd-create"], false);
  ssd.create = true;
  json reopen = policy::DriverOptions(r, "hc-vda", "f", &ssd, true);
  EXPECT_EQ(reopen["ssd"], "hc-vda-ssd");
  EXPECT_EQ(reopen["ssd-create"], true);
}

TEST(Policy, ReopenCannotChangeBlockSize) {
  Rules a, b;
  b.mode = CacheMode::kPassThrough;
  b.ram_size = 1 << 30;
  EXPECT_TRUE(policy::ReopenCompatible(a, b));
  b.block_size = 8192;
  EXPECT_FALSE(policy::ReopenCompatible(a, b));
}

}  // namespace
}  // namespace hc
