import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LocalEtcd
import TesseraProto
import TesseraRuntime

/// Cluster services under load: creates/s across four nodes served by 1 and by 2 replicas
/// of the identity and policy services (mutual TLS on loopback, one etcd), and the CPU
/// each service spends per create, from which the number of nodes one replica can serve
/// is computed rather than guessed (README, "Benchmarks").
///
/// Every node is an endpointd + datapathd pair with the eBPF datapath in its own pin
/// directory; endpoints have no device (map writes, no tc attach), as in the node figures.
enum ClusterBenchmark {
  struct Configuration {
    var nodes = 4
    /// Create+delete pairs per node in the measured phase.
    var createsPerNode = 150
    /// Creates in flight per node.
    var concurrencyPerNode = 4
    /// Distinct label sets the pods use (their identities exist before the measurement).
    var labelSets = 20
    /// Creates per second per node that the replica sizing assumes.
    var createsPerSecondPerNode = 5.0
    /// endpointd's `--identity-release-delay`; nil leaves its default.
    var identityReleaseDelay: Double? = nil
  }

  static func figures(bin: String, configuration: Configuration = .init()) async throws -> (
    rows: [Row], notes: [String]
  ) {
    guard LocalEtcdCluster.skipReason == nil else {
      return ([], ["cluster figures skipped: \(LocalEtcdCluster.skipReason ?? "")"])
    }
    var rows: [Row] = []
    var measured: [Int: Measurement] = [:]
    for replicas in [1, 2] {
      measured[replicas] = try await measure(
        bin: bin, replicas: replicas, configuration: configuration)
    }
    let one = measured[1]!
    let two = measured[2]!
    // The worst case for the identity service: every create is its node's first pod of
    // the label set and every delete its last (no reference kept after the last pod).
    var undelayed = configuration
    undelayed.identityReleaseDelay = 0
    let twoUndelayed = try await measure(bin: bin, replicas: 2, configuration: undelayed)
    for (replicas, run) in [(1, one), (2, two)] {
      rows.append(
        Row(
          key: "cluster_creates_per_s_\(replicas)_replica\(replicas == 1 ? "" : "s")",
          label:
            "creates/s across \(configuration.nodes) nodes, \(replicas) identity + \(replicas) policy replica\(replicas == 1 ? "" : "s") (mTLS, create+delete, \(configuration.concurrencyPerNode) in flight per node)",
          value: run.createsPerSecond, unit: "/s",
          floor: "bare mTLS gRPC calls/s to one replica \(format(run.bareCallsPerSecond))",
          target: ""))
    }
    // CPU per create, from the two-replica run (summed over replicas and nodes).
    let services: [(key: String, label: String)] = [
      ("identity", "identityd (all replicas)"), ("policy", "policyd (all replicas)"),
      ("endpoint", "endpointd (all nodes)"), ("datapath", "datapathd (all nodes)"),
      ("etcd", "etcd"),
    ]
    for service in services {
      rows.append(
        Row(
          key: "cluster_\(service.key)_cpu_ms_per_create",
          label: "CPU per create (with its delete), \(service.label), 2 replicas",
          value: two.cpuPerCreate(service.key), unit: "ms",
          floor: cpuFloor(two, service.key), target: ""))
    }
    rows.append(
      Row(
        key: "cluster_identity_cpu_ms_per_create_no_release_delay",
        label:
          "CPU per create (with its delete), identityd (all replicas), 2 replicas, no release delay (each create a node's first reference)",
        value: twoUndelayed.cpuPerCreate("identity"), unit: "ms",
        floor: cpuFloor(twoUndelayed, "identity"), target: ""))
    let rate = configuration.createsPerSecondPerNode
    rows.append(
      Row(
        key: "nodes_per_identity_replica_no_release_delay",
        label:
          "nodes one identity replica serves at \(format(rate)) creates/s per node, no release delay (one core per replica)",
        value: nodesPerReplica(twoUndelayed, "identity", rate: rate),
        unit: "nodes",
        floor: nodesPerReplicaFloor(twoUndelayed, "identity", rate: rate),
        target: ""))
    for service in ["identity", "policy"] {
      rows.append(
        Row(
          key: "nodes_per_\(service)_replica",
          label:
            "nodes one \(service) replica serves at \(format(rate)) creates/s per node (one core per replica)",
          value: nodesPerReplica(two, service, rate: rate), unit: "nodes",
          floor: nodesPerReplicaFloor(two, service, rate: rate),
          target: "≥ 500 (issue)", bound: .atLeast(500)))
    }
    let notes = [
      "cluster figures: \(configuration.nodes) nodes (endpointd + datapathd, eBPF, no devices), identity and policy replicas on loopback TCP with mutual TLS, one etcd member; \(configuration.createsPerNode) create+delete pairs per node on \(configuration.labelSets) label sets whose identities exist; everything shares this machine's cores, so creates/s is the whole cluster's on these cores",
      "identity service CPU per create depends on how often a create is its node's first pod of a label set: with endpointd's default release delay (a node keeps its reference 30 s after its last pod of the label set went) the churn on \(configuration.labelSets) label sets per node makes almost no identity call; the `no release delay` rows are the worst case, every create a node's first reference and every delete its last",
    ]
    return (rows, notes)
  }

  static let tickMilliseconds = 1000 / Double(sysconf(Int32(_SC_CLK_TCK)))

  /// Where CPU per create comes from, and its resolution: /proc counts whole clock ticks.
  static func cpuFloor(_ measurement: Measurement, _ service: String) -> String {
    let processes = measurement.processes[service] ?? 0
    return
      "utime+stime from /proc over \(measurement.creates) creates and \(processes) process\(processes == 1 ? "" : "es"); resolution \(format(measurement.cpuResolution(service))) ms per create (one tick per counter)"
  }

  /// Nodes one core serves at `rate` creates/s per node. A service that used less CPU
  /// than /proc can show counts at that resolution, so the figure is a lower bound
  /// there, never infinite.
  static func nodesPerReplica(_ measurement: Measurement, _ service: String, rate: Double)
    -> Double
  {
    1000 / (max(measurement.cpuPerCreate(service), measurement.cpuResolution(service)) * rate)
  }

  static func nodesPerReplicaFloor(_ measurement: Measurement, _ service: String, rate: Double)
    -> String
  {
    let perCreate = measurement.cpuPerCreate(service)
    let resolution = measurement.cpuResolution(service)
    return perCreate < resolution
      ? "≥ 1000 ms / (\(format(resolution)) ms × \(format(rate))/s): less CPU than /proc resolves over the run"
      : "= 1000 ms / (\(format(perCreate)) ms × \(format(rate))/s)"
  }

  struct Measurement {
    var creates: Int
    var createsPerSecond: Double
    var bareCallsPerSecond: Double
    /// CPU milliseconds spent during the measured phase, by service.
    var cpuMilliseconds: [String: Double]
    /// Processes behind each service's figure (replicas, nodes, etcd members).
    var processes: [String: Int]

    /// CPU milliseconds `service` spent per create (with its delete).
    func cpuPerCreate(_ service: String) -> Double {
      (cpuMilliseconds[service] ?? .nan) / Double(creates)
    }

    /// The least CPU per create /proc can show for `service`: its figure sums utime and
    /// stime, each counted in whole clock ticks, over its processes, so a reading of
    /// zero means less than one tick per counter.
    func cpuResolution(_ service: String) -> Double {
      ClusterBenchmark.tickMilliseconds * Double(2 * max(processes[service] ?? 1, 1))
        / Double(creates)
    }
  }

  private static func measure(bin: String, replicas: Int, configuration: Configuration)
    async throws -> Measurement
  {
    let etcd = try LocalEtcdCluster(members: 1)
    defer { etcd.shutdown() }
    let cluster = try LocalCluster(
      bin: bin, etcd: etcd, replicas: replicas, configuration: configuration)
    defer { cluster.stop() }
    try cluster.start()
    let policy = cluster.root + "/policy.yaml"
    try """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: bench-cluster, namespace: default}
    spec:
      endpointSelector: {matchLabels: {tier: bench}}
      ingress:
      - fromEndpoints: [{matchLabels: {tier: bench}}]
        toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    """.write(toFile: policy, atomically: true, encoding: .utf8)
    let imported = try execute(
      [bin + "/tessera", "policy", "import", policy, "--run-dir", cluster.replicaRunDir(1)])
    guard imported.status == 0 else {
      throw BenchError(
        "cluster: policy import failed: \(String(decoding: imported.output, as: UTF8.self))")
    }

    return try await cluster.withEndpointClients { clients in
      // Every label set gets its identity (and every node its policy) before the measurement.
      for (node, client) in clients.enumerated() {
        for set in 0..<configuration.labelSets {
          let container = "warm-\(node)-\(set)"
          _ = try await client.createEndpoint(
            Self.request(container: container, node: node, index: set, set: set))
          _ = try await client.deleteEndpoint(
            .with { $0.endpoint = .with { $0.containerID = container } })
        }
      }
      let bare = try await cluster.bareCallsPerSecond()
      let before = cluster.cpuTicks()
      let start = ContinuousClock.now
      try await withThrowingTaskGroup(of: Void.self) { group in
        for (node, client) in clients.enumerated() {
          group.addTask {
            let counter = Counter()
            _ = try await Benchmark.throughput(
              concurrency: configuration.concurrencyPerNode, total: configuration.createsPerNode
            ) {
              let i = counter.next()
              let container = "pod-\(node)-\(i)"
              _ = try await client.createEndpoint(
                Self.request(
                  container: container, node: node, index: 1000 + i,
                  set: i % configuration.labelSets))
              _ = try await client.deleteEndpoint(
                .with { $0.endpoint = .with { $0.containerID = container } })
            }
          }
        }
        try await group.waitForAll()
      }
      let elapsed = (ContinuousClock.now - start).milliseconds / 1000
      let after = cluster.cpuTicks()
      let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
      var cpu: [String: Double] = [:]
      for (service, ticks) in after {
        cpu[service] = Double(ticks - (before[service] ?? 0)) / ticksPerSecond * 1000
      }
      let creates = configuration.nodes * configuration.createsPerNode
      return Measurement(
        creates: creates, createsPerSecond: Double(creates) / elapsed,
        bareCallsPerSecond: bare, cpuMilliseconds: cpu, processes: cluster.processCounts())
    }
  }

  static func request(container: String, node: Int, index: Int, set: Int)
    -> Tessera_Endpoint_V1_CreateEndpointRequest
  {
    var request = Benchmark.createRequest(
      container: container, ip: "10.\(100 + node).\((index / 256) % 256).\(index % 256)",
      app: "app-\(set)")
    request.labels.append(
      .with {
        $0.source = "k8s"
        $0.key = "tier"
        $0.value = "bench"
      })
    return request
  }
}

/// A simulated cluster on this machine, as `Tests/cluster/cluster_e2e.sh` builds it:
/// identity and policy replicas on loopback TCP with mutual TLS (certificates made with
/// openssl, each naming its holder), and nodes of endpointd + datapathd.
final class LocalCluster: @unchecked Sendable {
  let bin: String
  let etcd: LocalEtcdCluster
  let replicas: Int
  let nodes: Int
  let identityReleaseDelay: Double?
  let root: String
  private var processes: [(service: String, process: Process)] = []
  private var identityPorts: [Int] = []
  private var policyPorts: [Int] = []
  private var pinDirectories: [String] = []

  init(
    bin: String, etcd: LocalEtcdCluster, replicas: Int,
    configuration: ClusterBenchmark.Configuration
  )
    throws
  {
    self.bin = bin
    self.etcd = etcd
    self.replicas = replicas
    nodes = configuration.nodes
    identityReleaseDelay = configuration.identityReleaseDelay
    root =
      FileManager.default.temporaryDirectory.appendingPathComponent(
        "tsr-bench-cluster-\(getpid())-\(replicas)"
      ).path
    try FileManager.default.createDirectory(
      atPath: root + "/pki", withIntermediateDirectories: true)
  }

  func replicaRunDir(_ replica: Int) -> String { "\(root)/ctl\(replica)/run" }
  func nodeRunDir(_ node: Int) -> String { "\(root)/n\(node)/run" }

  func start() throws {
    try makeCertificates()
    var ports = try LocalEtcdCluster.freePorts(2 * replicas)
    identityPorts = (0..<replicas).map { _ in ports.removeFirst() }
    policyPorts = (0..<replicas).map { _ in ports.removeFirst() }
    let identityAddress = identityPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",")
    let policyAddress = policyPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",")
    let store = "etcd:\(etcd.endpoints)"
    for replica in 1...replicas {
      let state = "\(root)/ctl\(replica)/state"
      try launch(
        "identity", "tessera-identityd",
        [
          "--run-dir", replicaRunDir(replica), "--state-dir", state, "--node-name",
          "identity-\(replica)",
          "--listen", "127.0.0.1:\(identityPorts[replica - 1])", "--identity-store", store,
        ]
          + tls("identity-\(replica)"), log: "\(root)/ctl\(replica)/identityd.log")
      try launch(
        "policy", "tessera-policyd",
        [
          "--run-dir", replicaRunDir(replica), "--state-dir", state, "--node-name",
          "policy-\(replica)",
          "--listen", "127.0.0.1:\(policyPorts[replica - 1])", "--policy-store", store,
          "--identity-address", identityAddress,
        ]
          + tls("policy-\(replica)"), log: "\(root)/ctl\(replica)/policyd.log")
    }
    for replica in 1...replicas {
      try waitServing(replicaRunDir(replica), "identity")
      try waitServing(replicaRunDir(replica), "policy")
    }
    for node in 1...nodes {
      let pin = "/sys/fs/bpf/tsr-bench-cluster-\(getpid())-\(replicas)-n\(node)"
      pinDirectories.append(pin)
      try launch(
        "datapath", "tessera-datapathd",
        [
          "--run-dir", nodeRunDir(node), "--state-dir", "\(root)/n\(node)/state", "--node-name",
          "node-\(node)", "--backend", "bpf", "--bpf-pin-dir", pin,
        ],
        log: "\(root)/n\(node)/datapathd.log")
    }
    for node in 1...nodes { try waitServing(nodeRunDir(node), "datapath") }
    for node in 1...nodes {
      try launch(
        "endpoint", "tessera-endpointd",
        [
          "--run-dir", nodeRunDir(node), "--state-dir", "\(root)/n\(node)/state", "--node-name",
          "node-\(node)", "--identity-address", identityAddress, "--policy-address", policyAddress,
          "--cluster-store", store,
        ]
          + (identityReleaseDelay.map { ["--identity-release-delay", String($0)] } ?? [])
          + tls("node-\(node)"), log: "\(root)/n\(node)/endpointd.log")
    }
    for node in 1...nodes { try waitServing(nodeRunDir(node), "endpoint") }
  }

  func stop() {
    for (_, process) in processes.reversed() where process.isRunning {
      kill(process.processIdentifier, SIGTERM)
    }
    for (_, process) in processes { process.waitUntilExit() }
    processes = []
    for pin in pinDirectories { try? FileManager.default.removeItem(atPath: pin) }
    try? FileManager.default.removeItem(atPath: root)
  }

  deinit { stop() }

  /// How many processes each service's CPU figure sums.
  func processCounts() -> [String: Int] {
    var counts: [String: Int] = [:]
    for process in processes { counts[process.service, default: 0] += 1 }
    counts["etcd"] = etcd.members.count
    return counts
  }

  /// Clock ticks (user + system) each service has used so far, summed over its processes.
  func cpuTicks() -> [String: Int] {
    var ticks: [String: Int] = [:]
    var pids = processes.map { ($0.service, $0.process.processIdentifier) }
    for member in etcd.members {
      if let pid = etcd.processID(member.name) { pids.append(("etcd", pid)) }
    }
    for (service, pid) in pids {
      guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
      else { continue }
      // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else {
        continue
      }
      ticks[service, default: 0] += user + system
    }
    return ticks
  }

  /// One endpoint-service client per node, over each node's Unix socket.
  func withEndpointClients<Result: Sendable>(
    _ body: ([Tessera_Endpoint_V1_EndpointService.Client<HTTP2ClientTransport.Posix>]) async throws
      -> Result
  ) async throws -> Result {
    let services = try (1...nodes).map {
      try GRPCClientService(
        socketPath: RunDirectory(path: nodeRunDir($0)).socketPath(for: .endpoint))
    }
    let connections = services.map { service in Task { try? await service.client.runConnections() }
    }
    defer {
      for service in services { service.client.beginGracefulShutdown() }
      for connection in connections { connection.cancel() }
    }
    return try await body(
      services.map { Tessera_Endpoint_V1_EndpointService.Client(wrapping: $0.client) })
  }

  /// The floor: health checks over one mutual-TLS connection to identity replica 1.
  func bareCallsPerSecond() async throws -> Double {
    let service = try GRPCClientService(
      address: try ServiceAddress(parsing: "127.0.0.1:\(identityPorts[0])"),
      tls: MutualTLS(
        certificateFile: "\(root)/pki/node-1.pem", keyFile: "\(root)/pki/node-1.key",
        trustRootsFile: "\(root)/pki/ca.pem"))
    let connection = Task { try? await service.client.runConnections() }
    defer {
      service.client.beginGracefulShutdown()
      connection.cancel()
    }
    let health = Grpc_Health_V1_Health.Client(wrapping: service.client)
    _ = try await health.check(.init())
    return try await Benchmark.throughput(concurrency: 16, total: 3200) {
      _ = try await health.check(.init())
    }
  }

  private func tls(_ name: String) -> [String] {
    [
      "--tls-cert-file", "\(root)/pki/\(name).pem", "--tls-key-file", "\(root)/pki/\(name).key",
      "--tls-ca-file", "\(root)/pki/ca.pem",
    ]
  }

  private func launch(_ service: String, _ executable: String, _ arguments: [String], log: String)
    throws
  {
    try FileManager.default.createDirectory(
      atPath: (log as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: log, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "\(bin)/\(executable)")
    process.arguments = arguments + ["--metrics-address", "off"]
    let output = FileHandle(forWritingAtPath: log)
    process.standardOutput = output
    process.standardError = output
    try process.run()
    processes.append((service, process))
  }

  private func waitServing(_ runDir: String, _ service: String) throws {
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
      let status = try execute(
        [bin + "/tessera", "status", "--run-dir", runDir, "--service", service, "--timeout", "2"])
      if status.status == 0 { return }
      usleep(100_000)
    }
    throw BenchError("cluster: \(service) in \(runDir) did not become ready (logs in \(root))")
  }

  /// A CA and one certificate per replica and node, the holder's name in the SAN.
  private func makeCertificates() throws {
    let pki = root + "/pki"
    func openssl(_ arguments: [String]) throws {
      let result = try execute(["/usr/bin/openssl"] + arguments)
      guard result.status == 0 else {
        throw BenchError("openssl \(arguments.joined(separator: " ")) failed")
      }
    }
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    try openssl(
      ["req", "-x509"] + ec + [
        "-days", "2", "-subj", "/CN=tessera-bench-ca", "-keyout", "\(pki)/ca.key", "-out",
        "\(pki)/ca.pem",
      ])
    let names =
      (1...replicas).flatMap { ["identity-\($0)", "policy-\($0)"] }
      + (1...nodes).map { "node-\($0)" }
    for name in names {
      try openssl(
        ["req"] + ec + [
          "-subj", "/CN=\(name)", "-keyout", "\(pki)/\(name).key", "-out", "\(pki)/\(name).csr",
        ])
      try "subjectAltName=DNS:\(name)\n".write(
        toFile: "\(pki)/\(name).ext", atomically: true, encoding: .utf8)
      try openssl([
        "x509", "-req", "-in", "\(pki)/\(name).csr", "-CA", "\(pki)/ca.pem", "-CAkey",
        "\(pki)/ca.key", "-CAcreateserial", "-days", "2", "-extfile", "\(pki)/\(name).ext", "-out",
        "\(pki)/\(name).pem",
      ])
    }
  }
}
