import EndpointService
import Foundation
import GRPCCore
import Logging
import Synchronization
import TesseraCore
import TesseraEtcd

/// Namespace and workload labels stored once for the cluster, in etcd, and
/// followed by every node's ``WorkloadRegistry`` (as Cilium's resolver follows
/// the Kubernetes API). Keys under the prefix (default `/tessera/metadata`):
///
///     namespaces/<namespace>        → JSON label set
///     workloads/<namespace>/<pod>   → JSON label set
///
/// A write goes to etcd and returns once this node has applied it from its
/// watch (so the caller reads its own write); every node re-labels its pods
/// of a namespace whose labels changed. With etcd unreachable, writes fail
/// with UNAVAILABLE and every node keeps the labels it last read.
public final class ClusterMetadataStore: MetadataStore {
  public struct Configuration: Sendable {
    public var prefix: String
    /// How long a write waits for this node's watch to apply it.
    public var applyTimeout: Duration

    public init(prefix: String = "/tessera/metadata", applyTimeout: Duration = .seconds(5)) {
      self.prefix = prefix
      self.applyTimeout = applyTimeout
    }
  }

  private let configuration: Configuration
  private let client: EtcdClient
  private let registry: WorkloadRegistry
  private let namespaceChanged: @Sendable (String) async -> Void
  private let logger: Logger
  private let applied = Mutex<Int64>(0)

  /// - Parameter namespaceChanged: re-labels this node's pods of a namespace.
  public init(
    configuration: Configuration = .init(), client: EtcdClient, registry: WorkloadRegistry,
    logger: Logger, namespaceChanged: @escaping @Sendable (String) async -> Void
  ) {
    self.configuration = configuration
    self.client = client
    self.registry = registry
    self.logger = logger
    self.namespaceChanged = namespaceChanged
  }

  /// Reads the store, then follows it, until cancelled (reconnecting by itself).
  public func run() async throws {
    let session = EtcdSession(
      client: client, prefix: configuration.prefix + "/", leaseTTLSeconds: 0, logger: logger)
    try await session.run(
      .init(lease: { 0 }, load: { _ in try await self.load() }, apply: { await self.apply($0) }))
  }

  // MARK: Writes

  public func setNamespace(_ name: String, labels: LabelSet) async throws {
    try await write(Etcd.put(namespaceKey(name), try encode(labels)))
  }

  public func deleteNamespace(_ name: String) async throws -> Bool {
    try await remove(namespaceKey(name))
  }

  public func setWorkload(_ workload: Workload) async throws {
    try await write(
      Etcd.put(workloadKey(workload.namespace, workload.podName), try encode(workload.labels)))
  }

  public func deleteWorkload(namespace: String, podName: String) async throws -> Bool {
    try await remove(workloadKey(namespace, podName))
  }

  private func write(_ operation: EtcdOperation) async throws {
    let result = try await commit(Etcd.txn(when: [], then: [operation], else: []))
    try await waitUntilApplied(result.revision)
  }

  /// Deletes `key`; false when it was not there.
  private func remove(_ key: String) async throws -> Bool {
    let result = try await commit(
      Etcd.txn(when: [Etcd.absent(key)], then: [], else: [Etcd.delete(key)]))
    guard !result.succeeded else { return false }
    try await waitUntilApplied(result.revision)
    return true
  }

  private func commit(_ transaction: EtcdTransaction) async throws -> EtcdTransactionResult {
    do {
      return try await client.txn(transaction)
    } catch {
      throw RPCError(
        code: .unavailable,
        message:
          "the cluster metadata store (etcd \(client.endpointsDescription)) is unreachable: \(error)"
      )
    }
  }

  private func waitUntilApplied(_ revision: Int64) async throws {
    let deadline = ContinuousClock.now + configuration.applyTimeout
    while applied.withLock({ $0 }) < revision {
      guard ContinuousClock.now < deadline else {
        throw RPCError(
          code: .unavailable,
          message:
            "stored at etcd revision \(revision), but this node has not applied it yet; it will")
      }
      try await Task.sleep(for: .milliseconds(2))
    }
  }

  // MARK: Reads

  private func namespaceKey(_ name: String) -> String {
    "\(configuration.prefix)/namespaces/\(name)"
  }

  private func workloadKey(_ namespace: String, _ pod: String) -> String {
    "\(configuration.prefix)/workloads/\(namespace)/\(pod)"
  }

  private func encode(_ labels: LabelSet) throws -> String {
    String(decoding: try JSONEncoder().encode(labels), as: UTF8.self)
  }

  /// What a key names: a namespace, or a namespace and pod.
  private enum Entry {
    case namespace(String)
    case workload(String, String)
  }

  private func entry(_ key: Data) -> Entry? {
    let text = String(decoding: key, as: UTF8.self)
    guard text.hasPrefix(configuration.prefix + "/") else { return nil }
    let parts = text.dropFirst(configuration.prefix.count + 1).split(
      separator: "/", omittingEmptySubsequences: false
    ).map(String.init)
    switch (parts.first, parts.count) {
    case ("namespaces", 2) where !parts[1].isEmpty: return .namespace(parts[1])
    case ("workloads", 3) where !parts[1].isEmpty && !parts[2].isEmpty:
      return .workload(parts[1], parts[2])
    default: return nil
    }
  }

  private func labels(_ kv: EtcdKeyValue) -> LabelSet? {
    do {
      return try JSONDecoder().decode(LabelSet.self, from: kv.value)
    } catch {
      logger.warning(
        "ignored unreadable labels in the cluster metadata store",
        metadata: ["key": "\(String(decoding: kv.key, as: UTF8.self))", "error": "\(error)"])
      return nil
    }
  }

  private func load() async throws -> Int64 {
    let (kvs, revision) = try await client.rangeAll(prefix: configuration.prefix + "/")
    var namespaces: [String: LabelSet] = [:]
    var workloads: [Workload] = []
    for kv in kvs {
      guard let entry = entry(kv.key), let labels = labels(kv) else { continue }
      switch entry {
      case .namespace(let name): namespaces[name] = labels
      case .workload(let namespace, let pod):
        workloads.append(Workload(namespace: namespace, podName: pod, labels: labels))
      }
    }
    let changed = try registry.replaceAll(namespaces: namespaces, workloads: workloads)
    applied.withLock { $0 = max($0, revision) }
    logger.info(
      "namespace and workload labels read from the cluster store",
      metadata: ["namespaces": "\(namespaces.count)", "workloads": "\(workloads.count)"])
    for name in changed.sorted() { await namespaceChanged(name) }
    return revision
  }

  private func apply(_ batch: [EtcdEvent]) async {
    var changed = Set<String>()
    for event in batch {
      guard let entry = entry(event.kv.key) else { continue }
      do {
        switch (entry, event.kind) {
        case (.namespace(let name), .put):
          if let labels = labels(event.kv) {
            try registry.setNamespace(name, labels: labels)
            changed.insert(name)
          }
        case (.namespace(let name), .delete):
          if try registry.deleteNamespace(name) { changed.insert(name) }
        case (.workload(let namespace, let pod), .put):
          if let labels = labels(event.kv) {
            try registry.set(Workload(namespace: namespace, podName: pod, labels: labels))
          }
        case (.workload(let namespace, let pod), .delete):
          try registry.delete(namespace: namespace, podName: pod)
        }
      } catch {
        logger.error("cannot keep a metadata change", metadata: ["error": "\(error)"])
      }
      applied.withLock { $0 = max($0, event.kv.modRevision) }
    }
    for name in changed.sorted() { await namespaceChanged(name) }
  }
}
