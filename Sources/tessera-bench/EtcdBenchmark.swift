import Foundation
import IdentityService
import LocalEtcd
import TesseraCore
import TesseraEtcd

/// Identity allocation on a real etcd (1 and 3 members on loopback), in
/// process against the store, next to a bare etcd transaction as the floor; with
/// one member also paired like with like against the embedded store (the default):
/// both stores in process, and both behind identityd.
enum EtcdBenchmark {
  /// - Parameter bin: the directory of the tessera binaries, for the nodes behind
  ///   which the two stores are compared through identityd; nil leaves that pairing out.
  static func figures(newIdentities: Int, bin: String?) async throws -> (
    rows: [Row], notes: [String]
  ) {
    guard LocalEtcdCluster.executable != nil else {
      return ([], ["etcd figures skipped: etcd not installed"])
    }
    var rows: [Row] = []
    for members in [1, 3] {
      let cluster = try LocalEtcdCluster(members: members)
      defer { cluster.shutdown() }
      rows += try await measure(
        cluster, members: members, newIdentities: members == 1 ? newIdentities : newIdentities / 2)
      if members == 1, let bin {
        rows += try await throughIdentityService(cluster, bin: bin, newIdentities: newIdentities)
      }
    }
    return (
      rows,
      [
        "etcd figures: the identity store in process against real etcd \(etcdVersion()) on loopback (fsync on); the embedded store is paired with it in the same rounds, in process and behind identityd"
      ]
    )
  }

  private static func measure(_ cluster: LocalEtcdCluster, members: Int, newIdentities count: Int)
    async throws -> [Row]
  {
    let scope = "etcd, \(members) member\(members == 1 ? "" : "s")"
    let key = members == 1 ? "etcd" : "etcd\(members)"
    let client = try EtcdClient(configuration: EtcdConfiguration(parsing: cluster.endpoints))
    let connections = Task { try? await client.runConnections() }
    defer {
      connections.cancel()
      client.beginGracefulShutdown()
    }

    // Floor: one transaction that writes one key, the least a new identity can cost.
    var bare = Samples()
    for i in 0..<500 {
      let start = ContinuousClock.now
      _ = try await client.txn(
        Etcd.txn(when: [Etcd.absent("/floor/\(i)")], then: [Etcd.put("/floor/\(i)", "x")]))
      bare.add(.now - start)
    }
    let a = try await Replica(cluster, node: "bench-a")
    let b = try await Replica(cluster, node: "bench-b")
    defer {
      a.stop()
      b.stop()
    }
    // 32 in flight, paired: rounds alternate bare transactions, transactions of a new
    // identity's shape and new identities, each side first in every other round (ABBA),
    // so a drift of etcd's fsync batching or a stall of the shared VM lands in one
    // round, not on one side. Eight rounds: etcd stalls for a few hundred milliseconds
    // now and then (once or twice a run here), and a median of four let two stalled
    // rounds decide it.
    let rounds = 8
    let perRound = max(1, count * 2 / rounds)
    let labels = try (0..<(count + rounds * perRound)).map {
      try LabelSet(parsing: ["k8s:app=bench\($0)", "k8s:io.kubernetes.pod.namespace=bench"])
    }

    var sequential = Samples()
    let clock = ContinuousClock()
    let sequentialStart = clock.now
    for set in labels.prefix(count) {
      let start = clock.now
      _ = try await a.store.allocate(labels: set, node: a.node)
      sequential.add(.now - start)
    }
    let sequentialRate = Double(count) / (clock.now - sequentialStart).milliseconds * 1000
    // With one member the embedded store (the default) runs the same label sets in the
    // same rounds, in process too: its file in a temporary directory, as identityd opens it.
    let embeddedDirectory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-bench-embedded-\(getpid())"
    ).path
    let embedded =
      members == 1
      ? try SQLiteIdentityStore(path: embeddedDirectory + "/identity.db") : nil
    defer { try? FileManager.default.removeItem(atPath: embeddedDirectory) }
    let bareCounter = Counter()
    let counter = Counter()
    let embeddedCounter = Counter()
    var bareRates: [Double] = []
    var shapedRates: [Double] = []
    var newRates: [Double] = []
    var embeddedRates: [Double] = []
    var ratios: [Double] = []
    func bareTransactions() async throws -> Double {
      try await Benchmark.throughput(concurrency: 32, total: perRound) {
        let i = bareCounter.next() + 1000
        _ = try await client.txn(
          Etcd.txn(when: [Etcd.absent("/floor/\(i)")], then: [Etcd.put("/floor/\(i)", "x")]))
      }
    }
    // The writes a new identity makes, as a bare transaction: both keys absent, then the
    // identity, its label index and the node's reference on a lease (EtcdIdentityStore).
    let shapedLease = try await client.grantLease(ttl: 600)
    func shapedTransactions() async throws -> Double {
      try await Benchmark.throughput(concurrency: 32, total: perRound) {
        let i = bareCounter.next() + 1000
        let canonical = "k8s:app=floor\(i);k8s:io.kubernetes.pod.namespace=bench"
        _ = try await client.txn(
          Etcd.txn(
            when: [
              Etcd.absent("/floor-shaped/id/\(i)"),
              Etcd.absent("/floor-shaped/labels/\(canonical)"),
            ],
            then: [
              Etcd.put("/floor-shaped/id/\(i)", canonical),
              Etcd.put("/floor-shaped/labels/\(canonical)", "\(i)"),
              Etcd.put("/floor-shaped/value/\(canonical)/bench-a", "\(i)", lease: shapedLease),
            ]))
      }
    }
    func newIdentities() async throws -> Double {
      try await Benchmark.throughput(concurrency: 32, total: perRound) {
        _ = try await a.store.allocate(labels: labels[count + counter.next()], node: a.node)
      }
    }
    func newEmbeddedIdentities(_ store: SQLiteIdentityStore) async throws -> Double {
      try await Benchmark.throughput(concurrency: 32, total: perRound) {
        _ = try await store.allocate(labels: labels[count + embeddedCounter.next()], node: a.node)
      }
    }
    for round in 0..<rounds {
      // Each side first in every other round (A B C D, then D C B A).
      var bareRate = 0.0
      var newRate = 0.0
      var measurements: [() async throws -> Void] = [
        { bareRate = try await bareTransactions() },
        { shapedRates.append(try await shapedTransactions()) },
        { newRate = try await newIdentities() },
      ]
      if let embedded {
        measurements.append { embeddedRates.append(try await newEmbeddedIdentities(embedded)) }
      }
      if !round.isMultiple(of: 2) { measurements.reverse() }
      for measurement in measurements { try await measurement() }
      bareRates.append(bareRate)
      newRates.append(newRate)
      ratios.append(newRate / bareRate * 100)
    }
    let bareConcurrent = median(bareRates)
    let shapedConcurrent = median(shapedRates)
    let concurrentRate = median(newRates)
    try? await client.revokeLease(shapedLease)

    // Cached: the node already references the identity (a second pod with the same labels).
    let cachedStart = clock.now
    for set in labels.prefix(count) { _ = try await a.store.allocate(labels: set, node: a.node) }
    let cachedRate = Double(count) / (clock.now - cachedStart).milliseconds * 1000

    // Known elsewhere: the first pod with these labels on another node (one transaction, no new identity).
    try await eventuallyKnown(b, labels[count - 1])
    let knownStart = clock.now
    for set in labels.prefix(count) { _ = try await b.store.allocate(labels: set, node: b.node) }
    let knownRate = Double(count) / (clock.now - knownStart).milliseconds * 1000

    let floor = "bare txn p50 \(format(bare.p50)) ms = \(format(1000 / bare.p50))/s"
    let embeddedRows =
      embedded == nil
      ? []
      : [
        Row(
          key: "embedded_store_new_identities_per_s",
          label: "new identities/s, 32 in flight (embedded store, in process)",
          value: median(embeddedRates), unit: "/s",
          floor:
            "same label sets in the same \(rounds) rounds as etcd's; by round \(embeddedRates.map { format($0) }.joined(separator: ", "))/s",
          target: "")
      ]
    return [
      Row(
        key: "\(key)_raw_txn_p50_ms", label: "bare create-only etcd txn p50 (\(scope))",
        value: bare.p50, unit: "ms", floor: "(floor)", target: ""),
      Row(
        key: "\(key)_raw_txn_per_s", label: "bare create-only etcd txns/s, 32 in flight (\(scope))",
        value: bareConcurrent, unit: "/s", floor: "(floor)", target: ""),
      Row(
        key: "\(key)_new_identities_sequential_per_s",
        label: "new identities/s, sequential (\(scope))", value: sequentialRate, unit: "/s",
        floor: floor, target: ""),
      Row(
        key: "\(key)_new_identity_p99_ms", label: "new identity p99, sequential (\(scope))",
        value: sequential.p99, unit: "ms", floor: "bare txn p99 \(format(bare.p99)) ms", target: ""),
      Row(
        key: "\(key)_new_identities_per_s", label: "new identities/s, 32 in flight (\(scope))",
        value: concurrentRate, unit: "/s",
        floor: "bare \(format(bareConcurrent))/s; medians of \(rounds) alternating rounds",
        target: ""),
      Row(
        key: "\(key)_new_identities_percent_of_raw",
        label: "new identities/s as % of raw txns/s, 32 in flight (\(scope))",
        value: concurrentRate / bareConcurrent * 100, unit: "%",
        floor:
          "medians of \(rounds) alternating rounds; by round \(ratios.map { format($0) }.joined(separator: ", ")) %",
        target: members == 1 ? "≥ 90 (issue)" : "", bound: members == 1 ? .atLeast(90) : nil),
      Row(
        key: "\(key)_shaped_txn_per_s",
        label:
          "bare etcd txns of a new identity's shape/s (2 compares, 3 puts, one on a lease), 32 in flight (\(scope))",
        value: shapedConcurrent, unit: "/s",
        floor:
          "\(format(shapedConcurrent / bareConcurrent * 100)) % of the one-key txn: what etcd charges for the three keys; medians of \(rounds) rounds",
        target: ""),
      Row(
        key: "\(key)_new_identities_percent_of_shaped",
        label: "new identities/s as % of the same-shape txns/s, 32 in flight (\(scope))",
        value: concurrentRate / shapedConcurrent * 100, unit: "%",
        floor: "the store's own cost over etcd's for the same writes", target: ""),
    ] + embeddedRows + [
      Row(
        key: "\(key)_cached_alloc_per_s",
        label: "cached allocations/s, node already holds it (\(scope))", value: cachedRate,
        unit: "/s", floor: "no etcd call", target: ""),
      Row(
        key: "\(key)_first_reference_per_s",
        label: "first reference on another node/s, sequential (\(scope))", value: knownRate,
        unit: "/s", floor: floor, target: ""),
    ]
  }

  private static func eventuallyKnown(_ replica: Replica, _ labels: LabelSet) async throws {
    for _ in 0..<200 {
      if try await replica.store.identity(labels: labels) != nil { return }
      try await Task.sleep(for: .milliseconds(25))
    }
    throw BenchError("the watch did not bring \(labels) to \(replica.node)")
  }

  private static func etcdVersion() -> String {
    guard let executable = LocalEtcdCluster.executable,
      let version = try? execute([executable, "--version"], environment: [:])
    else { return "" }
    return String(decoding: version.output, as: UTF8.self).split(separator: "\n").first.map {
      String($0.replacingOccurrences(of: "etcd Version: ", with: ""))
    } ?? ""
  }

  /// One store with its background work (lease, watch) running.
  final class Replica: Sendable {
    let store: EtcdIdentityStore
    let client: EtcdClient
    let node: String
    private let tasks: [Task<Void, Never>]

    init(_ cluster: LocalEtcdCluster, node: String) async throws {
      self.node = node
      let client = try EtcdClient(configuration: EtcdConfiguration(parsing: cluster.endpoints))
      let store = try EtcdIdentityStore(client: client, configuration: .init(prefix: "/bench"))
      self.client = client
      self.store = store
      tasks = [
        Task { try? await client.runConnections() }, Task { try? await store.run { _, _ in } },
      ]
      for _ in 0..<400 where !store.isReady { try await Task.sleep(for: .milliseconds(25)) }
      guard store.isReady else { throw BenchError("etcd store \(node) not ready") }
    }

    func stop() {
      tasks.forEach { $0.cancel() }
      client.beginGracefulShutdown()
    }
  }
}

struct BenchError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
