// The OpenAPI 3.0 description of the REST API.  A unit test checks that it
// lists exactly the routes Api::Routes() serves, with the same methods and
// authentication.
#include "manager/http/api.h"

namespace hc::http {

using nlohmann::json;

namespace {

json Ref(const std::string& schema) { return json{{"$ref", "#/components/schemas/" + schema}}; }

json Content(const json& schema, const std::string& type = "application/json") {
  return json{{type, {{"schema", schema}}}};
}

json ProblemResponse(const std::string& description) {
  return json{{"description", description},
              {"content", Content(Ref("Problem"), "application/problem+json")}};
}

json Ok(const std::string& description, const json& schema) {
  return json{{"description", description}, {"content", Content(schema)}};
}

json PathParam(const std::string& name, const std::string& description) {
  return json{{"name", name},
              {"in", "path"},
              {"required", true},
              {"description", description},
              {"schema", {{"type", "string"}}}};
}

json QueryParam(const std::string& name, const std::string& description, const json& schema) {
  return json{{"name", name}, {"in", "query"}, {"required", false},
              {"description", description}, {"schema", schema}};
}

// Adds the error responses every authenticated operation can give.
json Op(const std::string& id, const std::string& summary, json responses,
        const json& params = json::array()) {
  responses["401"] = ProblemResponse("Missing or wrong bearer token.");
  responses["500"] = ProblemResponse("Internal error.");
  json op{{"operationId", id}, {"summary", summary}, {"responses", responses}};
  if (!params.empty()) op["parameters"] = params;
  return op;
}

json Schemas() {
  json size{{"oneOf", json::array({json{{"type", "integer"}, {"minimum", 0}},
                                   json{{"type", "string"}, {"example", "256M"}}})}};
  json rules{
      {"type", "object"},
      {"additionalProperties", false},
      {"description",
       "Cache rules. Names follow the hostcache driver's options where they map. Sizes are "
       "bytes, as integers or strings with k/M/G/T suffixes."},
      {"properties",
       {{"mode",
         {{"type", "string"},
          {"enum", {"pass-through", "write-around", "write-through", "write-back"}},
          {"default", "write-through"}}},
        {"ram-size", size},
        {"block-size", size},
        {"admit-after", {{"type", "integer"}, {"minimum", 1}, {"default", 1}}},
        {"seq-cutoff", size},
        {"ssd-size",
         {{"oneOf", size["oneOf"]},
          {"description",
           "Bytes of SSD tier (0 = none): hostcached makes the file "
           "<ssd-dir>/<vm-uuid>-<target>.hcssd of this size and gives it to the filter as its "
           "ssd child."}}},
        {"ssd-dir",
         {{"type", "string"},
          {"description",
           "Absolute directory of the SSD tier files (made with mode 0700). It must lie under "
           "one of the daemon's SSD roots (--ssd-root, default /var/lib/hostcache/ssd; 400 "
           "otherwise) and is stored canonical (symbolic links resolved)."}}},
        {"migrate-without-ssd",
         {{"type", "boolean"},
          {"default", false},
          {"description",
           "A live migration to a host without the SSD budget for the tier is admitted there "
           "without it (RAM tier only); false: that host refuses the migration."}}},
        {"max-dirty", size},
        {"max-dirty-age-ms",
         {{"type", "integer"}, {"minimum", 1}, {"maximum", 3600000}, {"default", 5000}}}}}};
  json policy{{"type", "object"},
              {"required", {"name"}},
              {"properties",
               {{"name", {{"type", "string"}, {"pattern", "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"}}},
                {"description", {{"type", "string"}, {"maxLength", 1024}}},
                {"rules", Ref("Rules")},
                {"assigned_disks", {{"type", "integer"}, {"readOnly", true}}},
                {"disks", {{"type", "array"}, {"items", Ref("Assignment")}, {"readOnly", true}}}}}};
  json compliance{
      {"type", "object"},
      {"properties",
       {{"state",
         {{"type", "string"},
          {"enum", {"compliant", "pending-restart", "not-compliant", "error", "unknown"}}}},
        {"reason", {{"type", "string"}}},
        {"changed", {{"type", "string"}, {"format", "date-time"}}},
        {"checked", {{"type", "string"}, {"format", "date-time"}}}}}};
  json tier{
      {"type", "object"},
      {"description",
       "The SSD tier file hostcached made for the disk. Once the driver has formatted it "
       "(formatted), it may hold write-back data the disk does not have yet: the filter opens "
       "it with ssd-create=off, and a missing or replaced file is an error until restored or "
       "forgotten (POST .../ssd-tier/forget). stale: the file was not closed cleanly and the "
       "running VM was found without its filter, so its journal may be older than the disk; it "
       "is not attached again until forgotten."},
      {"properties",
       {{"path", {{"type", "string"}}},
        {"origin_id", {{"type", "string"}}},
        {"formatted", {{"type", "boolean"}}},
        {"stale", {{"type", "boolean"}}},
        {"recorded", {{"type", "string"}, {"format", "date-time"}}},
        {"changed", {{"type", "string"}, {"format", "date-time"}}}}}};
  json assignment{{"type", "object"},
                  {"properties",
                   {{"vm", {{"type", "string"}}},
                    {"vm_uuid", {{"type", "string"}}},
                    {"target", {{"type", "string"}}},
                    {"policy", {{"type", "string"}}},
                    {"node_name", {{"type", "string"}}},
                    {"compliance", Ref("Compliance")},
                    {"ssd_tier",
                     {{"allOf", {Ref("SsdTier")}},
                      {"nullable", true},
                      {"description",
                       "Given by the routes of one disk (GET/PUT .../policy, "
                       ".../ssd-tier/forget); null when the disk has no tier."}}}}}};
  json disk{{"type", "object"},
            {"properties",
             {{"target", {{"type", "string"}}},
              {"device", {{"type", "string"}}},
              {"bus", {{"type", "string"}}},
              {"type", {{"type", "string"}}},
              {"format", {{"type", "string"}}},
              {"source", {{"type", "string"}}},
              {"readonly", {{"type", "boolean"}}},
              {"policy", {{"type", "string"}, {"nullable", true}}},
              {"node_name", {{"type", "string"}}},
              {"compliance", Ref("Compliance")}}}};
  json vm{{"type", "object"},
          {"properties",
           {{"name", {{"type", "string"}}},
            {"uuid", {{"type", "string"}}},
            {"state", {{"type", "string"}, {"enum", {"running", "shut-off", "missing"}}}},
            {"exists", {{"type", "boolean"}}},
            {"persistent", {{"type", "boolean"}}},
            {"disks", {{"type", "array"}, {"items", Ref("Disk")}}}}}};
  json sample{{"type", "object"},
              {"properties",
               {{"time", {{"type", "string"}, {"format", "date-time"}}},
                {"time_ms", {{"type", "integer"}}},
                {"counters", {{"type", "object"}, {"additionalProperties", true}}},
                {"hit_ratio", {{"type", "number"}}}}}};
  json stats{{"type", "object"},
             {"properties",
              {{"vm", {{"type", "string"}}},
               {"vm_uuid", {{"type", "string"}}},
               {"target", {{"type", "string"}}},
               {"policy", {{"type", "string"}}},
               {"current", {{"allOf", {Ref("StatSample")}}, {"nullable", true}}},
               {"series", {{"type", "array"}, {"items", Ref("StatSample")}}}}}};
  json event{{"type", "object"},
             {"properties",
              {{"id", {{"type", "integer"}}},
               {"time", {{"type", "string"}, {"format", "date-time"}}},
               {"level", {{"type", "string"}, {"enum", {"info", "warning", "error"}}}},
               {"vm", {{"type", "string"}}},
               {"target", {{"type", "string"}}},
               {"action",
                {{"type", "string"},
                 {"description",
                  "What happened, e.g. assign, unassign, define, insert-live, reopen-live, "
                  "replace-live, repair-live, remove-live, verify, compliance, ssd, ssd-lost, "
                  "ssd-forget, ssd-stale, ssd-emptied, hot-unplug, "
                  "unplug, migrate, migrate-drain, migrate-out, migrated-away, migrate-in, "
                  "policy-create, policy-update, policy-delete, libvirt, start, stop."}}},
               {"message", {{"type", "string"}}}}}};
  json problem{{"type", "object"},
               {"description", "RFC 7807 problem details."},
               {"properties",
                {{"type", {{"type", "string"}}},
                 {"title", {{"type", "string"}}},
                 {"status", {{"type", "integer"}}},
                 {"detail", {{"type", "string"}}},
                 {"code", {{"type", "string"}}}}}};
  json health{{"type", "object"},
              {"properties",
               {{"status", {{"type", "string"}}},
                {"version", {{"type", "string"}}},
                {"libvirt", {{"type", "string"}, {"enum", {"connected", "disconnected"}}}},
                {"database", {{"type", "string"}}},
                {"catalogue",
                 {{"type", "object"},
                  {"description",
                   "Where policies come from: this host's own (local) or a cluster's in etcd. "
                   "While etcd cannot be reached the state is disconnected, `problem` says "
                   "why, policy changes are answered 503 and caching goes on."},
                  {"properties",
                   {{"kind", {{"type", "string"}, {"enum", {"local", "etcd"}}}},
                    {"state", {{"type", "string"}, {"enum", {"connected", "disconnected"}}}},
                    {"endpoints", {{"type", "array"}, {"items", {{"type", "string"}}}}},
                    {"revision", {{"type", "integer"}}},
                    {"synced_ms", {{"type", "integer"}}},
                    {"retained", {{"type", "array"}, {"items", {{"type", "string"}}}}},
                    {"problem", {{"type", "string"}}}}}}}}}};
  json count{{"type", "integer"}, {"minimum", 0}};
  json ns{{"type", "number"}, {"nullable", true}};
  json budget{{"type", "object"},
              {"properties",
               {{"budget", count},
                {"reserved",
                 {{"type", "integer"},
                  {"description", "Bytes the assigned policies reserve (ram-size, ssd-size)."}}},
                {"used",
                 {{"type", "integer"},
                  {"description",
                   "Bytes the caches of running VMs hold at their newest sample (ram-used, "
                   "ssd-used)."}}},
                {"free",
                 {{"type", "integer"},
                  {"description", "budget - reserved: what further assignments may take."}}}}}};
  json summary{
      {"type", "object"},
      {"description",
       "The host at a glance. The io figures sum the newest sample of every cached disk of a "
       "running VM; the driver's counters count since its filter was opened."},
      {"properties",
       {{"version", {{"type", "string"}}},
        {"libvirt", {{"type", "string"}, {"enum", {"connected", "disconnected"}}}},
        {"ram", budget},
        {"ssd", budget},
        {"disks",
         {{"type", "object"},
          {"properties",
           {{"total", count},
            {"states",
             {{"type", "object"},
              {"description", "Assigned disks by compliance state (every state, 0 included)."},
              {"additionalProperties", count}}}}}}},
        {"io",
         {{"type", "object"},
          {"properties",
           {{"disks_sampled", count},
            {"read_hits", count},
            {"read_misses", count},
            {"hit_ratio", {{"type", "number"}, {"nullable", true},
                           {"description", "read_hits / reads; null before the first read."}}},
            {"hit_latency_avg_ns", ns},
            {"miss_latency_avg_ns", ns},
            {"hit_latency_p99_ns",
             {{"type", "integer"}, {"description", "The highest p99 of any disk."}}},
            {"miss_latency_p99_ns", count},
            {"dirty_bytes", count}}}}},
        {"policies",
         {{"type", "array"},
          {"items",
           {{"type", "object"},
            {"properties", {{"name", {{"type", "string"}}}, {"assigned_disks", count}}}}}}}}}};
  return json{{"Rules", rules},           {"Policy", policy}, {"Compliance", compliance},
              {"SsdTier", tier},
              {"Assignment", assignment}, {"Disk", disk},     {"Vm", vm},
              {"StatSample", sample},     {"DiskStats", stats}, {"Event", event},
              {"Problem", problem},       {"Health", health}, {"Summary", summary}};
}

json Build() {
  const json name = PathParam("name", "Policy name.");
  const json vm = PathParam("vm", "VM name or UUID.");
  const json target = PathParam("target", "Disk target device, as in <target dev=...> (vda).");
  const json unavailable = ProblemResponse("libvirtd cannot be reached; retry later.");
  json paths;
  paths["/api/v1/health"]["get"] = {
      {"operationId", "health"},
      {"summary", "Liveness: the daemon, its database and its libvirt connection."},
      {"security", json::array()},
      {"responses",
       {{"200", Ok("Healthy.", Ref("Health"))}, {"503", Ok("Degraded.", Ref("Health"))}}}};
  paths["/api/v1/openapi.json"]["get"] =
      Op("openapi", "This document.",
         {{"200", Ok("The OpenAPI document.", {{"type", "object"}})}});
  paths["/api/v1/summary"]["get"] =
      Op("summary",
         "The host at a glance: cache budgets, disks by compliance, hit ratio and latencies, "
         "policies with the number of disks using each.",
         {{"200", Ok("Summary.", Ref("Summary"))}});
  paths["/api/v1/policies"]["get"] = Op(
      "listPolicies", "List policies with the number of disks using each.",
      {{"200", Ok("Policies.", {{"type", "object"},
                                {"properties",
                                 {{"policies", {{"type", "array"}, {"items", Ref("Policy")}}}}}})}});
  paths["/api/v1/policies"]["post"] = Op(
      "createPolicy", "Create a policy.",
      {{"201", Ok("Created.", Ref("Policy"))},
       {"400", ProblemResponse("Invalid policy (the detail names the rule).")},
       {"409", ProblemResponse("A policy with that name exists.")}});
  paths["/api/v1/policies"]["post"]["requestBody"] = {{"required", true},
                                                      {"content", Content(Ref("Policy"))}};
  paths["/api/v1/policies/{name}"]["get"] =
      Op("getPolicy", "A policy and the disks that use it.",
         {{"200", Ok("The policy.", Ref("Policy"))}, {"404", ProblemResponse("No such policy.")}},
         json::array({name}));
  paths["/api/v1/policies/{name}"]["put"] = Op(
      "updatePolicy",
      "Change a policy's description or rules (rules not given keep their value); the new "
      "rules are re-applied to every disk that uses it, live and persistently.",
      {{"200", Ok("The policy, with its disks' compliance after re-applying.", Ref("Policy"))},
       {"400", ProblemResponse("Invalid rules.")},
       {"404", ProblemResponse("No such policy.")},
       {"409", ProblemResponse("The new sizes would exceed the host's cache budget, or a shut-off "
                               "VM using it has an SSD tier not closed cleanly that the new "
                               "rules would lose (no tier, another tier file, not write-back, "
                               "another block size): start that VM once first.")}},
      json::array({name}));
  paths["/api/v1/policies/{name}"]["put"]["requestBody"] = {
      {"required", true},
      {"content",
       Content({{"type", "object"},
                {"properties",
                 {{"description", {{"type", "string"}}}, {"rules", Ref("Rules")}}}})}};
  paths["/api/v1/policies/{name}"]["delete"] =
      Op("deletePolicy", "Delete a policy that no disk uses.",
         {{"204", {{"description", "Deleted."}}},
          {"404", ProblemResponse("No such policy.")},
          {"409", ProblemResponse("Disks use the policy.")}},
         json::array({name}));
  paths["/api/v1/vms"]["get"] = Op(
      "listVms", "VMs known to libvirt (and VMs gone from libvirt that still have assignments).",
      {{"200", Ok("VMs.", {{"type", "object"},
                           {"properties", {{"vms", {{"type", "array"}, {"items", Ref("Vm")}}}}}})},
       {"503", unavailable}});
  paths["/api/v1/vms/{vm}"]["get"] =
      Op("getVm", "A VM's disks with their source, policy and compliance.",
         {{"200", Ok("The VM.", Ref("Vm"))},
          {"404", ProblemResponse("No such VM.")},
          {"503", unavailable}},
         json::array({vm}));
  paths["/api/v1/vms/{vm}/migration-xml"]["get"] = Op(
      "getMigrationXml",
      "The domain XML to migrate a running VM with (virsh migrate --live --persistent --xml "
      "FILE): its migratable live XML with the hostcache filters of its assigned disks, so the "
      "destination runs them from the start. The SSD tier files must exist at the same paths "
      "on the destination.",
      {{"200", {{"description", "The domain XML."},
                {"content", {{"application/xml", {{"schema", {{"type", "string"}}}}}}}}},
       {"404", ProblemResponse("No such VM.")},
       {"409", ProblemResponse("The VM is not running.")},
       {"503", unavailable}},
      json::array({vm}));
  paths["/api/v1/vms/{vm}/migration"]["get"] = Op(
      "getMigration",
      "Where the VM's live migration is: `phase` (draining, migrating, switch-over, incoming; "
      "warming-up while a destination's warm-up runs; none), the seconds since it was first "
      "seen, and per assigned disk the driver's figures: write-back data still dirty, what the "
      "driver's pre-copy drain wrote back, and the destination's warm-up (state none, received, "
      "running or done; blocks and blocks done; bytes received in the stream). A disk whose "
      "statistics QEMU did not give (shut off, nodes inactive at switch-over) has reported "
      "false and no figures.",
      {{"200",
        Ok("The migration's progress.",
           json{{"type", "object"},
                {"properties",
                 {{"vm", {{"type", "string"}}},
                  {"phase", {{"type", "string"}}},
                  {"seconds", {{"type", "number"}}},
                  {"disks",
                   {{"type", "array"},
                    {"items",
                     {{"type", "object"},
                      {"properties",
                       {{"target", {{"type", "string"}}},
                        {"reported", {{"type", "boolean"}}},
                        {"dirty_bytes", {{"type", "integer"}}},
                        {"drained_bytes", {{"type", "integer"}}},
                        {"warm_up", {{"type", "object"}}}}}}}}}}}})},
       {"404", ProblemResponse("No such VM.")},
       {"503", unavailable}},
      json::array({vm}));
  paths["/api/v1/vms/{vm}/migrate"]["post"] = Op(
      "migrateVm",
      "Live-migrate a running VM to another libvirtd (virDomainMigrate3 driven by hostcached, "
      "with the migration XML, so the filters of its cached disks start with it). Blocks until "
      "the migration ends. Write-back disks are drained first (see drain_timeout_s); `seconds` is "
      "the migration's time without the drain. The destination needs the project's QEMU and the "
      "SSD tier files. The destination is one of the peers configured in the daemon's config "
      "file (peer = NAME=qemu+tls://HOST/system), by name.",
      {{"200", Ok("The VM runs on the destination.",
                  json{{"type", "object"},
                       {"properties",
                        {{"vm", {{"type", "string"}}},
                         {"destination", {{"type", "string"}}},
                         {"seconds", {{"type", "number"}}}}}})},
       {"400", ProblemResponse("Bad body, a destination that is no configured peer, or a "
                               "migrate_uri that is not tcp://HOST[:PORT] of the peer's "
                               "migration host.")},
       {"404", ProblemResponse("No such VM.")},
       {"409", ProblemResponse("The VM is not running or already migrating, the destination "
                               "cannot be reached, or the migration failed (the VM runs on "
                               "here).")},
       {"503", unavailable}},
      json::array({vm}));
  paths["/api/v1/vms/{vm}/migrate"]["post"]["requestBody"] = {
      {"required", true},
      {"content",
       Content({{"type", "object"},
                {"required", {"destination"}},
                {"additionalProperties", false},
                {"properties",
                 {{"destination",
                   {{"type", "string"},
                    {"description",
                     "the name of a peer configured in the daemon's config file (peer = "
                     "NAME=LIBVIRT-URI), e.g. host2"}}},
                  {"migrate_uri",
                   {{"type", "string"},
                    {"description",
                     "where QEMU streams to: tcp://HOST[:PORT] of the peer's migration host (its "
                     "peer-migrate-uri's host, else its libvirt URI's). Absent: the peer's "
                     "peer-migrate-uri, else where the destination libvirtd says"}}},
                  {"persistent", {{"type", "boolean"}, {"default", true}}},
                  {"undefine_source", {{"type", "boolean"}, {"default", false}}},
                  {"unsafe",
                   {{"type", "boolean"},
                    {"default", false},
                    {"description", "migrate even when libvirt cannot tell the storage is shared"}}},
                  {"drain_timeout_s",
                   {{"type", "number"},
                    {"minimum", 0},
                    {"maximum", 3600},
                    {"description",
                     "before the migration starts, write back the dirty data of write-back disks "
                     "for at most this long while the guest runs (0: no drain, the driver writes "
                     "it back at switch-over); default: the daemon's --migrate-drain-timeout"}}}}}})}};
  paths["/api/v1/peers"]["get"] = Op(
      "listPeers",
      "The configured migration peers (peer = NAME=LIBVIRT-URI in the config file) and whether "
      "each can be reached: probed in the background every 30 s (its libvirtd opened "
      "read-only and asked for its version). reachable is null until the first probe ends.",
      {{"200",
        Ok("The peers, in configuration order.",
           json{{"type", "object"},
                {"properties",
                 {{"peers",
                   {{"type", "array"},
                    {"items",
                     {{"type", "object"},
                      {"properties",
                       {{"name", {{"type", "string"}}},
                        {"uri", {{"type", "string"}}},
                        {"migrate_uri", {{"type", "string"}}},
                        {"reachable", {{"type", "boolean"}, {"nullable", true}}},
                        {"last_error", {{"type", "string"}}},
                        {"checked", {{"type", "string"}, {"nullable", true}}},
                        {"last_ok", {{"type", "string"}, {"nullable", true}}}}}}}}}}}})}});
  paths["/api/v1/migrations/prepare"]["post"] = Op(
      "prepareMigration",
      "Prepares this host for an incoming live migration before QEMU starts here (called by "
      "the libvirt hook /etc/libvirt/hooks/qemu.d/hostcache on `migrate begin`): checks this "
      "host's RAM and SSD budget for the VM's cached disks, makes their SSD tier files under "
      "this host's SSD root (blank, owned by QEMU's user) and returns the domain XML to start "
      "from (tier files and emulator of this host). A VM without hostcache filters or carried "
      "assignments comes back unchanged.",
      {{"200", Ok("The XML to start from, and what was done.",
                  json{{"type", "object"},
                       {"properties",
                        {{"xml", {{"type", "string"}}},
                         {"notes", {{"type", "array"}, {"items", {{"type", "string"}}}}}}}})},
       {"400", ProblemResponse("Bad body, or an incoming XML that is too large or invalid.")},
       {"409", ProblemResponse("Refused: the disks do not fit this host's budget (what is "
                               "short, on which host, by how much), or a tier file cannot be "
                               "made.")},
       {"503", unavailable}});
  paths["/api/v1/migrations/prepare"]["post"]["requestBody"] = {
      {"required", true},
      {"content",
       Content({{"type", "object"},
                {"required", {"xml"}},
                {"additionalProperties", false},
                {"properties",
                 {{"xml",
                   {{"type", "string"},
                    {"description", "the incoming domain XML (at most 512 KiB)"}}}}}})}};
  const std::string dp = "/api/v1/vms/{vm}/disks/{target}/policy";
  paths[dp]["get"] = Op("getDiskPolicy", "The policy assigned to a disk and its compliance.",
                        {{"200", Ok("The assignment.", Ref("Assignment"))},
                         {"404", ProblemResponse("No such VM, or no policy on the disk.")},
                         {"503", unavailable}},
                        json::array({vm, target}));
  paths[dp]["put"] = Op(
      "assignPolicy",
      "Assign a policy to a disk. A running VM gets the filter live; the persistent definition "
      "is updated so the disk stays cached after restarts and migrations.",
      {{"200", Ok("The assignment with its compliance.", Ref("Assignment"))},
       {"400", ProblemResponse("Bad body, unknown policy, or the disk cannot be cached.")},
       {"404", ProblemResponse("No such VM or disk.")},
       {"409", ProblemResponse("The host's cache budget would be exceeded, the policy's "
                               "ssd-dir cannot hold the disk's SSD tier file, or the VM is shut "
                               "off with an SSD tier not closed cleanly that the new policy "
                               "would lose (start it once first).")},
       {"503", unavailable}},
      json::array({vm, target}));
  paths[dp]["put"]["requestBody"] = {
      {"required", true},
      {"content", Content({{"type", "object"},
                           {"required", {"policy"}},
                           {"additionalProperties", false},
                           {"properties", {{"policy", {{"type", "string"}}}}}})}};
  paths[dp]["delete"] = Op(
      "unassignPolicy",
      "Unassign: the filter is written back and removed from the running VM and the "
      "definition. For a VM that no longer exists, the assignment is forgotten.",
      {{"204", {{"description", "Unassigned."}}},
       {"404", ProblemResponse("No such VM, or no policy on the disk.")},
       {"409", ProblemResponse("The running VM refused the removal, or the VM is shut off "
                               "with an SSD tier not closed cleanly (it may hold write-back "
                               "data: start the VM once first); nothing changed.")},
       {"503", unavailable}},
      json::array({vm, target}));
  paths["/api/v1/vms/{vm}/disks/{target}/ssd-tier/forget"]["post"] = Op(
      "forgetSsdTier",
      "Give up the disk's SSD tier when it is lost: its file is missing, blank, or holds "
      "another disk's tier although the driver had formatted it for this disk (compliance "
      "'error'). Write-back data the tier held that the disk does not have is lost. The "
      "record is cleared and the disk checked again: a new blank tier file is made, which the "
      "driver formats when the filter next opens (at the next start, or now by a live "
      "insertion). Also a stale tier (not closed cleanly, and the VM ran without its filter "
      "since, so its journal may be older than the disk): its file is deleted unwritten. An "
      "event (ssd-forget) records it. No body.",
      {{"200", Ok("The assignment after the check.", Ref("Assignment"))},
       {"400", ProblemResponse("A body other than {}.")},
       {"404", ProblemResponse("No such VM, no policy on the disk, or no SSD tier recorded.")},
       {"409", ProblemResponse("The tier file is there and holds this disk's tier (for "
                               "instance the running VM's, or a shut-off VM's not closed "
                               "cleanly, which its next start recovers): nothing to give up; "
                               "or the VM is being migrated.")},
       {"503", unavailable}},
      json::array({vm, target}));
  paths["/api/v1/vms/{vm}/disks/{target}/stats"]["get"] = Op(
      "diskStats", "The disk's cache counters now and as a recent time series.",
      {{"200", Ok("Statistics.", Ref("DiskStats"))},
       {"400", ProblemResponse("Bad 'points'.")},
       {"404", ProblemResponse("No policy on the disk.")},
       {"503", unavailable}},
      json::array({vm, target,
       QueryParam("points", "How many samples of the series (1..720, default 60).",
                  {{"type", "integer"}, {"minimum", 1}, {"maximum", 720}})}));
  paths["/api/v1/events"]["get"] = Op(
      "listEvents", "What the daemon did and why, newest first.",
      {{"200", Ok("Events.", {{"type", "object"},
                              {"properties",
                               {{"events", {{"type", "array"}, {"items", Ref("Event")}}}}}})},
       {"400", ProblemResponse("Bad query parameter.")}},
      json::array({QueryParam("since", "Only events with a larger id.", {{"type", "integer"}, {"minimum", 0}}),
       QueryParam("limit", "At most this many (1..1000, default 100).",
                  {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}}),
       QueryParam("vm", "Only events about this VM (name).", {{"type", "string"}}),
       QueryParam("action", "Only events of this action (assign, unassign, ...).",
                  {{"type", "string"}})}));
  paths["/api/v1/metrics"]["get"] = Op(
      "metrics",
      "Prometheus text format. Per-disk series have the labels domain and target_device, as "
      "libvirt-exporter's do.",
      {{"200", {{"description", "Metrics."},
                {"content", Content({{"type", "string"}}, "text/plain")}}}});
  paths["/metrics"]["get"] = paths["/api/v1/metrics"]["get"];
  paths["/metrics"]["get"]["operationId"] = "metricsAtRoot";
  paths["/metrics"]["get"]["summary"] =
      "The same as /api/v1/metrics (token included), at the path Prometheus scrapes by default.";
  return json{
      {"openapi", "3.0.3"},
      {"info",
       {{"title", "hostcached"},
        {"version", "1"},
        {"description",
         "Storage-policy manager of hostcache: policies, their assignment to VM disks, "
         "compliance and cache statistics. Every route but /health needs "
         "'Authorization: Bearer <token>' (the token file of hostcached). Errors are "
         "application/problem+json."}}},
      {"servers", json::array({json{{"url", "/"}}})},
      {"security", json::array({json{{"bearerAuth", json::array()}}})},
      {"paths", paths},
      {"components",
       {{"securitySchemes", {{"bearerAuth", {{"type", "http"}, {"scheme", "bearer"}}}}},
        {"schemas", Schemas()}}}};
}

}  // namespace

const json& Api::OpenApi() {
  static const json kDoc = Build();
  return kDoc;
}

}  // namespace hc::http
