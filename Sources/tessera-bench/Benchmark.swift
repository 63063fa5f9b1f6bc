import ArgumentParser
import DatapathService
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import PolicyService
import Synchronization
import TesseraCore
import TesseraProto
import TesseraRuntime

/// `tessera-bench`: starts a real node and measures the product against floors
/// measured in the same run; prints a table and writes BENCHMARKS.md and
/// bench-results.json.
@main
struct Benchmark: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tessera-bench",
    abstract: "Benchmark a real Tessera node against floors measured in the same run.")

  @Option(help: "Where BENCHMARKS.md and bench-results.json go.") var outputDirectory = "."
  @Option(help: "Directory with the tessera binaries (default: next to this one).") var binDir:
    String?
  @Option(help: "The tessera-cni binary.") var cni = ".build-cni/tessera-cni"
  @Option(help: "Live endpoint counts to measure create latency at.") var liveEndpoints: [Int] = [
    100, 1000, 5000,
  ]
  @Option(help: "Live endpoint counts to measure pod ADD through the CNI plugins at.")
  var podAddLive: [Int] = [0, 1000]
  @Option(help: "Pod ADD+DEL per plugin variant per live endpoint count.")
  var podAddIterations = 30
  @Option(help: "Group sizes for the comparison with iptables, ipset and nftables.")
  var comparisonEndpoints: [Int] = [100, 1000, 2500, 5000]
  @Option(help: "Identities allocated before measuring creates.") var identities = 10_000
  @Option(help: "Policy rules imported before measuring creates.") var rules = 1_000
  @Option(help: "Create+delete iterations per measurement.") var iterations = 300
  @Option(help: "New identities allocated per etcd measurement (1 member; half on 3).")
  var etcdIdentities = 2000
  @Flag(help: "Only the etcd identity figures (no node, no eBPF).") var etcdOnly = false
  @Flag(help: "Only the cluster-service figures (replicas, four nodes).") var clusterOnly = false
  @Flag(help: "Leave out the cluster-service figures.") var skipCluster = false
  @Option(help: "Create+delete pairs per node in the cluster figures.") var clusterCreatesPerNode =
    150
  @Flag(help: "Only the comparison with the IP-based designs.") var comparisonOnly = false
  @Flag(help: "Leave out the comparison with the IP-based designs.") var skipComparison = false
  @Flag(help: "Redraw benchmarks.svg from bench-results.json in the output directory.")
  var plotOnly = false
  @Flag(
    help: "Only the node figures (RPC floor, identities, creates, churn, plugin): for profiling.")
  var nodeOnly = false
  @Flag(help: "Only the eBPF program figures (BPF_PROG_TEST_RUN, regeneration): for profiling.")
  var datapathOnly = false

  func run() async throws {
    LoggingSystem.bootstrapTessera(format: .plain, level: .warning)
    let bin =
      binDir
      ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
      .deletingLastPathComponent().path
    if plotOnly {
      _ = try Report.fromResults(in: outputDirectory).writePlot(to: outputDirectory)
      return
    }
    if etcdOnly {
      let etcd = try await EtcdBenchmark.figures(newIdentities: etcdIdentities, bin: bin)
      try Report(rows: etcd.rows, notes: etcd.notes).write(to: outputDirectory)
      return
    }
    if clusterOnly {
      let cluster = try await ClusterBenchmark.figures(
        bin: bin, configuration: .init(createsPerNode: clusterCreatesPerNode))
      try Report(rows: cluster.rows, notes: cluster.notes).write(to: outputDirectory)
      return
    }
    if datapathOnly {
      var notes: [String] = []
      let rows = try Self.eBPFFigures(notes: &notes)
      try Report(rows: rows, notes: notes).write(to: outputDirectory)
      return
    }
    if comparisonOnly {
      var report = Report()
      try await compare(bin: bin, into: &report)
      try report.write(to: outputDirectory)
      return
    }
    let root = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-bench-\(getpid())"
    ).path
    let run = RunDirectory(path: root + "/run")
    let pin = "/sys/fs/bpf/tessera-bench-\(getpid())"
    var rows: [Row] = []
    var notes: [String] = []
    var createCurve: [Report.CreatePoint] = []

    let up = try execute(
      [
        bin + "/tessera", "node", "up", "--detach", "--run-dir", run.path, "--state-dir",
        root + "/state", "--bpf-pin-dir", pin,
      ],
      environment: [:])
    guard up.status == 0 else {
      throw ValidationError("node up failed: \(String(decoding: up.output, as: UTF8.self))")
    }
    defer {
      _ = try? execute([bin + "/tessera", "node", "down", "--run-dir", run.path], environment: [:])
      try? FileManager.default.removeItem(atPath: root)
      try? FileManager.default.removeItem(atPath: pin)
    }

    try await withGRPCClient(
      transport: .http2NIOPosix(
        target: .unixDomainSocket(path: run.socketPath(for: .endpoint)),
        transportSecurity: .plaintext)
    ) { endpointClient in
      try await withGRPCClient(
        transport: .http2NIOPosix(
          target: .unixDomainSocket(path: run.socketPath(for: .identity)),
          transportSecurity: .plaintext)
      ) { identityClient in
        try await withGRPCClient(
          transport: .http2NIOPosix(
            target: .unixDomainSocket(path: run.socketPath(for: .policy)),
            transportSecurity: .plaintext)
        ) { policyClient in
          let endpoints = Tessera_Endpoint_V1_EndpointService.Client(wrapping: endpointClient)
          let health = Grpc_Health_V1_Health.Client(wrapping: endpointClient)
          let identity = Tessera_Identity_V1_IdentityService.Client(wrapping: identityClient)
          let policy = Tessera_Policy_V1_PolicyService.Client(wrapping: policyClient)
          let datapathInfo = try await withGRPCClient(
            transport: .http2NIOPosix(
              target: .unixDomainSocket(path: run.socketPath(for: .datapath)),
              transportSecurity: .plaintext)
          ) {
            try await Tessera_Runtime_V1_DaemonService.Client(wrapping: $0).getDaemonInfo(.init())
          }
          notes.append("datapath backend: \(datapathInfo.backend)")

          // Floor: a bare unary call over the same UDS transport.
          var bare = Samples()
          for _ in 0..<2000 {
            let start = ContinuousClock.now
            _ = try await health.check(.init())
            bare.add(.now - start)
          }
          rows.append(
            Row(
              key: "bare_rpc_p50_ms", label: "bare unary gRPC call (UDS), p50", value: bare.p50,
              unit: "ms", floor: "(floor)", target: ""))
          rows.append(
            Row(
              key: "bare_rpc_p99_ms", label: "bare unary gRPC call (UDS), p99", value: bare.p99,
              unit: "ms", floor: "(floor)", target: ""))
          let bareRate = try await Self.throughput(concurrency: 64, total: 6400) {
            _ = try await health.check(.init())
          }
          rows.append(
            Row(
              key: "bare_rpc_per_s", label: "bare unary gRPC calls/s, 64 callers", value: bareRate,
              unit: "/s", floor: "(floor)", target: ""))

          // Identities: new label sets, sequential and with 32 in flight.
          let sequentialCount = identities / 2
          let clock = ContinuousClock()
          let sequentialStart = clock.now
          for i in 0..<sequentialCount {
            _ = try await identity.allocateIdentity(
              Self.allocationRequest(bench: "id\(i)"))
          }
          let sequentialRate =
            Double(sequentialCount) / (clock.now - sequentialStart).milliseconds * 1000
          rows.append(
            Row(
              key: "identity_alloc_per_s", label: "new identities/s (embedded store, sequential)",
              value: sequentialRate, unit: "/s",
              floor: "bare \(format(1000 / bare.p50))/s sequential", target: ""))
          // The rest with 32 in flight, for the creates below; the concurrent rate is
          // measured paired with etcd's, behind identityd (EtcdBenchmark).
          let counter = Counter()
          _ = try await Self.throughput(concurrency: 32, total: identities - sequentialCount) {
            let i = counter.next() + sequentialCount
            _ = try await identity.allocateIdentity(
              Self.allocationRequest(bench: "id\(i)"))
          }

          // Rules: svc-i accepts client-i on one port.
          var manifest = ""
          for i in 0..<rules {
            manifest += """
              ---
              apiVersion: cilium.io/v2
              kind: CiliumNetworkPolicy
              metadata: {name: rule-\(i), namespace: default}
              spec:
                endpointSelector: {matchLabels: {app: svc-\(i)}}
                ingress:
                - fromEndpoints: [{matchLabels: {app: client-\(i)}}]
                  toPorts: [{ports: [{port: "\(8000 + i % 1000)", protocol: TCP}]}]

              """
          }
          let importStart = clock.now
          _ = try await policy.importPolicy(
            .with {
              $0.sourceName = "bench.yaml"
              $0.content = Data(manifest.utf8)
            })
          rows.append(
            Row(
              key: "policy_import_ms", label: "import \(rules) rules",
              value: (clock.now - importStart).milliseconds, unit: "ms", floor: "", target: ""))

          // Create → ready under churn at several live-endpoint counts, and pod ADD
          // through the CNI plugins at some of them.
          var live = 0
          var createAtLargest = Samples()
          let podAdd = PodAddBenchmark(
            iterations: podAddIterations,
            tesseraCNI: URL(fileURLWithPath: cni).standardizedFileURL.path,
            socketPath: run.socketPath(for: .endpoint), stateDirectory: root + "/pod-add")
          let podAddMissing = PodAddBenchmark.missing(tesseraCNI: podAdd.tesseraCNI)
          if let podAddMissing { notes.append("pod ADD figures skipped: \(podAddMissing)") }
          var podAddTimes: [(live: Int, times: PodAddBenchmark.Times)] = []
          // The first live endpoints get host veths (programs attached) as many as pod ADD
          // is measured at: a node with that many pods has that many devices.
          let liveDevices =
            podAddMissing == nil ? try LiveDevices.create(count: podAddLive.max() ?? 0) : nil
          defer { liveDevices?.destroy() }
          for target in Set(liveEndpoints + podAddLive).sorted() {
            while live < target {
              let device = liveDevices.map { live < $0.names.count ? $0.names[live] : "" } ?? ""
              _ = try await endpoints.createEndpoint(
                Self.createRequest(
                  container: "live-\(live)", ip: Self.address(live), app: "svc-\(live % rules)",
                  host: device))
              live += 1
            }
            if podAddMissing == nil, podAddLive.contains(target) {
              print("pod ADD through the CNI plugins at \(target) live endpoints")
              podAddTimes.append((target, try podAdd.measure(tag: "\(target)")))
            }
            guard liveEndpoints.contains(target) else { continue }
            print("create → ready at \(target) live endpoints")
            // Unmeasured warm-up: the first creates after a bulk load also pay for caches
            // filling and the policy and identity events of that load settling.
            for i in 0..<50 {
              _ = try await endpoints.createEndpoint(
                Self.createRequest(
                  container: "warm-\(i)", ip: Self.address(59_000 + i), app: "svc-\(i % rules)"))
              _ = try await endpoints.deleteEndpoint(
                .with { $0.endpoint = .with { $0.containerID = "warm-\(i)" } })
            }
            var samples = Samples()
            for i in 0..<iterations {
              let start = clock.now
              _ = try await endpoints.createEndpoint(
                Self.createRequest(
                  container: "churn-\(i)", ip: Self.address(60_000 + i % 1000),
                  app: "svc-\(i % rules)"))
              samples.add(.now - start)
              _ = try await endpoints.deleteEndpoint(
                .with { $0.endpoint = .with { $0.containerID = "churn-\(i)" } })
            }
            rows.append(
              Row(
                key: "create_p50_ms_at_\(target)",
                label: "create → ready p50, \(target) live endpoints", value: samples.p50,
                unit: "ms", floor: "bare \(format(bare.p50)) ms", target: ""))
            rows.append(
              Row(
                key: "create_p99_ms_at_\(target)",
                label: "create → ready p99, \(target) live endpoints", value: samples.p99,
                unit: "ms", floor: "bare \(format(bare.p99)) ms", target: "≤ 10 (issue)",
                bound: .atMost(10)))
            createAtLargest = samples
            createCurve.append(.init(liveEndpoints: target, p50: samples.p50, p99: samples.p99))
          }
          rows += PodAddBenchmark.rows(podAddTimes)
          rows.append(
            Row(
              key: "create_p50_ms", label: "create → ready p50 (largest run)",
              value: createAtLargest.p50, unit: "ms", floor: "bare \(format(bare.p50)) ms",
              target: ""))
          rows.append(
            Row(
              key: "create_p99_ms", label: "create → ready p99 (largest run)",
              value: createAtLargest.p99, unit: "ms", floor: "bare \(format(bare.p99)) ms",
              target: ""))
          print("creates under churn")
          let churnCounter = Counter()
          let churnRate = try await Self.throughput(concurrency: 8, total: iterations) {
            let i = churnCounter.next()
            _ = try await endpoints.createEndpoint(
              Self.createRequest(
                container: "rate-\(i)", ip: Self.address(50_000 + i), app: "svc-\(i % rules)"))
            _ = try await endpoints.deleteEndpoint(
              .with { $0.endpoint = .with { $0.containerID = "rate-\(i)" } })
          }
          rows.append(
            Row(
              key: "create_rate_per_s", label: "creates/s under churn (create+delete, 8 in flight)",
              value: churnRate, unit: "/s", floor: "bare \(format(bareRate))/s",
              target: "≥ 300 with the eBPF datapath (issue)", bound: .atLeast(300)))

          // The exec floor. The plugin itself is measured above on real veths (pod ADD):
          // ADD needs the container's veth to exist, so it cannot run without a device.
          var trueExec = Samples()
          for _ in 0..<200 { trueExec.add(try execute(["/bin/true"], environment: [:]).elapsed) }
          rows.append(
            Row(
              key: "true_exec_p50_ms", label: "`true` exec → exit p50", value: trueExec.p50,
              unit: "ms", floor: "(floor)", target: ""))
        }
      }
    }

    if nodeOnly {
      try Report(rows: rows, notes: notes, createCurve: createCurve).write(to: outputDirectory)
      return
    }

    // SelectorCache, in process: one identity into 10,000 identities × 1,000 selectors.
    let (incremental, full) = Self.selectorCacheTimes()
    rows.append(
      Row(
        key: "selectorcache_add_identity_us",
        label: "SelectorCache: add 1 identity (10k ids × 1k selectors)", value: incremental * 1000,
        unit: "µs", floor: "full recompute \(format(full)) ms", target: ""))
    rows.append(
      Row(
        key: "selectorcache_speedup", label: "SelectorCache: incremental vs full recompute",
        value: full / incremental, unit: "×", floor: "",
        target: "≥ 100 (set with the first benchmarks, 40ae52a)", bound: .atLeast(100)))

    // Each phase announces itself, so an error names where it happened.
    print("etcd identity figures (in process and behind identityd)")
    let etcd = try await EtcdBenchmark.figures(newIdentities: etcdIdentities, bin: bin)
    rows += etcd.rows
    notes += etcd.notes
    if !skipCluster {
      print("cluster figures (4 nodes, identity and policy replicas on mTLS)")
      let cluster = try await ClusterBenchmark.figures(
        bin: bin, configuration: .init(createsPerNode: clusterCreatesPerNode))
      rows += cluster.rows
      notes += cluster.notes
    }

    print("eBPF program figures")
    rows += try Self.eBPFFigures(notes: &notes)

    var report = Report(rows: rows, notes: notes, createCurve: createCurve)
    if !skipComparison { try await compare(bin: bin, into: &report) }
    try report.write(to: outputDirectory)
  }

  /// Tessera against iptables, ipset and nftables in network namespaces.
  func compare(bin: String, into report: inout Report) async throws {
    if let reason = BPFDatapathBackend.probe() {
      report.notes.append("comparison skipped: \(reason)")
      return
    }
    guard let object = BPFDatapathBackend.Configuration.locateObject() else {
      report.notes.append("comparison skipped: BPF object not built (scripts/build-bpf.sh)")
      return
    }
    let missing = AddressPolicyDesign.missingTools()
    guard missing.isEmpty else {
      report.notes.append(
        "comparison skipped: \(missing.joined(separator: ", ")) not installed (scripts/install-deps.sh installs them)"
      )
      return
    }
    let counts = comparisonEndpoints.sorted()
    print(
      "comparison with the IP-based designs at \(counts.map(String.init).joined(separator: ", ")) endpoints:"
    )
    let (tessera, extras) = try await PolicyComparison.measureTessera(
      bin: bin, object: object, counts: counts)
    var points = tessera
    for design in AddressPolicyDesign.all {
      points += try PolicyComparison.measure(design, counts: counts)
    }
    report.addComparison(points, extras: extras)
  }

  /// 1,000 entries: 250 peers × (TCP port, UDP range, SCTP port, one deny).
  static func thousandEntries() -> [PolicyEntry] {
    (0..<250).flatMap { i -> [PolicyEntry] in
      let peer = NumericIdentity(UInt32(10_000 + i))
      return [
        PolicyEntry(
          peer: peer, direction: .ingress, proto: .tcp, ports: PortRange(single: UInt16(8000 + i))),
        PolicyEntry(
          peer: peer, direction: .ingress, proto: .udp,
          ports: PortRange(UInt16(20_000 + i * 4), UInt16(20_000 + i * 4 + 3))),
        PolicyEntry(
          peer: peer, direction: .egress, proto: .sctp, ports: PortRange(single: UInt16(3000 + i))),
        PolicyEntry(
          peer: peer, direction: .egress, proto: .tcp, ports: PortRange(single: 25), verdict: .deny),
      ]
    }
  }

  /// The eBPF figures, or a note saying why they were skipped.
  static func eBPFFigures(notes: inout [String]) throws -> [Row] {
    if let reason = BPFDatapathBackend.probe() {
      notes.append("eBPF figures skipped: \(reason)")
    } else if let object = BPFDatapathBackend.Configuration.locateObject() {
      return try datapathFigures(object: object)
    } else {
      notes.append("eBPF figures skipped: BPF object not built (scripts/build-bpf.sh)")
    }
    return []
  }

  /// ns/packet of the policy program (BPF_PROG_TEST_RUN with repeat) and
  /// regeneration (programs + maps) at 1,000 entries, on a private pin directory.
  static func datapathFigures(object: String) throws -> [Row] {
    let pin = "/sys/fs/bpf/tessera-bench-dp-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: pin) }
    let backend = try BPFDatapathBackend(
      configuration: .init(objectPath: object, pinDirectory: pin))
    let datapath = try Datapath(backend: backend)
    defer {
      for endpoint in datapath.endpoints() { _ = try? datapath.removeEndpoint(id: endpoint.id) }
    }
    try datapath.upsertIPCache([
      IPCacheEntry(prefix: IPPrefix("10.250.1.1/32")!, identity: NumericIdentity(10_005))
    ])
    var regenerations = Samples()
    for id in 1...20 {
      let start = ContinuousClock.now
      _ = try datapath.realize(
        DatapathEndpoint(
          id: UInt64(id), hostInterface: "", ips: [IPPrefix("10.250.0.\(id)")!],
          identity: NumericIdentity(20_000),
          policy: EndpointPolicy(
            revision: 1, ingressEnforced: true, egressEnforced: true, entries: thousandEntries())))
      regenerations.add(.now - start)
    }
    var oneMore = Samples()
    for revision in 2...21 {
      var entries = thousandEntries()
      entries.append(
        PolicyEntry(
          peer: NumericIdentity(UInt32(30_000 + revision)), direction: .ingress, proto: .tcp,
          ports: PortRange(single: 443)))
      let start = ContinuousClock.now
      _ = try datapath.realize(
        DatapathEndpoint(
          id: 1, hostInterface: "", ips: [IPPrefix("10.250.0.1")!],
          identity: NumericIdentity(20_000),
          policy: EndpointPolicy(
            revision: UInt64(revision), ingressEnforced: true, egressEnforced: true,
            entries: entries)))
      oneMore.add(.now - start)
    }
    let repeats: UInt32 = 200_000
    // The SYN creates the flow; its later packets (ACKs) are what an established flow sends.
    _ = try backend.runProgram(
      endpointID: 1, direction: .ingress,
      packet: Packet.ipv4("10.250.1.1", "10.250.0.1", proto: Packet.tcp, sport: 50000, dport: 8005),
      repeat: 1)
    let established = Packet.ipv4(
      "10.250.1.1", "10.250.0.1", proto: Packet.tcp, sport: 50000, dport: 8005, tcpFlags: Packet.ack
    )
    let hit = try backend.runProgram(
      endpointID: 1, direction: .ingress, packet: established, repeat: repeats)
    // A denied packet writes a drop event to the ring buffer (1 MiB, ~13,000 events).
    // Measured twice: with room in the ring (the event written), and with the ring full
    // (the event lost and counted): the difference is what writing an event costs.
    let denied = Packet.ipv4(
      "10.250.1.1", "10.250.0.1", proto: Packet.tcp, sport: 50001, dport: 9999)
    let events = try backend.makeEventReader()
    func drainEvents() throws {
      while let events, try !events.read(timeoutMilliseconds: 0).isEmpty {}
    }
    try drainEvents()
    let eventsThatFit: UInt32 = 10_000
    let miss = try backend.runProgram(
      endpointID: 1, direction: .ingress, packet: denied, repeat: eventsThatFit)
    _ = try backend.runProgram(endpointID: 1, direction: .ingress, packet: denied, repeat: 20_000)
    let missRingFull = try backend.runProgram(
      endpointID: 1, direction: .ingress, packet: denied, repeat: eventsThatFit)
    try drainEvents()
    let arp = try backend.runProgram(
      endpointID: 1, direction: .ingress, packet: Packet.arp(), repeat: repeats)
    let reply = try backend.runProgram(
      endpointID: 1, direction: .egress,
      packet: Packet.ipv4(
        "10.250.0.1", "10.250.1.1", proto: Packet.tcp, sport: 8005, dport: 50000,
        tcpFlags: Packet.ack),
      repeat: repeats)
    // A new allowed flow creates a conntrack entry, so it cannot be repeated: single
    // runs over distinct flows, less the single-run overhead an established flow shows.
    var newFlow: [Double] = []
    var establishedSingle: [Double] = []
    for sport in UInt16(1024)..<UInt16(5024) {
      let run = try backend.runProgram(
        endpointID: 1, direction: .ingress,
        packet: Packet.ipv4(
          "10.250.1.1", "10.250.0.1", proto: Packet.tcp, sport: sport, dport: 8005), repeat: 1)
      guard run.passed else { throw BenchError("a new allowed flow was dropped") }
      newFlow.append(Double(run.nanoseconds))
      establishedSingle.append(
        Double(
          try backend.runProgram(endpointID: 1, direction: .ingress, packet: established, repeat: 1)
            .nanoseconds))
    }
    let newFlowAllowed =
      median(newFlow) - max(0, median(establishedSingle) - Double(hit.nanoseconds))
    return [
      Row(
        key: "bpf_ns_per_packet", label: "eBPF policy program, established flow (conntrack hit)",
        value: Double(hit.nanoseconds), unit: "ns", floor: "ARP pass-through \(arp.nanoseconds) ns",
        target: "≤ 60 (issue)", bound: .atMost(60)),
      Row(
        key: "bpf_ns_per_packet_new_flow",
        label: "eBPF policy program, new flow denied (all lookups, drop event written)",
        value: Double(miss.nanoseconds), unit: "ns",
        floor: "ARP pass-through \(arp.nanoseconds) ns", target: ""),
      Row(
        key: "bpf_ns_per_packet_events_on",
        label: "eBPF per-packet cost with events on: established flow (emits no event)",
        value: Double(hit.nanoseconds), unit: "ns",
        floor: "ARP pass-through \(arp.nanoseconds) ns", target: "≤ 70 (issue)", bound: .atMost(70)),
      Row(
        key: "bpf_event_write_ns",
        label: "writing one drop event (denied packet, ring with room vs ring full)",
        value: Double(miss.nanoseconds) - Double(missRingFull.nanoseconds), unit: "ns",
        floor: "ring full: \(missRingFull.nanoseconds) ns per denied packet", target: ""),
      Row(
        key: "bpf_ns_per_packet_reply", label: "eBPF policy program, reply of an established flow",
        value: Double(reply.nanoseconds), unit: "ns",
        floor: "ARP pass-through \(arp.nanoseconds) ns", target: ""),
      Row(
        key: "bpf_ns_per_packet_new_flow_allowed",
        label: "eBPF policy program, new flow allowed (conntrack entry created)",
        value: newFlowAllowed, unit: "ns", floor: "single-run overhead subtracted", target: ""),
      Row(
        key: "regen_p99_ms", label: "regenerate at 1,000 entries (stubs + maps), p99",
        value: regenerations.p99, unit: "ms", floor: "p50 \(format(regenerations.p50)) ms",
        target: ""),
      Row(
        key: "regen_one_more_entry_p50_ms",
        label: "incremental regeneration: +1 entry on 1,000, p50", value: oneMore.p50, unit: "ms",
        floor: "", target: ""),
    ]
  }

  static func address(_ n: Int) -> String { "10.\(200 + n / 65536).\((n / 256) % 256).\(n % 256)" }

  /// A synchronous create of one endpoint labelled `app` (if not empty) and `labels`.
  static func createRequest(
    container: String, ip: String, app: String, host: String = "", labels: [String: String] = [:]
  ) -> Tessera_Endpoint_V1_CreateEndpointRequest {
    var all = labels
    if !app.isEmpty { all["app"] = app }
    return .with {
      $0.containerID = container
      $0.ips = [ip]
      $0.sync = true
      $0.hostInterface = host
      $0.labels = all.sorted { $0.key < $1.key }.map { label in
        .with {
          $0.source = "k8s"
          $0.key = label.key
          $0.value = label.value
        }
      }
    }
  }

  /// Operations per second with `concurrency` workers doing `total` operations.
  /// AllocateIdentity of the label set `k8s:bench=VALUE` (a new identity per value).
  static func allocationRequest(bench value: String) -> Tessera_Identity_V1_AllocateIdentityRequest
  {
    .with {
      $0.labels = [
        .with {
          $0.source = "k8s"
          $0.key = "bench"
          $0.value = value
        }
      ]
    }
  }

  static func throughput(
    concurrency: Int, total: Int, _ operation: @escaping @Sendable () async throws -> Void
  ) async throws -> Double {
    let remaining = Counter()
    let clock = ContinuousClock()
    let start = clock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
      for _ in 0..<concurrency {
        group.addTask {
          while remaining.next() < total { try await operation() }
        }
      }
      try await group.waitForAll()
    }
    return Double(total) / (clock.now - start).milliseconds * 1000
  }

  static func selectorCacheTimes() -> (incremental: Double, full: Double) {
    var cache = SelectorCache()
    var identities: [SecurityIdentity] = []
    for id in 0..<10_000 {
      let labels = LabelSet(validated: [
        Label(source: "k8s", key: "app", value: "app\(id % 500)"),
        Label(source: "k8s", key: "tier", value: ["web", "api", "db"][id % 3]),
        Label(source: "k8s", key: "io.kubernetes.pod.namespace", value: "ns\(id % 20)"),
      ])
      identities.append(SecurityIdentity(id: NumericIdentity(UInt32(256 + id)), labels: labels))
    }
    _ = cache.updateIdentities(added: identities, deleted: [])
    for index in 0..<1_000 {
      var requirements = [
        LabelRequirement(key: .k8s("app"), op: .in, values: ["app\(index % 500)"])
      ]
      if index >= 500 {
        requirements.append(
          LabelRequirement(
            key: .k8s("io.kubernetes.pod.namespace"), op: .in, values: ["ns\(index % 20)"]))
      }
      if index % 5 == 0 {
        requirements.append(LabelRequirement(key: .any("tier"), op: .notIn, values: ["db"]))
      }
      _ = cache.addSelector(EndpointSelector(requirements), user: SelectorUser(UInt64(index)))
    }
    let clock = ContinuousClock()
    var incremental = Samples()
    for i in 0..<50 {
      let labels = LabelSet(validated: [
        Label(source: "k8s", key: "app", value: "app\(i)"),
        Label(source: "k8s", key: "tier", value: "web"),
        Label(source: "k8s", key: "io.kubernetes.pod.namespace", value: "ns3"),
      ])
      let identity = SecurityIdentity(id: NumericIdentity(UInt32(30_000 + i)), labels: labels)
      let start = clock.now
      _ = cache.updateIdentities(added: [identity], deleted: [])
      incremental.add(.now - start)
    }
    let start = clock.now
    _ = cache.fullRecompute()
    return (incremental.p50, (clock.now - start).milliseconds)
  }
}

/// A shared counter for workers.
final class Counter: Sendable {
  private let value = Mutex(0)
  /// Returns the current value and increments it.
  func next() -> Int {
    value.withLock { value in
      defer { value += 1 }
      return value
    }
  }
}
