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
  /// The kernel write of "one more pod joins the selected group", in process (µs):
  /// Tessera's ipcache write into the node's own map, libipset's or libnftables'
  /// set update; NaN for iptables (no library).
  var joinInProcessMicroseconds: Double
  /// The same join through the design's control plane (ms), exec floor not subtracted:
  /// the per-pod update command's exec → exit, or Tessera's `CreateEndpoint(sync)`.
  var joinControlMilliseconds: Double
  /// Applying the whole group again (ms), exec floor subtracted: the IP designs'
  /// command exec → exit − `true` exec → exit; Tessera's in-process ipcache writes.
  var resyncMilliseconds: Double
  /// Paired per-connection cost of the policy (µs), and the medians it came from.
  var connection: PairedConnectTimes
  /// `true`'s exec → exit in the router namespace (ms); NaN for Tessera.
  var execFloorMilliseconds: Double = .nan
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
  /// Joins timed per count through each control plane (each a new member address).
  static let joins = 30
  /// Joins timed per count in process (each a new member address).
  static let inProcessJoins = 200
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
      let inProcess =
        try design.inProcessJoin?(
          topology.router, (0..<inProcessJoins).map { joiningAddress(joins + $0) }) ?? .nan
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
          design: design.name, endpoints: count, joinInProcessMicroseconds: inProcess,
          joinControlMilliseconds: join.p50, resyncMilliseconds: resync.p50 - floor.p50,
          connection: connection, execFloorMilliseconds: floor.p50))
      print(
        "  \(design.name) at \(count): join in process \(format(inProcess)) µs, by command \(format(join.p50)) ms (`true` \(format(floor.p50)) ms), resync \(format(resync.p50 - floor.p50)) ms, connection +\(format(connection.overhead)) µs over \(connection.connections) connects"
      )
    }
    return points
  }

  // MARK: Tessera

  /// What the Tessera run measured besides the comparison points.
  struct TesseraExtras {
    /// Policy-map entries written into other endpoints' maps while pods with an existing
    /// identity joined (all counts together): must be 0. Nil when the metric was missing.
    var peerPolicyMapWrites: Int? = 0
    /// Entries the selected joining pods wrote into their own maps (all counts
    /// together): must be above 0. Nil when the metric was missing.
    var ownPolicyMapWrites: Int? = 0
    var joinCount = 0
    var selectedJoinCount = 0
  }

  /// Labels of the joining pod that a policy selects; a seed pod gives them an identity first.
  static let selectedLabels = ["app": "client", "tier": "selected"]

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
              ---
              apiVersion: cilium.io/v2
              kind: CiliumNetworkPolicy
              metadata: {name: selected-clients-from-server, namespace: default}
              spec:
                endpointSelector: {matchLabels: {tier: selected}}
                ingress:
                - fromEndpoints: [{matchLabels: {app: server}}]
                  toPorts: [{ports: [{port: "\(deniedPort)", protocol: TCP}]}]
              """.utf8)
          })
        @discardableResult
        func create(
          _ container: String, _ ip: String, app: String, device: String = "",
          labels: [String: String] = [:]
        ) async throws -> Tessera_Endpoint_V1_Endpoint {
          try await endpoints.createEndpoint(
            Benchmark.createRequest(
              container: container, ip: ip, app: app, host: device, labels: labels)
          ).endpoint
        }
        try await create(
          "server", ComparisonTopology.policyServer, app: "server",
          device: ComparisonTopology.policyServerLink)
        let client = try await create(
          "client", ComparisonTopology.policyClient, app: "client",
          device: ComparisonTopology.policyClientLink)
        // The node's own pinned maps, opened from the router namespace (the node's
        // addresses are the ones the backend keeps as `host` when it opens).
        let kernel = try NodeIPCache.open(
          object: object, pin: pin, in: topology.router,
          identity: NumericIdentity(client.identity))

        // A member selected by a policy of its own, so a later pod with its labels joins
        // with an existing identity and must write its own policy map and no other.
        try await create(
          "selected-seed", "10.95.0.1", app: "", labels: selectedLabels)

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

          // Unselected joins: every policy-map write would be into a peer's map.
          let before = try policyMapWrites(topology.router, port: metricsBase + 2)
          var joinCreate = Samples()
          for index in 0..<joins {
            let start = ContinuousClock.now
            try await create("join-\(index)", joiningAddress(index), app: "client")
            joinCreate.add(.now - start)
          }
          // Writes a join would cause later (events handled after the create returned)
          // must be counted too.
          try await Task.sleep(for: .milliseconds(300))
          let afterJoins = try policyMapWrites(topology.router, port: metricsBase + 2)
          // One selected join: its own entries are expected, any other write is a peer's.
          let selected = try await create(
            "join-selected", "10.95.1.\(extras.selectedJoinCount + 1)", app: "",
            labels: selectedLabels)
          try await Task.sleep(for: .milliseconds(300))
          let afterSelected = try policyMapWrites(topology.router, port: metricsBase + 2)
          let own = try kernel.policyEntries(
            of: selected.id, object: object, pin: pin, in: topology.router)
          if let before, let afterJoins, let afterSelected, let peers = extras.peerPolicyMapWrites,
            let owned = extras.ownPolicyMapWrites
          {
            extras.peerPolicyMapWrites =
              peers + (afterJoins - before) + (afterSelected - afterJoins - own)
            extras.ownPolicyMapWrites = owned + own
          } else {
            extras.peerPolicyMapWrites = nil
            extras.ownPolicyMapWrites = nil
          }
          extras.joinCount += joins + 1
          extras.selectedJoinCount += 1
          for container in (0..<joins).map({ "join-\($0)" }) + ["join-selected"] {
            _ = try await endpoints.deleteEndpoint(
              .with { $0.endpoint = .with { $0.containerID = container } })
          }

          try PairedConnectTimes.verifyEnforcement(
            topology: topology, allowedPort: port, deniedPort: deniedPort, design: "tessera")
          let connection = try PairedConnectTimes.measure(
            topology: topology, port: port, pairs: pairs)
          let join = try kernel.joinMicroseconds(
            (0..<inProcessJoins).map { joiningAddress(joins + $0) })
          let resync = try kernel.resyncMilliseconds(Array(everyMember.prefix(count)))
          points.append(
            ComparisonPoint(
              design: "tessera", endpoints: count, joinInProcessMicroseconds: join,
              joinControlMilliseconds: joinCreate.p50, resyncMilliseconds: resync,
              connection: connection))
          print(
            "  tessera at \(count): join in process \(format(join)) µs, by CreateEndpoint \(format(joinCreate.p50)) ms, resync \(format(resync)) ms, connection +\(format(connection.overhead)) µs over \(connection.connections) connects"
          )
        }
        return (points, extras)
      }
    }
  }

  /// The datapath's policy-map write counter, scraped from datapathd's /metrics in the
  /// namespace; nil when the line is missing (then the writes cannot be checked).
  static func policyMapWrites(_ namespace: NetworkNamespace, port: Int) throws -> Int? {
    let text = try namespace.run { try TCPProbe.httpGet("127.0.0.1", UInt16(port), "/metrics") }
    let line = text.split(separator: "\n").first {
      $0.hasPrefix("tessera_datapath_policy_map_writes_total")
    }
    return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }.map { Int($0) }
  }
}

/// The kernel side of a Tessera pod join, timed in process with the code the
/// datapath daemon runs (`Datapath` over the eBPF backend) on the node's own
/// pinned maps: a join with an existing identity is one ipcache write.
final class NodeIPCache: Sendable {
  private let datapath: Datapath
  private let identity: NumericIdentity

  private init(datapath: Datapath, identity: NumericIdentity) {
    self.datapath = datapath
    self.identity = identity
  }

  /// Opens the node's pinned datapath from inside `router`, where the node runs: on
  /// open the backend keeps this namespace's addresses as `host` in the ipcache, and
  /// those must be the node's.
  static func open(
    object: String, pin: String, in router: NetworkNamespace, identity: NumericIdentity
  )
    throws -> NodeIPCache
  {
    try router.run {
      NodeIPCache(
        datapath: try Datapath(
          backend: BPFDatapathBackend(configuration: .init(objectPath: object, pinDirectory: pin))),
        identity: identity)
    }
  }

  /// p50 of writing one new member's address (µs); the addresses are removed again
  /// afterwards, so the node's ipcache holds only its real endpoints.
  func joinMicroseconds(_ addresses: [String]) throws -> Double {
    let entries = addresses.map { IPCacheEntry(prefix: IPPrefix($0)!, identity: identity) }
    defer { try? datapath.deleteIPCache(entries.map(\.prefix)) }
    var samples = Samples()
    for entry in entries {
      let start = ContinuousClock.now
      try datapath.upsertIPCache([entry])
      samples.add(.now - start)
    }
    return samples.p50 * 1000
  }

  /// How many policy entries the node's datapath holds for endpoint `id` now: what a
  /// new endpoint wrote into its own policy map. Read through a fresh open of the
  /// pinned maps, as the daemon reads them on restart (the one held here is a snapshot).
  func policyEntries(of id: UInt64, object: String, pin: String, in router: NetworkNamespace)
    throws -> Int
  {
    try router.run {
      let current = try Datapath(
        backend: BPFDatapathBackend(configuration: .init(objectPath: object, pinDirectory: pin)))
      return current.endpoints().first { $0.id == id }?.policy.entries.count ?? 0
    }
  }

  /// p50 of writing every member's address again (ms), with the identity it holds.
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
