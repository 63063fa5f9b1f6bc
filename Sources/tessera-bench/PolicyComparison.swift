import DatapathService
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TesseraCore
import TesseraProto
import TesseraRuntime

/// One design at one endpoint count.
struct ComparisonPoint: Sendable {
  var design: String
  var endpoints: Int
  /// Applying "one more pod joins the selected group" (µs).
  var podJoinMicroseconds: Double
  /// Applying the whole group again (ms).
  var resyncMilliseconds: Double
  /// Paired per-connection cost of the policy (µs), and the medians it came from.
  var connection: PairedConnectTimes
}

/// The comparison the product exists for: Tessera's identity-based datapath
/// against three IP-based designs, in network namespaces the benchmark builds,
/// as the selected group grows.
///
/// Scenario for every design: a server pod accepts TCP on `port` from the
/// group "app=client" (N pods, the client pod among them) and nothing else.
enum PolicyComparison {
  static let port: UInt16 = 8080
  static let deniedPort: UInt16 = 9090
  /// Joins timed per count (each a new member address).
  static let joins = 30
  /// Block pairs of the paired connect measurement (each block ~100 ms).
  static let pairs = 30

  /// N member addresses; the measured client comes last (for the linear
  /// iptables chain that is the newest pod and the worst case).
  static func members(_ count: Int) -> [String] {
    (1..<max(count, 1)).map { "10.92.\($0 / 256).\($0 % 256)" } + [ComparisonTopology.policyClient]
  }

  static func joiningAddress(_ index: Int) -> String { "10.93.\(index / 256).\(index % 256)" }

  // MARK: IP-based designs

  static func measure(_ design: AddressPolicyDesign, counts: [Int]) throws -> [ComparisonPoint] {
    var points: [ComparisonPoint] = []
    for count in counts {
      let topology = try ComparisonTopology.create(tag: "\(getpid())")
      defer { topology.destroy() }
      let scratch = FileManager.default.temporaryDirectory.appendingPathComponent(
        "tsr-bench-\(design.name)-\(getpid())"
      ).path
      try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
      defer { try? FileManager.default.removeItem(atPath: scratch) }

      let members = members(count)
      for command in try design.install(members, port, scratch) {
        try execute(topology.router.exec(command), keepErrors: true).checkedOutput()
      }

      var join = Samples()
      var floor = Samples()
      for index in 0..<joins {
        let joined = try execute(
          topology.router.exec(design.join(joiningAddress(index), port)), environment: [:])
        guard joined.status == 0 else {
          throw BenchError(
            "\(design.name): joining \(joiningAddress(index)) exited \(joined.status)")
        }
        join.add(joined.elapsed)
        floor.add(try execute(topology.router.exec(["/bin/true"]), environment: [:]).elapsed)
      }
      var resync = Samples()
      for _ in 0..<3 {
        let command = try design.resync(members, port, scratch)
        let resynced = try execute(topology.router.exec(command), environment: [:])
        guard resynced.status == 0 else {
          throw BenchError("\(design.name): resync exited \(resynced.status)")
        }
        resync.add(resynced.elapsed)
      }
      let held = try design.memberCount(topology.router)
      guard held == count else {
        throw BenchError("\(design.name): \(held) members after resync, wanted \(count)")
      }

      try PairedConnectTimes.verifyEnforcement(
        topology: topology, allowedPort: port, deniedPort: deniedPort, design: design.name)
      let connection = try PairedConnectTimes.measure(topology: topology, port: port, pairs: pairs)
      points.append(
        ComparisonPoint(
          design: design.name, endpoints: count, podJoinMicroseconds: (join.p50 - floor.p50) * 1000,
          resyncMilliseconds: resync.p50, connection: connection))
      print(
        "  \(design.name) at \(count): join \(format((join.p50 - floor.p50) * 1000)) µs (exec \(format(join.p50)) ms, floor \(format(floor.p50)) ms), resync \(format(resync.p50)) ms, connection +\(format(connection.overhead)) µs over \(connection.connections) connects"
      )
    }
    return points
  }

  // MARK: Tessera

  /// What the Tessera run measured besides the comparison points.
  struct TesseraExtras {
    /// CreateEndpoint(sync) of a pod whose identity exists, p50 per count (ms).
    var joinCreateMilliseconds: [Int: Double] = [:]
    /// Policy-map entries written while those pods joined (all counts together).
    var joinPolicyMapWrites = 0
    var joinCount = 0
  }

  /// A real node (four daemons, eBPF datapath) started inside the router
  /// namespace: the server and client pods are endpoints on the router-side
  /// veths, the rest of the group are endpoints without a device.
  static func measureTessera(bin: String, object: String, counts: [Int]) async throws -> (
    [ComparisonPoint], TesseraExtras
  ) {
    let topology = try ComparisonTopology.create(tag: "\(getpid())")
    defer { topology.destroy() }
    let root = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-bench-cmp-\(getpid())"
    ).path
    let run = RunDirectory(path: root + "/run")
    let pin = "/sys/fs/bpf/tessera-bench-cmp-\(getpid())"
    let metricsBase = 19460
    defer {  // also after a node up that failed halfway
      _ = try? execute([bin + "/tessera", "node", "down", "--run-dir", run.path], keepErrors: true)
        .checkedOutput()
      try? FileManager.default.removeItem(atPath: root)
      try? FileManager.default.removeItem(atPath: pin)
    }
    try execute(
      topology.router.exec([
        bin + "/tessera", "node", "up", "--detach", "--run-dir", run.path, "--state-dir",
        root + "/state",
        "--bpf-pin-dir", pin, "--metrics-base-port", "\(metricsBase)",
      ]), keepErrors: true
    ).checkedOutput()
    let kernel = try KernelIPCache(object: object)
    defer { kernel.close() }

    return try await withGRPCClient(
      transport: .http2NIOPosix(
        target: .unixDomainSocket(path: run.socketPath(for: .endpoint)),
        transportSecurity: .plaintext)
    ) { endpointClient in
      try await withGRPCClient(
        transport: .http2NIOPosix(
          target: .unixDomainSocket(path: run.socketPath(for: .policy)),
          transportSecurity: .plaintext)
      ) { policyClient in
        let endpoints = Tessera_Endpoint_V1_EndpointService.Client(wrapping: endpointClient)
        let policy = Tessera_Policy_V1_PolicyService.Client(wrapping: policyClient)
        _ = try await policy.importPolicy(
          .with {
            $0.sourceName = "comparison.yaml"
            $0.content = Data(
              """
              apiVersion: cilium.io/v2
              kind: CiliumNetworkPolicy
              metadata: {name: server-from-clients, namespace: default}
              spec:
                endpointSelector: {matchLabels: {app: server}}
                ingress:
                - fromEndpoints: [{matchLabels: {app: client}}]
                  toPorts: [{ports: [{port: "\(port)", protocol: TCP}]}]
              """.utf8)
          })
        func create(_ container: String, _ ip: String, app: String, device: String = "")
          async throws
        {
          _ = try await endpoints.createEndpoint(
            Benchmark.createRequest(container: container, ip: ip, app: app, host: device))
        }
        try await create(
          "server", ComparisonTopology.policyServer, app: "server",
          device: ComparisonTopology.policyServerLink)
        try await create(
          "client", ComparisonTopology.policyClient, app: "client",
          device: ComparisonTopology.policyClientLink)

        var points: [ComparisonPoint] = []
        var extras = TesseraExtras()
        let everyMember = members(counts.max() ?? 1)
        var live = 1  // the client
        for count in counts.sorted() {
          // Members other than the client, in the same order as the IP designs.
          while live < count {
            try await create("member-\(live)", everyMember[live - 1], app: "client")
            live += 1
          }
          try kernel.fill(Array(everyMember.prefix(count)))

          let before = try policyMapWrites(topology.router, port: metricsBase + 2)
          var joinCreate = Samples()
          for index in 0..<joins {
            let start = ContinuousClock.now
            try await create("join-\(index)", joiningAddress(index), app: "client")
            joinCreate.add(.now - start)
          }
          extras.joinPolicyMapWrites +=
            try policyMapWrites(topology.router, port: metricsBase + 2) - before
          extras.joinCount += joins
          extras.joinCreateMilliseconds[count] = joinCreate.p50
          for index in 0..<joins {
            _ = try await endpoints.deleteEndpoint(
              .with { $0.endpoint = .with { $0.containerID = "join-\(index)" } })
          }

          try PairedConnectTimes.verifyEnforcement(
            topology: topology, allowedPort: port, deniedPort: deniedPort, design: "tessera")
          let connection = try PairedConnectTimes.measure(
            topology: topology, port: port, pairs: pairs)
          let join = try kernel.joinMicroseconds()
          let resync = try kernel.resyncMilliseconds(Array(everyMember.prefix(count)))
          points.append(
            ComparisonPoint(
              design: "tessera", endpoints: count, podJoinMicroseconds: join,
              resyncMilliseconds: resync, connection: connection))
          print(
            "  tessera at \(count): join \(format(join)) µs (create → ready \(format(joinCreate.p50)) ms), resync \(format(resync)) ms, connection +\(format(connection.overhead)) µs over \(connection.connections) connects"
          )
        }
        return (points, extras)
      }
    }
  }

  /// The datapath's policy-map write counter, scraped from datapathd's /metrics in the namespace.
  static func policyMapWrites(_ namespace: NetworkNamespace, port: Int) throws -> Int {
    let text = try namespace.run { try TCPProbe.httpGet("127.0.0.1", UInt16(port), "/metrics") }
    let line = text.split(separator: "\n").first {
      $0.hasPrefix("tessera_datapath_policy_map_writes_total")
    }
    return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }.map { Int($0) }
      ?? 0
  }
}

/// The kernel side of a Tessera pod join, timed in process with the code the
/// datapath daemon runs (`Datapath` over the eBPF backend) on a private pin
/// directory: a join with an existing identity is one ipcache write.
final class KernelIPCache {
  private let pin = "/sys/fs/bpf/tessera-bench-ipcache-\(getpid())"
  private let datapath: Datapath
  private let identity = NumericIdentity(40_000)
  private var nextJoin = 0

  init(object: String) throws {
    datapath = try Datapath(
      backend: BPFDatapathBackend(configuration: .init(objectPath: object, pinDirectory: pin)))
  }

  func close() { try? FileManager.default.removeItem(atPath: pin) }

  func fill(_ members: [String]) throws {
    try datapath.upsertIPCache(
      members.map { IPCacheEntry(prefix: IPPrefix($0)!, identity: identity) })
  }

  /// p50 of writing one new member's address (µs).
  func joinMicroseconds() throws -> Double {
    var samples = Samples()
    for _ in 0..<500 {
      let entry = IPCacheEntry(
        prefix: IPPrefix(PolicyComparison.joiningAddress(1000 + nextJoin % 20_000))!,
        identity: identity)
      nextJoin += 1
      let start = ContinuousClock.now
      try datapath.upsertIPCache([entry])
      samples.add(.now - start)
    }
    return samples.p50 * 1000
  }

  /// p50 of writing every member's address again (ms).
  func resyncMilliseconds(_ members: [String]) throws -> Double {
    let entries = members.map { IPCacheEntry(prefix: IPPrefix($0)!, identity: identity) }
    var samples = Samples()
    for _ in 0..<3 {
      let start = ContinuousClock.now
      try datapath.upsertIPCache(entries)
      samples.add(.now - start)
    }
    return samples.p50
  }
}
