import Foundation

/// Everything one benchmark run measured, written as BENCHMARKS.md,
/// bench-results.json and benchmarks.svg.
struct Report {
  struct CreatePoint {
    var liveEndpoints: Int
    var p50: Double
    var p99: Double
  }

  var rows: [Row] = []
  var notes: [String] = []
  var createCurve: [CreatePoint] = []
  var comparison: [ComparisonPoint] = []
  /// Per-count figures that go to bench-results.json but not the main table.
  var extraJSON: [String: Double] = [:]

  static let designs = ["tessera", "iptables", "ipset", "nft"]

  /// The key prefix of a design in bench-results.json (Tessera's keys have none).
  static func prefix(_ design: String) -> String { design == "tessera" ? "" : design + "_" }

  mutating func addComparison(_ points: [ComparisonPoint], extras: PolicyComparison.TesseraExtras) {
    comparison = points
    guard let largest = points.map(\.endpoints).max() else { return }
    func at(_ design: String) -> ComparisonPoint? {
      points.first { $0.design == design && $0.endpoints == largest }
    }
    for design in Self.designs {
      guard let point = at(design) else { continue }
      let name = design == "tessera" ? "Tessera eBPF" : design
      var row = Row(
        key: Self.prefix(design) + "conn_overhead_us",
        label: "per-connection policy cost, \(name), \(largest) endpoints (paired)",
        value: point.connection.overhead, unit: "µs",
        floor: "reference path p50 \(format(point.connection.referenceMedian)) µs", target: "")
      if design == "tessera" {
        row.target = "≤ min(ipset, nft) at every N (issue; same run)"
        row.judgement = Self.connectionJudgement(points)
      }
      rows.append(row)
    }
    let inProcessBest = ["ipset", "nft"].compactMap { at($0)?.joinInProcessMicroseconds }.min()
    for design in Self.designs {
      guard let point = at(design), !point.joinInProcessMicroseconds.isNaN else { continue }
      var row = Row(
        key: Self.prefix(design) + "pod_join_inproc_us",
        label:
          "pod join, kernel write in process, \(Self.inProcessJoin[design] ?? design), \(largest) endpoints, p50",
        value: point.joinInProcessMicroseconds, unit: "µs", floor: "no exec, no RPC", target: "")
      if design == "tessera", let inProcessBest {
        row.target = "≤ min(ipset, nft) = \(format(inProcessBest)) (issue; same run)"
        row.bound = .atMost(inProcessBest)
      }
      rows.append(row)
    }
    for design in Self.designs {
      guard let point = at(design) else { continue }
      rows.append(
        Row(
          key: design == "tessera" ? "pod_join_create_ms" : design + "_pod_join_control_ms",
          label:
            "pod join through the control plane, \(Self.controlJoin[design] ?? design), \(largest) endpoints, p50",
          value: point.joinControlMilliseconds, unit: "ms",
          floor: design == "tessera"
            ? "no exec; bare RPC above"
            : "exec floor not subtracted (`true` \(format(point.execFloorMilliseconds)) ms)",
          target: "side by side (issue)"))
    }
    for design in Self.designs {
      guard let point = at(design) else { continue }
      rows.append(
        Row(
          key: Self.prefix(design) + "resync_ms",
          label:
            "full resync of the group, \(design == "tessera" ? "Tessera ipcache" : Self.resyncTool[design] ?? design), \(largest) endpoints",
          value: point.resyncMilliseconds, unit: "ms",
          floor: design == "tessera"
            ? "in process, no exec"
            : "exec → exit − `true` \(format(point.execFloorMilliseconds)) ms",
          target: ""))
    }
    rows.append(
      Row(
        key: "pod_join_policy_map_writes",
        label:
          "peers' policy-map writes caused by \(extras.joinCount) pod joins (identity exists, \(extras.selectedJoinCount) of them selected by a policy)",
        value: extras.peerPolicyMapWrites.map(Double.init) ?? .nan, unit: "",
        floor: extras.peerPolicyMapWrites == nil ? "metric line missing" : "datapathd /metrics",
        target: "= 0 (issue)", bound: .atMost(0)))
    rows.append(
      Row(
        key: "pod_join_own_policy_map_writes",
        label:
          "own policy-map writes of the \(extras.selectedJoinCount) joining pods selected by a policy",
        value: extras.ownPolicyMapWrites.map(Double.init) ?? .nan, unit: "",
        floor: extras.ownPolicyMapWrites == nil ? "metric line missing" : "entries in their maps",
        target: "> 0 (issue)", bound: .positive))
    for point in points {
      let prefix = Self.prefix(point.design)
      extraJSON[prefix + "conn_overhead_us_at_\(point.endpoints)"] = point.connection.overhead
      extraJSON[prefix + "pod_join_inproc_us_at_\(point.endpoints)"] =
        point.joinInProcessMicroseconds
      extraJSON[
        (point.design == "tessera" ? "pod_join_create_ms" : prefix + "pod_join_control_ms")
          + "_at_\(point.endpoints)"] = point.joinControlMilliseconds
      extraJSON[prefix + "resync_ms_at_\(point.endpoints)"] = point.resyncMilliseconds
    }
  }

  /// Tessera's per-connection cost against the better set-based design at every
  /// endpoint count of the run; missed at the counts listed.
  static func connectionJudgement(_ points: [ComparisonPoint]) -> Row.Judgement {
    var misses: [String] = []
    for count in Set(points.map(\.endpoints)).sorted() {
      let here = points.filter { $0.endpoints == count }
      guard let tessera = here.first(where: { $0.design == "tessera" })?.connection.overhead
      else { continue }
      let best =
        here.filter { ["ipset", "nft"].contains($0.design) }.map(\.connection.overhead).min()
        ?? .nan
      if !(tessera <= best) {
        misses.append(
          "at \(count): \(format(tessera)) vs ≤ \(format(best)) µs, \(Row.gap(tessera, best))")
      }
    }
    return Row.Judgement(met: misses.isEmpty, shortfall: misses.joined(separator: "; "))
  }

  /// Targets set against other rows of the same run (filled in once every row is in).
  mutating func resolveRelativeTargets() {
    func value(_ key: String) -> Double? { rows.first { $0.key == key }?.value }
    func setTarget(_ key: String, _ text: String, _ bound: Row.Bound) {
      guard let index = rows.firstIndex(where: { $0.key == key }) else { return }
      rows[index].target = text
      rows[index].bound = bound
    }
    // The issue sets the embedded store (the default) against etcd; each is paired like
    // with like, in the same rounds: both behind identityd, and both in process.
    if let etcd = value("etcd_service_new_identities_per_s") {
      let inProcess = value("etcd_new_identities_per_s").map {
        "; etcd in process, no RPC: \(format($0))"
      }
      setTarget(
        "identity_alloc_concurrent_per_s",
        "≥ etcd behind identityd = \(format(etcd)) (issue; same rounds\(inProcess ?? ""))",
        .atLeast(etcd))
    }
    if let etcd = value("etcd_new_identities_per_s") {
      setTarget(
        "embedded_store_new_identities_per_s",
        "≥ etcd_new_identities_per_s = \(format(etcd)) (issue; in process, same rounds)",
        .atLeast(etcd))
    }
  }

  /// The curves of a finished run, read back from its bench-results.json (to redraw the plot).
  static func fromResults(in directory: String) throws -> Report {
    let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/bench-results.json"))
    guard let results = try JSONSerialization.jsonObject(with: data) as? [String: Double] else {
      throw BenchError("\(directory)/bench-results.json is not an object of numbers")
    }
    func counts(_ prefix: String) -> [Int] {
      results.keys.compactMap { $0.hasPrefix(prefix) ? Int($0.dropFirst(prefix.count)) : nil }
        .sorted()
    }
    var report = Report()
    report.createCurve = counts("create_p50_ms_at_").compactMap { count in
      guard let p50 = results["create_p50_ms_at_\(count)"],
        let p99 = results["create_p99_ms_at_\(count)"]
      else { return nil }
      return CreatePoint(liveEndpoints: count, p50: p50, p99: p99)
    }
    for design in designs {
      let prefix = Self.prefix(design)
      for count in counts(prefix + "conn_overhead_us_at_") {
        guard let overhead = results[prefix + "conn_overhead_us_at_\(count)"] else { continue }
        let control = design == "tessera" ? "pod_join_create_ms" : prefix + "pod_join_control_ms"
        report.comparison.append(
          ComparisonPoint(
            design: design, endpoints: count,
            joinInProcessMicroseconds: results[prefix + "pod_join_inproc_us_at_\(count)"] ?? .nan,
            joinControlMilliseconds: results[control + "_at_\(count)"] ?? .nan,
            resyncMilliseconds: results[prefix + "resync_ms_at_\(count)"] ?? .nan,
            connection: PairedConnectTimes(
              policyMedian: .nan, referenceMedian: .nan, overhead: overhead, connections: 0)))
      }
    }
    return report
  }

  /// How each design's join was applied in process.
  static let inProcessJoin = [
    "tessera": "Tessera ipcache write into the node's own map",
    "ipset": "`ipset add` through libipset", "nft": "`nft add element` through libnftables",
  ]
  /// How each design's join went through its control plane.
  static let controlJoin = [
    "tessera": "Tessera CreateEndpoint(sync) → ready, identity exists",
    "iptables": "`iptables -A` exec → exit", "ipset": "`ipset add` exec → exit",
    "nft": "`nft add element` exec → exit",
  ]
  static let resyncTool = [
    "iptables": "iptables-restore --noflush", "ipset": "ipset restore + swap",
    "nft": "nft -f (flush set + add)",
  ]

  func write(to directory: String) throws {
    var report = self
    report.resolveRelativeTargets()
    try report.writeResolved(to: directory)
  }

  private func writeResolved(to directory: String) throws {
    try FileManager.default.createDirectory(
      atPath: directory, withIntermediateDirectories: true)
    var table = "| figure | value | floor (same run) | target |\n|---|---:|---|---|\n"
    for row in rows {
      let verdict = row.verdict.map { $0.met ? " ✓ met" : " ✗ missed" } ?? ""
      table +=
        "| \(row.label) | \(format(row.value)) \(row.unit) | \(row.floor) | \(row.target)\(verdict) |\n"
    }
    print(table)
    let comparisonTables = comparisonMarkdown()
    if !comparisonTables.isEmpty { print(comparisonTables) }
    let plotted = try writePlot(to: directory)

    var machine = ProcessInfo.processInfo.hostName
    machine +=
      ", \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory / 1_073_741_824) GiB"
    let missed = rows.filter { $0.verdict?.met == false }
    let markdown = """
      # Benchmarks

      Written by `scripts/bench.sh` (release build) on \(Date().formatted(.iso8601)), machine: \(machine).
      \(notes.map { "- " + $0 }.joined(separator: "\n"))

      \(table)
      \(missed.isEmpty ? "" : "Missed targets (see *Where targets are missed* below):\n\n" + missed.map { "- `\($0.key)`: \($0.verdict?.shortfall ?? "")" }.joined(separator: "\n") + "\n")
      \(comparisonTables)
      \(plotted ? "![create latency, pod join, per-connection cost and resync against endpoint count](benchmarks.svg)\n" : "")
      ## Method

      A real node (`tessera node up`: four daemons, gRPC over Unix sockets, the default datapath backend) is
      started in a temporary run directory. The floor is a bare unary gRPC health check over the same
      transport, measured in the same run. Identities are new label sets allocated through
      `AllocateIdentity`. Rules are CiliumNetworkPolicies (`svc-i` accepts `client-i` on one port).
      Create latency is `CreateEndpoint(sync)` → ready (identity resolved, policy computed and realised in the
      datapath) for endpoints without a device (map writes, no tc attach; up to 1,000 of the live ones have
      host veths, see pod ADD), measured while an endpoint is
      created and deleted per iteration at each live-endpoint count (after 50 unmeasured iterations).

      Pod ADD is measured as a runtime sees it: the bench execs the CNI plugins the way libcni does
      (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH`, the network config on
      stdin, the previous plugin's result passed as `prevResult`, DEL in reverse order) on a fresh network
      namespace per pod, with the veth made by containernetworking-plugins' `ptp` (host-local IPAM), against
      this node's datapath (tc programs attached to the host veth): `ptp` alone, `ptp` then `tessera-cni`,
      and `tessera-cni` as the main plugin; the time is the first plugin's exec to the last plugin's exit,
      variants interleaved, one unmeasured round first, at each listed live-endpoint count (endpoints
      created through the API, each of them with a host veth of its own and programs attached, as a node
      with that many pods has: ptp's gateway address on the host end, both ends up). The overheads are p50
      differences against `ptp` alone.
      SelectorCache figures are in process: the p50 of adding one identity to
      10,000 identities × 1,000 selectors, against one full recompute.

      eBPF figures use the real backend on a private bpffs pin directory: `BPF_PROG_TEST_RUN` with repeat
      200,000 on crafted IPv4 frames against an endpoint with 1,000 policy entries, next to an ARP frame that
      the program passes without any lookup; regeneration is `Datapath.realize` of 1,000 entries for a new
      endpoint (stub programs loaded, maps written; no device, so no tc attach).

      etcd figures start real etcd clusters (1 and 3 members, `etcd-server` from Debian, fsync on) on
      loopback ports and drive the identity store in process with the same gRPC client it uses in the
      daemon. The floor is a bare create-only transaction (one key, compare `create_revision == 0`); a
      new identity is one transaction writing three keys (identity, label index, the node's leased
      reference) plus a write to the node's local reference table. A second floor is a bare
      transaction of the same shape (both keys absent, then the three puts, one on a lease): what
      etcd alone charges for a new identity's writes. With 32 in flight, eight rounds alternate
      bare transactions, same-shape transactions and new identities (each side first in every
      other round), and the figures are the rounds' medians: a stall of the shared VM or of etcd's
      batching (a few hundred milliseconds, once or twice a run here) lands in one round, not on
      one side of the comparison. Cached allocations are
      repeats on a node that already holds the identity (no etcd call); first references are the
      first pod with a label set on another node (one transaction).
      With one member the embedded store (SQLite, the default) is paired with etcd like with like,
      in the same alternating rounds: in process (its own file, the same label sets, a third side
      of each round, the order reversed every other round) and behind identityd (two nodes started
      with `tessera node up`, one on each store; AllocateIdentity over the node's socket with 32 in
      flight, so both include the RPC and the announcement to the node's policyd).

      ### Tessera against IP-based designs

      The benchmark builds three network namespaces per design: a client and a server pod, each joined
      to a router namespace by two veth pairs. The *policy path* (client eth0 → router → server eth0) is
      what a design filters; the *reference path* (eth1 → eth1) is the same hops with no policy. The
      scenario is one server pod that accepts TCP on one port from the group `app=client` (N pods; the
      measuring client is one of them) and nothing else:

      - **Tessera**: a real node (four daemons, eBPF datapath) runs inside the router namespace; the
        server and client pods are endpoints on the router-side veths (tc programs attached), the other
        N − 1 group members are endpoints without a device. One CiliumNetworkPolicy; all members share
        one identity, so the server's policy map holds one entry whatever N is.
      - **iptables** (naive): `FORWARD` accepts established traffic, then jumps to a chain with one rule
        per member address (`-s IP -p tcp --dport P -j ACCEPT`), then drops. Members are in join
        order, the measuring client last (the newest pod: the worst case of a linear chain).
      - **ipset** (Calico's design): one `hash:ip` set for the selector, matched by one rule.
      - **nftables**: one `ipv4_addr` set matched by one rule in an `inet` table.

      *Per-connection cost* is measured paired: a client thread in the client namespace alternates
      ~100 ms blocks of blocking `connect()`s to the server on the policy path and on the reference
      path (closing with RST, so no TIME_WAIT builds up), 30 pairs per point; the figure is the median
      over pairs of (policy block median − reference block median), so drift of the shared VM cancels.
      Stateful policy needs connection tracking and netfilter tracks a whole namespace once any rule
      uses it, so the IP-based designs exempt the reference path in the raw table (`notrack`): every
      design's figure is the cost of stateful policy with its tracking, as Tessera's includes its
      eBPF conntrack; Tessera's figure also includes the client pod's programs (two programs per
      packet on the policy path, none on the reference path).
      Before measuring, each design is checked to enforce: the allowed port connects, a port nothing
      listens on is refused on the reference path but silently dropped on the policy path.
      *Pod join* is applying "one more pod joins the selected group", paired like with like.
      (a) The kernel write alone, in process, p50 of \(PolicyComparison.inProcessJoins) joins: for Tessera
      one ipcache entry written through the datapath daemon's `Datapath` code into the node's own pinned
      maps (opened from the router namespace); for ipset one `add` through libipset (outside restore
      mode each command is sent and committed on its own) and for nftables one `add element`
      transaction through libnftables, each with one session kept open in the router namespace.
      (b) Through each control plane, p50 of \(PolicyComparison.joins) joins: Tessera's whole
      `CreateEndpoint(sync)` of a pod whose identity exists, against the per-pod command's exec → exit
      (`iptables -A`, `ipset add`, `nft add element`); no exec floor is subtracted on either side
      (`true`'s exec → exit is shown next to them). During Tessera's joins the datapath's policy-map
      write counter (`tessera_datapath_policy_map_writes_total`, scraped from datapathd's `/metrics`)
      must not move. *Full resync* rewrites the whole group: `iptables-restore --noflush` of the chain,
      `ipset restore` into a shadow set and `swap`, one `nft -f` transaction (flush set + add), each
      exec → exit minus `true`'s exec → exit, and for Tessera every member's ipcache entry in process
      (no exec to subtract).
      `iptables` here is \(Self.iptablesVariant).
      \(missed.isEmpty ? "" : "\n## Where targets are missed\n\n" + missed.map { "- `\($0.key)`: \(missedReason($0.key))" }.joined(separator: "\n") + "\n")
      """
    try markdown.write(toFile: directory + "/BENCHMARKS.md", atomically: true, encoding: .utf8)
    var json = extraJSON
    for row in rows { json[row.key] = row.value }
    let data = try JSONSerialization.data(
      withJSONObject: json.filter { $0.value.isFinite }, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: directory + "/bench-results.json"))
  }

  static let iptablesVariant: String = {
    let target =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/usr/sbin/iptables")) ?? ""
    let resolved = URL(fileURLWithPath: "/usr/sbin/iptables").resolvingSymlinksInPath().path
    return resolved.contains("nft") || target.contains("nft")
      ? "iptables-nft (Debian's default, rules kept as nftables rules)" : "iptables-legacy"
  }()

  /// Why a target is missed: causes found in profiles (perf, program variants), with
  /// figures only from this run's rows. Looked up by the longest key that starts the
  /// missed row's key.
  func missedReason(_ key: String) -> String {
    func shown(_ key: String) -> String {
      rows.first { $0.key == key }.map { "\(format($0.value)) \($0.unit)" } ?? "n/a"
    }
    let reasons: [String: String] = [
      "create_p99_ms":
        "a create is at least two RPCs (identity, datapath) and the endpoint's state write, each RPC's p99 on this machine being the bare p99 in the table (\(shown("bare_rpc_p99_ms")) in this run). When a churned pod carries an identity whose policy this node has not computed yet (the churn cycles through more svc-i labels than there are live endpoints at the smallest count), the create adds a policy computation RPC; at larger counts the per-identity policy cache answers. The p99 of 300 creates also moves between runs of this benchmark on the shared 2-core VM: one stall of a few milliseconds of the VM lands in it, at any count.",
      "nodes_per_identity_replica":
        "computed as one core per replica over the identity service's CPU per create (\(shown("cluster_identity_cpu_ms_per_create")) with its delete, summed over replicas). A create whose label set no other pod of its node holds, and the delete of the node's last such pod, are each a gRPC call over mutual TLS and a transaction on the node's reference in etcd; the cluster figures draw 20 label sets with 4 creates in flight per node and few live pods, so most creates are a node's first reference. perf of the replicas during this run's cluster figures (docs/performance.md) puts the time in the per-call transport, not in the service: HTTP/2 stream set-up and framing, NIOSSL record handling, an X.509 parse of the peer certificate per stream, Swift concurrency hand-offs and generic-metadata lookups; the allocator and the etcd client are a few percent. 500 nodes at 5 creates/s is 2,500 calls/s per replica at about 0.4 ms of CPU each, below this stack's cost per mTLS call on this machine (see the bare mTLS calls/s row): the gap closes only with fewer calls per create, not with a faster handler. endpointd's release delay (a node keeps its reference 30 s after its last pod of a label set went) removes the calls of churn on label sets a node saw within the delay; with it off every create is a node's first reference (\(shown("cluster_identity_cpu_ms_per_create_no_release_delay")) in this run).",
      "nodes_per_policy_replica":
        "computed as one core per replica over the policy service's CPU per create (\(shown("cluster_policy_cpu_ms_per_create")) with its delete, summed over replicas): ComputeEndpointPolicy (cached per identity on each node), the identity watch, and GetEventSequence: a node asks only when its WatchPolicy stream has not shown the identity arrive with the labels digest the create (or another node's ipcache entry) carries, so most creates cost no ordering call on any node; what is left is ComputeEndpointPolicy for an identity new to a node and the identity watch, each paid per node. perf of the replicas (docs/performance.md): about 90 % of samples under NIO's event loop in the transport (HTTP/2, NIOSSL about a fifth, protobuf coding, task hand-offs); the policy code itself is a few percent. As for the identity replicas, the per-call cost of mTLS gRPC bounds it; fewer calls per create would move it.",
      "identity_alloc_concurrent_per_s":
        "behind identityd an allocation is an RPC, the store's write and the announcement to the node's policyd before the answer, the same on either store; the embedded store serialises its writes in one SQLite connection (WAL, no fsync per commit) and its in-process rate is \(shown("embedded_store_new_identities_per_s")) in this run: \(shown("identity_alloc_concurrent_per_s")) behind identityd against etcd's \(shown("etcd_service_new_identities_per_s")).",
      "embedded_store_new_identities_per_s":
        "each allocation is one SQLite write transaction in one connection (WAL, no fsync per commit): \(shown("embedded_store_new_identities_per_s")) against etcd's \(shown("etcd_new_identities_per_s")) in the same rounds.",
      "pod_add_overhead_pct":
        "latency-bound, not CPU-bound: perf -a over a run of chained ADDs finds both cores idle most of the time (docs/performance.md). The plugin's own exec is small (about `true`'s exec → exit, \(shown("true_exec_p50_ms")) in this run, plus two netlink dumps); the rest is the blocking create (\(shown("create_p50_ms_at_100")) p50 at 100 live endpoints in this run), whose phases in the debug log are AllocateIdentity (one RPC), the ordering check that peers' policy reflects the identity (answered by the node's WatchPolicy stream when it has shown the identity arrive, else one GetEventSequence RPC) and the datapath's realize (one RPC: the endpoint's stub programs loaded and verified, tc filters attached, the endpoint's maps written), realize the largest. Each RPC costs at least the bare call (\(shown("bare_rpc_p50_ms")) p50), mostly thread wake-ups on this 2-core VM. Against `ptp` alone (\(shown("pod_add_ptp_p50_ms_at_0"))) 5 % is reachable only if the create stops waiting on other processes (programs prepared before the ADD, identity and ordering answered from the node's caches), which the promise that policy is in force when ADD returns still allows.",
      "main_plugin_add_overhead_pct":
        "the same blocking create as in the chain (see `pod_add_overhead_pct`) on top of making the veth and delegating IPAM to host-local (the part `ptp` also does, in Go): the main plugin's time less the create's is about `ptp` alone's.",
      "create_rate_per_s":
        "CPU-bound: both cores are busy during the churn (vmstat shows no idle time). A create + delete is six gRPC calls (two from the client, four between daemons) plus eBPF map and stub program setup and teardown; perf shows the time spread over the HTTP/2 and NIO stack, the Swift runtime and the kernel, with no single hot spot.",
      "bpf_ns_per_packet":
        "\(shown("bpf_ns_per_packet")) per established packet, of which the ARP pass-through floor in the same row is the test-run harness, stub and tail call; variants of the program attribute most of the rest to the conntrack lookup (a 48-byte key) and the per-endpoint per-CPU metrics hash lookup, each helper or map call also paying a return thunk on this VM. A per-CPU counters array indexed by a slot the stub passes would save the counters' hash lookup (20–30 ns) but costs its whole size on every CPU (544 bytes per endpoint slot), so it is not taken; without any conntrack lookup the program already costs about the target here (docs/performance.md).",
      "bpf_ns_per_packet_events_on":
        "established flows emit no event (drops and new connections do; `bpf_event_write_ns` is what one event costs), so this is the established-flow figure, missed for the reasons given for `bpf_ns_per_packet`.",
      "conn_overhead_us":
        "every packet between two Tessera pods runs two programs (the client's egress and the server's ingress, each endpoint with its own conntrack entry), while a set-based design hooks once, in the router, with one netfilter conntrack entry; a SYN that reuses a tracked tuple is judged by policy again. The cost is flat in endpoint count, unlike iptables'. The largest part of Tessera's own cost is the new flow: the SYN runs the whole policy path twice and creates two conntrack entries, an LRU hash update each (about 320 ns of the \(shown("bpf_ns_per_packet_new_flow_allowed")) a new allowed flow costs in the program, by variants in docs/performance.md; per-CPU LRU lists were slower).",
      "etcd_new_identities_percent_of_raw":
        "a new identity is one transaction writing three keys (the floor writes one) plus the node's local reference write: \(shown("etcd_new_identities_per_s")) new identities against \(shown("etcd_raw_txn_per_s")) bare transactions in this run (medians of alternating rounds). The same three writes as a bare transaction run at \(shown("etcd_shaped_txn_per_s")), so the store reaches \(shown("etcd_new_identities_percent_of_shaped")) of what etcd allows for them; the rest is the store's own path (the local reference write, the watch events of its own keys). etcd also sends the new identity's key to the replicas' watches (two replicas here), which the floor's keys, watched by nobody, do not cause; perf of an `--etcd-only` run (docs/performance.md) puts etcd at about half of the samples, so on these two cores the ratio is mostly etcd's work per identity, not the client's.",
    ]
    return reasons.filter { key.hasPrefix($0.key) }.max { $0.key.count < $1.key.count }?.value
      ?? "not profiled yet."
  }

  private func comparisonMarkdown() -> String {
    guard !comparison.isEmpty else { return "" }
    let counts = Set(comparison.map(\.endpoints)).sorted()
    let designs = Self.designs.filter { design in comparison.contains { $0.design == design } }
    func table(_ title: String, _ cell: (ComparisonPoint) -> String) -> String {
      var text =
        "\(title)\n\n| endpoints | " + designs.joined(separator: " | ") + " |\n|---:|"
        + designs.map { _ in "---:|" }.joined() + "\n"
      for count in counts {
        text += "| \(count) | "
        text += designs.map { design in
          comparison.first { $0.design == design && $0.endpoints == count }.map(cell) ?? ""
        }.joined(separator: " | ")
        text += " |\n"
      }
      return text
    }
    return [
      "## Tessera against IP-based designs\n",
      table(
        "Per-connection cost of policy (µs, paired; in brackets: policy / reference path connect p50)"
      ) {
        "\(format($0.connection.overhead)) (\(format($0.connection.policyMedian)) / \(format($0.connection.referenceMedian)))"
      },
      table(
        "Pod join, kernel write in process (µs, p50; Tessera: ipcache write into the node's own map; ipset, nft: one command through libipset, libnftables)"
      ) { format($0.joinInProcessMicroseconds) },
      table(
        "Pod join through each control plane (ms, p50; Tessera: CreateEndpoint(sync) → ready; the others: the per-pod command's exec → exit, exec floor not subtracted)"
      ) { format($0.joinControlMilliseconds) },
      table(
        "Full resync of the group (ms; IP designs: exec → exit − `true`; Tessera: in process)"
      ) { format($0.resyncMilliseconds) },
    ].joined(separator: "\n")
  }

  /// benchmarks.svg: create latency, pod join, per-connection cost and resync against endpoint count.
  func writePlot(to directory: String) throws -> Bool {
    guard !createCurve.isEmpty || !comparison.isEmpty else { return false }
    func series(_ value: (ComparisonPoint) -> Double) -> [BenchmarkPlot.Series] {
      Self.designs.compactMap { design in
        let points = comparison.filter { $0.design == design }.sorted {
          $0.endpoints < $1.endpoints
        }.map { (x: Double($0.endpoints), y: value($0)) }.filter { $0.y.isFinite }
        return points.isEmpty ? nil : BenchmarkPlot.Series(name: design, points: points)
      }
    }
    var panels: [BenchmarkPlot.Panel] = []
    if !createCurve.isEmpty {
      panels.append(
        .init(
          title: "Tessera create → ready", unit: "ms", logarithmic: false,
          series: [
            .init(
              name: "p50", points: createCurve.map { (x: Double($0.liveEndpoints), y: $0.p50) }),
            .init(
              name: "p99", points: createCurve.map { (x: Double($0.liveEndpoints), y: $0.p99) }),
          ]))
    }
    if !comparison.isEmpty {
      panels.append(
        .init(
          title: "pod join, kernel write in process", unit: "µs (log)", logarithmic: true,
          series: series(\.joinInProcessMicroseconds)))
      panels.append(
        .init(
          title: "pod join via control plane", unit: "ms (log)", logarithmic: true,
          series: series(\.joinControlMilliseconds)))
      panels.append(
        .init(
          title: "per-connection cost of policy", unit: "µs (log)", logarithmic: true,
          series: series(\.connection.overhead)))
      panels.append(
        .init(
          title: "full resync", unit: "ms (log)", logarithmic: true,
          series: series(\.resyncMilliseconds)))
    }
    try BenchmarkPlot(panels: panels).svg().write(
      toFile: directory + "/benchmarks.svg", atomically: true, encoding: .utf8)
    return true
  }
}
