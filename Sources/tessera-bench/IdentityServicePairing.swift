import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LocalEtcd
import TesseraProto
import TesseraRuntime

extension EtcdBenchmark {
  /// New identities through identityd, as endpointd asks for them (AllocateIdentity on
  /// the node's socket, the new identity announced to the node's policyd before the
  /// answer): a node on the embedded store (the default) against a node on `cluster`'s
  /// etcd, 32 in flight, in alternating rounds (each first in every other round).
  static func throughIdentityService(
    _ cluster: LocalEtcdCluster, bin: String, newIdentities count: Int
  ) async throws -> [Row] {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-bench-pairing-\(getpid())"
    ).path
    let embedded = try PairingNode(bin: bin, root: root + "/embedded", storeArguments: [])
    defer { embedded.stop() }
    let etcd = try PairingNode(
      bin: bin, root: root + "/etcd",
      storeArguments: [
        "--identity-store", "etcd:" + cluster.endpoints, "--etcd-prefix", "/bench-service",
      ])
    defer { etcd.stop() }

    let rounds = 4
    let perRound = max(1, count / rounds)
    return try await withIdentityClient(embedded.run) { embeddedClient in
      try await withIdentityClient(etcd.run) { etcdClient in
        let embeddedCounter = Counter()
        let etcdCounter = Counter()
        func allocate(
          _ client: Tessera_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>,
          _ counter: Counter
        ) async throws -> Double {
          try await Benchmark.throughput(concurrency: 32, total: perRound) {
            _ = try await client.allocateIdentity(
              Benchmark.allocationRequest(bench: "svc\(counter.next())"))
          }
        }
        var embeddedRates: [Double] = []
        var etcdRates: [Double] = []
        for round in 0..<rounds {
          if round.isMultiple(of: 2) {
            embeddedRates.append(try await allocate(embeddedClient, embeddedCounter))
            etcdRates.append(try await allocate(etcdClient, etcdCounter))
          } else {
            etcdRates.append(try await allocate(etcdClient, etcdCounter))
            embeddedRates.append(try await allocate(embeddedClient, embeddedCounter))
          }
        }
        func byRound(_ rates: [Double]) -> String {
          "by round " + rates.map { format($0) }.joined(separator: ", ") + "/s"
        }
        return [
          Row(
            key: "identity_alloc_concurrent_per_s",
            label: "new identities/s through identityd, 32 in flight (embedded store, the default)",
            value: median(embeddedRates), unit: "/s",
            floor: "medians of \(rounds) rounds alternating with etcd's; \(byRound(embeddedRates))",
            target: ""),
          Row(
            key: "etcd_service_new_identities_per_s",
            label: "new identities/s through identityd, 32 in flight (etcd, 1 member)",
            value: median(etcdRates), unit: "/s",
            floor:
              "medians of \(rounds) rounds alternating with the embedded store's; \(byRound(etcdRates))",
            target: ""),
        ]
      }
    }
  }

  private static func withIdentityClient<Result: Sendable>(
    _ run: RunDirectory,
    _ body: (Tessera_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>) async throws
      -> Result
  ) async throws -> Result {
    try await withGRPCClient(
      transport: .http2NIOPosix(
        target: .unixDomainSocket(path: run.socketPath(for: .identity)),
        transportSecurity: .plaintext)
    ) { try await body(Tessera_Identity_V1_IdentityService.Client(wrapping: $0)) }
  }

  /// A node started with `tessera node up --detach` in its own directories.
  private struct PairingNode {
    let bin: String
    let root: String
    let pin: String
    var run: RunDirectory { RunDirectory(path: root + "/run") }

    init(bin: String, root: String, storeArguments: [String]) throws {
      self.bin = bin
      self.root = root
      pin = "/sys/fs/bpf/tsr-bench-\((root as NSString).lastPathComponent)-\(getpid())"
      let up = try execute(
        [
          bin + "/tessera", "node", "up", "--detach", "--run-dir", root + "/run", "--state-dir",
          root + "/state", "--bpf-pin-dir", pin,
        ] + storeArguments, environment: [:])
      guard up.status == 0 else {
        stop()
        throw BenchError("node up failed: \(String(decoding: up.output, as: UTF8.self))")
      }
    }

    func stop() {
      _ = try? execute([bin + "/tessera", "node", "down", "--run-dir", run.path], environment: [:])
      try? FileManager.default.removeItem(atPath: root)
      try? FileManager.default.removeItem(atPath: pin)
    }
  }
}
