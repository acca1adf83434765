// Domain XML reading and the filter generator, on real-looking domain XML
// (several disks, written and probed backing chains, a CD-ROM, foreign
// <qemu:commandline> arguments).
#include <sstream>

#include <gtest/gtest.h>
#include <pugixml.hpp>

#include "fakes.h"
#include "manager/libvirt/block_graph.h"
#include "manager/libvirt/domain_xml.h"
#include "manager/policy/policy.h"

namespace hc::libvirt {
namespace {

using nlohmann::json;
using testing::TestData;

Result<int> Probe(const DiskInfo& d) {
  // web-top.qcow2 -> web-mid.qcow2 -> web-base.raw, as qemu-img would say.
  if (d.source == "/var/lib/libvirt/images/web-top.qcow2") return 3;
  return 1;
}

TEST(DomainXml, ParsesDisksOfALiveDefinition) {
  auto info = ParseDomain(TestData("web.live.xml"));
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->name, "web");
  EXPECT_EQ(info->uuid, "6a2f3b4c-1d2e-4f50-8a9b-0c1d2e3f4a5b");
  ASSERT_EQ(info->disks.size(), 4u);
  const auto& cd = info->disks[0];
  EXPECT_EQ(cd.device, "cdrom");
  EXPECT_TRUE(cd.empty());
  const auto& vda = info->disks[1];
  EXPECT_EQ(vda.target, "vda");
  EXPECT_EQ(vda.alias, "virtio-disk0");
  EXPECT_EQ(vda.index, 4);
  EXPECT_EQ(vda.backing_count, 2);
  EXPECT_TRUE(vda.chain_terminated);
  EXPECT_TRUE(vda.has_format_layer);
  const auto& vdb = info->disks[2];
  EXPECT_EQ(vdb.format, "raw");
  EXPECT_FALSE(vdb.has_format_layer);
  EXPECT_EQ(LibvirtNodeName(vdb, vdb.index), "libvirt-3-storage");
  const auto& vdc = info->disks[3];
  EXPECT_EQ(vdc.type, "block");
  EXPECT_EQ(vdc.source, "/dev/mapper/san-web-logs");
  auto live = LiveTopNodes(*info);
  EXPECT_EQ(live.at("vda"), "libvirt-4-format");
  EXPECT_EQ(live.at("vdb"), "libvirt-3-storage");
  EXPECT_EQ(live.at("vdc"), "libvirt-1-format");
  EXPECT_EQ(live.count("hdc"), 0u);
}

TEST(DomainXml, PredictsLibvirtsNodeNamesFromTheDefinition) {
  // libvirt numbers disks last-to-first, each disk's chain right after its
  // top image (the live XML above is what libvirt made of this definition).
  auto info = ParseDomain(TestData("web.inactive.xml"));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->disks[1].index, 0);
  EXPECT_FALSE(info->disks[1].chain_terminated);
  EXPECT_TRUE(info->disks[3].chain_terminated);
  EXPECT_EQ(info->disks[3].backing_count, 1);
  auto nodes = PredictTopNodes(*info, Probe);
  ASSERT_TRUE(nodes) << nodes.error().message;
  auto live = LiveTopNodes(*ParseDomain(TestData("web.live.xml")));
  EXPECT_EQ(*nodes, live);
}

TEST(DomainXml, ProbedChainLengthShiftsEarlierDisksOnly) {
  auto info = ParseDomain(TestData("web.inactive.xml"));
  auto nodes = PredictTopNodes(*info, [](const DiskInfo&) -> Result<int> { return 1; });
  ASSERT_TRUE(nodes);
  EXPECT_EQ(nodes->at("vdc"), "libvirt-1-format");
  EXPECT_EQ(nodes->at("vdb"), "libvirt-3-storage");
  EXPECT_EQ(nodes->at("vda"), "libvirt-4-format");
  // A chain that cannot be read makes the prediction fail, not guess.
  auto fail = PredictTopNodes(*info, [](const DiskInfo&) -> Result<int> {
    return Fail(ErrorCode::kFailedPrecondition, "unreadable");
  });
  EXPECT_FALSE(fail);
}

TEST(DomainXml, NumberingAsVerifiedAgainstLibvirt) {
  // docs/LIBVIRT.md section 2: vda qcow2 -> qcow2 -> raw, vdb raw, vdc
  // qcow2, vdd raw block device, vde NBD, hdc an empty CD-ROM (last, so it
  // takes number 1 without getting a node).
  auto info = ParseDomain(TestData("example.inactive.xml"));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->disks[4].source, "nbd:export");
  auto nodes = PredictTopNodes(*info, [](const DiskInfo& d) -> Result<int> {
    return d.source == "/images/a-top.qcow2" ? 3 : 1;
  });
  ASSERT_TRUE(nodes) << nodes.error().message;
  std::map<std::string, std::string> want = {
      {"vde", "libvirt-2-storage"}, {"vdd", "libvirt-3-storage"}, {"vdc", "libvirt-4-format"},
      {"vdb", "libvirt-5-storage"}, {"vda", "libvirt-6-format"}};
  EXPECT_EQ(*nodes, want);
}

TEST(DomainXml, ApplyFiltersWritesCommandlineOverrideAliasAndEmulator) {
  const std::string xml = TestData("web.inactive.xml");
  policy::Rules r;
  std::vector<FilterSpec> specs = {
      {"vda", "hc-vda", policy::DriverOptions(r, "hc-vda", "libvirt-4-format")},
      {"vdb", "hc-vdb", policy::DriverOptions(r, "hc-vdb", "libvirt-3-storage")}};
  auto out = ApplyFilters(xml, specs, "/opt/hostcache/qemu-system-x86_64");
  ASSERT_TRUE(out) << out.error().message;
  auto info = ParseDomain(*out);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->emulator, "/opt/hostcache/qemu-system-x86_64");
  EXPECT_EQ(info->disks[1].alias, "ua-hc-vda");  // had none
  EXPECT_EQ(info->disks[2].alias, "ua-data");    // kept the user's
  auto installed = ParseInstalledFilters(*out);
  ASSERT_TRUE(installed);
  ASSERT_EQ(installed->size(), 2u);
  EXPECT_EQ(installed->at("vda").alias, "ua-hc-vda");
  EXPECT_EQ(installed->at("vda").options["file"], "libvirt-4-format");
  EXPECT_EQ(installed->at("vdb").options["file"], "libvirt-3-storage");
  // The foreign arguments are still there, before ours.
  EXPECT_NE(out->find("<qemu:arg value=\"-L\" />"), std::string::npos);
  EXPECT_LT(out->find("/usr/share/seabios"), out->find("-blockdev"));
  EXPECT_NE(out->find("<qemu:property name=\"drive\" type=\"string\" value=\"hc-vdb\" />"),
            std::string::npos);
  EXPECT_NE(out->find("<qemu:device alias=\"ua-data\">"), std::string::npos);
}

TEST(DomainXml, ApplyFiltersIsIdempotentAndReversible) {
  const std::string xml = TestData("web.inactive.xml");
  policy::Rules r;
  std::vector<FilterSpec> specs = {
      {"vdc", "hc-vdc", policy::DriverOptions(r, "hc-vdc", "libvirt-1-format")}};
  auto once = ApplyFilters(xml, specs, "");
  auto twice = ApplyFilters(*once, specs, "");
  ASSERT_TRUE(once && twice);
  EXPECT_EQ(*once, *twice);
  auto none = ApplyFilters(*twice, {}, "");
  ASSERT_TRUE(none);
  EXPECT_TRUE(ParseInstalledFilters(*none)->empty());
  EXPECT_EQ(none->find("qemu:override"), std::string::npos);
  EXPECT_NE(none->find("/usr/share/seabios"), std::string::npos);
  // Changing the rules replaces the old entry rather than adding one.
  r.mode = policy::CacheMode::kWriteAround;
  specs[0].options = policy::DriverOptions(r, "hc-vdc", "libvirt-1-format");
  auto changed = ApplyFilters(*once, specs, "");
  auto f = ParseInstalledFilters(*changed);
  ASSERT_EQ(f->size(), 1u);
  EXPECT_EQ(f->at("vdc").options["mode"], "write-around");
  EXPECT_EQ(changed->find("write-through"), std::string::npos);
}

TEST(DomainXml, AddsTheQemuNamespaceWhenMissing) {
  const std::string xml =
      "<domain type='kvm'><name>a</name><uuid>u</uuid><devices>"
      "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
      "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
      "<source file='/a.img'/><target dev='sda' bus='scsi'/><alias name='scsi0-0-0-0'/></disk>"
      "</devices></domain>";
  auto out = ApplyFilters(xml, {{"sda", "hc-sda", json{{"driver", "hostcache"},
                                                       {"node-name", "hc-sda"},
                                                       {"file", "libvirt-1-storage"}}}},
                          "");
  ASSERT_TRUE(out);
  EXPECT_NE(out->find("xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\""),
            std::string::npos);
  auto info = ParseDomain(*out);
  EXPECT_EQ(info->disks[0].alias, "ua-hc-sda");
  EXPECT_EQ(info->emulator, "/usr/bin/qemu-system-x86_64");
  EXPECT_EQ(ParseInstalledFilters(*out)->size(), 1u);
}

TEST(DomainXml, UnknownDiskAndBrokenXmlAreErrors) {
  auto out = ApplyFilters(TestData("web.inactive.xml"),
                          {{"vdz", "hc-vdz", json{{"driver", "hostcache"}, {"node-name", "hc-vdz"}}}},
                          "");
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(ParseDomain("<domain><name>x</name"));
  EXPECT_FALSE(ParseDomain("<network/>"));
}

TEST(DomainXml, ForeignHostcacheNodesAreNotOurs) {
  // A -blockdev of the hostcache driver that hostcached did not write
  // (node name without the hc- prefix) is left alone.
  std::string xml = TestData("web.inactive.xml");
  xml.replace(xml.find("<qemu:arg value='/usr/share/seabios'/>"), 0,
              "<qemu:arg value='/usr/share/seabios'/><qemu:arg value='-blockdev'/>"
              "<qemu:arg value='{\"driver\":\"hostcache\",\"node-name\":\"mine\","
              "\"file\":\"libvirt-1-format\"}'/>");
  auto out = ApplyFilters(xml, {}, "");
  ASSERT_TRUE(out);
  EXPECT_NE(out->find("mine"), std::string::npos);
}

TEST(DomainXml, FilterArgumentsOfAnyShapeDoNotThrow) {
  // A definition is edited by people: our -blockdev argument's fields may
  // have any type.
  for (const char* arg : {R"({"driver":"hostcache","node-name":1})", R"({"driver":5})",
                          R"({"driver":"hostcache","node-name":["hc-vda"]})",
                          R"({"driver":"hostcache","node-name":"hc-vda","ssd":{"filename":7}})",
                          "[1,2]", "\"hc-vda\"", "{"}) {
    SCOPED_TRACE(arg);
    std::string xml = TestData("web.inactive.xml");
    pugi::xml_document doc;
    ASSERT_TRUE(doc.load_string(xml.c_str()));
    auto cmd = doc.document_element().child("qemu:commandline");
    cmd.append_child("qemu:arg").append_attribute("value") = "-blockdev";
    cmd.append_child("qemu:arg").append_attribute("value") = arg;
    std::ostringstream out;
    doc.save(out);
    xml = out.str();
    EXPECT_NO_THROW({
      auto f = ParseInstalledFilters(xml);
      EXPECT_TRUE(f);
      auto n = ParseFilterNodeNames(xml);
      EXPECT_TRUE(n);
      auto a = ApplyFilters(xml, {}, "/opt/qemu");
      EXPECT_TRUE(a);
    });
  }
}

TEST(DomainXml, EveryFrontendOfAnOverrideIsCleaned) {
  // libvirt applies the properties of each <qemu:frontend> of a device;
  // one left behind would point the disk at a filter that is gone.
  // (Found by the manager-domain-xml fuzz target.)
  std::string xml = TestData("web.inactive.xml");
  const std::string fe =
      "<qemu:frontend><qemu:property name='drive' type='string' value='hc-vdb'/>"
      "</qemu:frontend>";
  xml.replace(xml.find("</qemu:commandline>"), 19,
              "<qemu:arg value='-blockdev'/><qemu:arg value='{\"driver\":\"hostcache\","
              "\"node-name\":\"hc-vdb\",\"file\":\"libvirt-3-storage\"}'/>"
              "</qemu:commandline><qemu:override><qemu:device alias='ua-data'>" +
                  fe + "text" + fe + "</qemu:device></qemu:override>");
  auto installed = ParseInstalledFilters(xml);
  ASSERT_TRUE(installed);
  EXPECT_EQ(installed->count("vdb"), 1u);
  auto none = ApplyFilters(xml, {}, "");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->find("hc-vdb"), std::string::npos) << *none;
  FilterSpec f{"vdb", "hc-vdb",
               policy::DriverOptions(policy::Rules{}, "hc-vdb", "libvirt-3-storage")};
  auto once = ApplyFilters(xml, {f}, "");
  ASSERT_TRUE(once);
  EXPECT_EQ(*ApplyFilters(*once, {f}, ""), *once);
}

TEST(DomainXml, ANamespacePrefixNoParserTakesIsNotUsed) {
  // pugixml reads xmlns:-q, but XML written with that prefix could not be
  // read back.  (Found by the manager-domain-xml fuzz target.)
  std::string xml = TestData("web.inactive.xml");
  xml.replace(xml.find("xmlns:qemu="), 10, "xmlns:-q");
  FilterSpec f{"vdb", "hc-vdb",
               policy::DriverOptions(policy::Rules{}, "hc-vdb", "libvirt-3-storage")};
  auto once = ApplyFilters(xml, {f}, "");
  ASSERT_TRUE(once);
  EXPECT_TRUE(ParseDomain(*once)) << *once;
  auto filters = ParseInstalledFilters(*once);
  ASSERT_TRUE(filters) << *once;
  EXPECT_EQ(filters->count("vdb"), 1u) << *once;
}

TEST(DomainXml, ValidTargets) {
  for (const char* t : {"vda", "vdz", "vdaa", "sda", "hdc", "xvdb", "fd0"}) {
    EXPECT_TRUE(ValidTarget(t)) << t;
  }
  for (const char* t : {"", "vd", "VDA", "vda1", "../etc", "vda;", "nvme0n1"}) {
    EXPECT_FALSE(ValidTarget(t)) << t;
  }
}

TEST(BlockGraph, ParsesQueryBlockGraphAndStats) {
  json qb = json::parse(R"([
    {"device": "", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend",
     "inserted": {"node-name": "hc-vda", "drv": "hostcache"}},
    {"device": "", "qdev": "/machine/peripheral/ide0-1-0", "locked": false}])");
  auto devs = ParseQueryBlock(qb);
  ASSERT_TRUE(devs);
  ASSERT_EQ(devs->size(), 2u);
  EXPECT_EQ(FindDeviceByAlias(*devs, "virtio-disk0")->node_name, "hc-vda");
  EXPECT_EQ(FindDeviceByAlias(*devs, "ide0-1-0")->node_name, "");
  EXPECT_EQ(FindDeviceByAlias(*devs, "virtio-disk"), nullptr);
  EXPECT_FALSE(ParseQueryBlock(json::object()));

  json g = json::parse(R"({"nodes": [
      {"id": 1, "type": "block-backend", "name": ""},
      {"id": 2, "type": "block-driver", "name": "hc-vda"},
      {"id": 3, "type": "block-driver", "name": "libvirt-1-format"},
      {"id": 4, "type": "block-driver", "name": "libvirt-1-storage"}],
    "edges": [{"parent": 1, "child": 2, "name": "root"},
              {"parent": 2, "child": 3, "name": "file"},
              {"parent": 3, "child": 4, "name": "file"}]})");
  auto graph = ParseBlockGraph(g);
  ASSERT_TRUE(graph);
  EXPECT_EQ(graph->at("hc-vda").at("file"), "libvirt-1-format");
  EXPECT_EQ(graph->at("libvirt-1-format").at("file"), "libvirt-1-storage");

  json st = json::parse(R"([
    {"node-name": "hc-vda", "driver-specific": {"driver": "hostcache", "read-hits": 7}},
    {"node-name": "libvirt-1-storage", "driver-specific": {"driver": "file"}},
    {"device": "x"}])");
  auto stats = ParseNodeStats(st);
  EXPECT_EQ(stats.at("hc-vda")["read-hits"], 7);
  EXPECT_EQ(stats.size(), 2u);
  EXPECT_EQ(QmpCommand("query-block"), "{\"execute\":\"query-block\"}");
}

TEST(BlockGraph, RepliesOfAnyShapeDoNotThrow) {
  for (const char* text :
       {"5", "null", "[]", "{}", R"([{"qdev": 1, "inserted": {"node-name": []}}])",
        R"([1, "x", {"inserted": 5}])", R"({"nodes": 5, "edges": []})",
        R"({"nodes": [5, {"id": "2", "type": 1, "name": 3}], "edges": [{"parent": {}}]})",
        R"([{"node-name": 1, "driver-specific": {}}, {"node-name": "a", "driver-specific": 1}])"}) {
    SCOPED_TRACE(text);
    json j = json::parse(text);
    EXPECT_NO_THROW({
      (void)ParseQueryBlock(j);
      (void)ParseBlockGraph(j);
      (void)ParentCounts(j);
      (void)ParseNodeStats(j);
    });
  }
  EXPECT_TRUE(ParseNodeStats(json::parse(R"([{"node-name": 1, "driver-specific": {}}])")).empty());
  EXPECT_FALSE(ParseBlockGraph(json::parse(R"({"nodes": 5, "edges": []})")));
  // The monitor's reply text, as the real client reads it.
  EXPECT_EQ(*QmpReturn(R"({"return": {"a": 1}})"), R"({"a":1})");
  EXPECT_EQ(*QmpReturn(R"({"QMP": 1})"), "{}");
  EXPECT_EQ(QmpReturn(R"({"error": {"class": "GenericError", "desc": "no"}})").error().message,
            "QEMU: no");
  EXPECT_EQ(QmpReturn(R"({"error": 3})").error().message, "QEMU: error without description");
  EXPECT_EQ(QmpReturn(R"({"error": {"desc": 3}})").error().code,
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(QmpReturn("[1]").error().code, ErrorCode::kInternal);
  EXPECT_EQ(QmpReturn("{\"return\": \"\xff\"}").error().code, ErrorCode::kInternal);
}

TEST(DomainXml, QemusUserFromTheCapabilities) {
  auto caps = R"(<capabilities><host><secmodel><model>apparmor</model><doi>0</doi></secmodel>
    <secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>+64055:+994</baselabel>
    <baselabel type='qemu'>+64055:+994</baselabel></secmodel></host></capabilities>)";
  auto l = ParseDacBaseLabel(caps);
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->first, 64055u);
  EXPECT_EQ(l->second, 994u);
  EXPECT_FALSE(ParseDacBaseLabel("<capabilities><host/></capabilities>"));
}

}  // namespace
}  // namespace hc::libvirt
