// Reading libvirt domain XML and writing the hostcache filters into it.
//
// The persistent way to put a filter under a disk (TECHNICAL-NOTES §4,
// docs/LIBVIRT.md): a <qemu:commandline> -blockdev adds the filter node with
// `file` = libvirt's node of the disk's top image, and a <qemu:override>
// sets the disk's device (which needs a user alias "ua-...") `drive`
// property to the filter.  libvirt names its nodes libvirt-N-format (or
// libvirt-N-storage for raw images, which get no format layer); N is given
// out at start in reverse disk order (libvirt's order, i.e. the XML libvirt
// returns), each disk taking one number for its top image and the next ones
// for its backing chain; an empty drive uses up a number too.  The
// generator therefore needs each disk's chain length (PredictTopNodes).
// docs/LIBVIRT.md section 2 has the rule as verified against libvirt 11.3.
//
// Everything here is pure: strings in, strings out; thread-safe.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace hc::libvirt {

inline constexpr const char* kQemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0";
// Our filter nodes are named kNodePrefix + target ("hc-vda").
inline constexpr const char* kNodePrefix = "hc-";

struct DiskInfo {
  std::string target;  // "vda"
  std::string bus;     // "virtio", "scsi", "sata", ...
  std::string device;  // "disk", "cdrom", "lun", "floppy"
  std::string type;    // "file", "block", "network", "volume"
  std::string format;  // <driver type=...>, "raw" when absent
  std::string source;  // file or device path, or "protocol:name" for network; "" = no medium
  std::string alias;   // <alias name=...> ("" in a definition without one)
  int index = 0;       // libvirt's node index of the top image (live XML only; 0 unknown)
  int backing_count = 0;          // <backingStore> images written in the XML below the top
  bool chain_terminated = false;  // the XML ends the chain (<backingStore/>)
  bool has_format_layer = true;   // libvirt puts a format node over the storage node
  bool readonly = false;

  bool empty() const { return source.empty(); }
};

struct DomainInfo {
  std::string name;
  std::string uuid;
  std::string emulator;
  std::vector<DiskInfo> disks;  // in XML order
};

Result<DomainInfo> ParseDomain(const std::string& xml);

// The disk of `info` with target `target`; nullptr when it has none.
const DiskInfo* FindDisk(const DomainInfo& info, const std::string& target);

// libvirt's node name of a disk's top image for node index `index`.
std::string LibvirtNodeName(const DiskInfo& disk, int index);

// How many images a disk's chain has (top included), for disks whose chain
// the XML does not end.  Real: qemu-img info --backing-chain.
using ChainLengthFn = std::function<Result<int>(const DiskInfo& disk)>;

// The node names libvirt will give each non-empty disk's top image at the
// next start of this definition: target -> "libvirt-N-format".
Result<std::map<std::string, std::string>> PredictTopNodes(const DomainInfo& dom,
                                                           const ChainLengthFn& chain_length);

// The node names of the running domain (from a live XML's indexes).
std::map<std::string, std::string> LiveTopNodes(const DomainInfo& live);

// One filter to write into a definition.
struct FilterSpec {
  std::string target;     // disk target
  std::string node_name;  // the filter's node name
  nlohmann::json options; // complete -blockdev options (driver, node-name, file, ...)
};

// Filters that a definition carries now (ours only), keyed by target.
struct InstalledFilter {
  std::string target;
  std::string alias;
  nlohmann::json options;
};
Result<std::map<std::string, InstalledFilter>> ParseInstalledFilters(const std::string& xml);

// The node names of every hostcache -blockdev of ours in <qemu:commandline>,
// also those whose disk is gone from the definition.
Result<std::vector<std::string>> ParseFilterNodeNames(const std::string& xml);

// Rewrites `xml` so that it carries exactly `filters` (earlier hostcache
// entries are removed, everything else is kept) and, when `emulator` is not
// empty, uses that emulator.  Disks that get a filter and lack a user alias
// get "ua-hc-<target>".  Idempotent.
Result<std::string> ApplyFilters(const std::string& xml, const std::vector<FilterSpec>& filters,
                                 const std::string& emulator);

// The DAC base label of QEMU processes in a host capabilities XML
// (<secmodel><model>dac</model><baselabel type='kvm'>+64055:+64055</...>).
Result<std::pair<uint32_t, uint32_t>> ParseDacBaseLabel(const std::string& capabilities_xml);

// A disk target as libvirt names them ("vda", "sdb", "hdc", "xvda").
bool ValidTarget(const std::string& target);

}  // namespace hc::libvirt
