import Foundation
import Logging
import Synchronization
import TesseraCore
import TesseraEtcd

/// The rule repository kept in etcd and shared by every policy-service replica
/// (docs/architecture.md §6): one import reaches every node.
///
/// Each policy is one key, `<prefix>/<namespace or ->/<name>`, holding its
/// normalised JSON. An import is one etcd transaction (all policies of the
/// manifest or none), a delete another; the repository revision is etcd's
/// revision of the change. Every replica, including the one that took the
/// import, applies changes from its watch in revision order, so all replicas
/// go through the same states; an import or delete returns once this replica
/// has applied it, so the caller reads its own write.
public final class ClusterPolicyRepository: Sendable {
  public struct Configuration: Sendable {
    /// Key prefix (no trailing `/`).
    public var prefix: String
    /// How long an import or delete waits for this replica's watch to apply it.
    public var applyTimeout: Duration

    public init(prefix: String = "/tessera/policies", applyTimeout: Duration = .seconds(10)) {
      self.prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
      self.applyTimeout = applyTimeout
    }

    public static let defaults = Configuration()
  }

  /// etcd's default limit of operations in one transaction (`--max-txn-ops`).
  public static let maximumPoliciesPerImport = 128

  public let configuration: Configuration
  private let client: EtcdClient
  private let engine: PolicyEngine
  private let events: PolicyEvents
  private let logger: Logger
  /// The etcd revision this replica has applied (0 before its first read).
  private let applied = Mutex<Int64>(0)

  public init(
    configuration: Configuration = .defaults, client: EtcdClient, engine: PolicyEngine,
    events: PolicyEvents,
    logger: Logger = Logger(label: "tessera.policy.cluster")
  ) {
    self.configuration = configuration
    self.client = client
    self.engine = engine
    self.events = events
    self.logger = logger
  }

  /// Whether the repository has been read from etcd at least once.
  public var loaded: Bool { applied.withLock { $0 > 0 } }

  /// Reads the repository, then follows it, until cancelled (reconnecting by itself).
  public func run() async throws {
    let session = EtcdSession(
      client: client, prefix: configuration.prefix + "/", leaseTTLSeconds: 0, logger: logger)
    try await session.run(
      .init(lease: { 0 }, load: { _ in try await self.load() }, apply: { self.apply($0) }))
  }

  // MARK: - Writes

  /// Imports every policy of a manifest in one transaction.
  ///
  /// - Throws: ``PolicyError`` `invalidManifest` (nothing written), `unavailable` when etcd
  ///   cannot be reached or this replica does not apply the change in time.
  public func importPolicies(sourceName: String, content: [UInt8]) async throws(PolicyError) -> (
    revision: UInt64, policies: [PolicyRef]
  ) {
    let parsed = try PolicyManifest.parse(sourceName: sourceName, content: content)
    guard parsed.count <= Self.maximumPoliciesPerImport else {
      throw PolicyError(
        code: .invalidManifest,
        message:
          "\(sourceName): \(parsed.count) policies in one import; the cluster store takes at most \(Self.maximumPoliciesPerImport) (etcd's transaction limit)"
      )
    }
    try engine.checkCIDRs(of: parsed, sourceName: sourceName)
    let operations = parsed.map { Etcd.put(key(PolicyKey($0.ref)), $0.sourceJSON) }
    let revision = try await commit(Etcd.txn(when: [], then: operations)).revision
    try await waitUntilApplied(revision)
    logger.info(
      "policies imported into the cluster store",
      metadata: [
        "policy.revision": "\(revision)",
        "policy.names": "\(parsed.map(\.ref.description).joined(separator: ","))",
      ])
    return (UInt64(revision), parsed.map(\.ref))
  }

  /// Deletes one policy.
  ///
  /// - Throws: ``PolicyError`` `notFound` when the store has no such policy, `unavailable`
  ///   as for imports.
  public func deletePolicy(namespace: String, name: String) async throws(PolicyError) -> UInt64 {
    try await deletePolicies(.named(namespace: namespace, name: name)).revision
  }

  /// Deletes every policy `deletion` selects in one etcd transaction (all or nothing), as
  /// this replica sees the repository; a named policy is checked in the transaction itself.
  ///
  /// - Returns: etcd's revision after the delete (the repository's current one when
  ///   nothing matched) and the deleted policies.
  /// - Throws: ``PolicyError`` `notFound` for a named policy the store does not have,
  ///   `invalidRequest` when more policies match than one transaction takes, `unavailable`
  ///   as for imports.
  public func deletePolicies(_ deletion: PolicyDeletion) async throws(PolicyError) -> (
    revision: UInt64, deleted: [PolicyRef]
  ) {
    if case .named(let namespace, let name) = deletion {
      let key = key(PolicyKey(namespace: namespace, name: name))
      let result = try await commit(
        Etcd.txn(when: [Etcd.absent(key)], then: [], else: [Etcd.delete(key)]))
      if result.succeeded {
        throw PolicyError(
          code: .notFound,
          message: "policy \(namespace.isEmpty ? name : "\(namespace)/\(name)") not found")
      }
      try await waitUntilApplied(result.revision)
      let ref =
        engine.policy(namespace: namespace, name: name)?.ref
        ?? PolicyRef(namespace: namespace, name: name, kind: "")
      logger.info(
        "policy deleted from the cluster store",
        metadata: ["policy.revision": "\(result.revision)", "policy.name": "\(ref)"])
      return (UInt64(result.revision), [ref])
    }
    let doomed = engine.policies(selectedBy: deletion)
    guard !doomed.isEmpty else { return (engine.revision, []) }
    guard doomed.count <= Self.maximumPoliciesPerImport else {
      throw PolicyError(
        code: .invalidRequest,
        message:
          "\(doomed.count) policies match; the cluster store deletes at most \(Self.maximumPoliciesPerImport) in one transaction (etcd's limit): narrow the selection"
      )
    }
    let result = try await commit(
      Etcd.txn(when: [], then: doomed.map { Etcd.delete(key(PolicyKey($0))) }))
    try await waitUntilApplied(result.revision)
    logger.info(
      "policies deleted from the cluster store",
      metadata: [
        "policy.revision": "\(result.revision)",
        "policy.names": "\(doomed.map(\.description).joined(separator: ","))",
      ])
    return (UInt64(result.revision), doomed)
  }

  private func commit(_ transaction: EtcdTransaction) async throws(PolicyError)
    -> EtcdTransactionResult
  {
    do {
      return try await client.txn(transaction)
    } catch {
      throw PolicyError(
        code: .unavailable,
        message: "the cluster policy store (etcd \(client.endpointsDescription)) is unreachable",
        cause: error)
    }
  }

  private func waitUntilApplied(_ revision: Int64) async throws(PolicyError) {
    let deadline = ContinuousClock.now + configuration.applyTimeout
    while applied.withLock({ $0 }) < revision {
      guard ContinuousClock.now < deadline else {
        throw PolicyError(
          code: .unavailable,
          message:
            "the change was committed at etcd revision \(revision) but this replica has not applied it yet; it will"
        )
      }
      try? await Task.sleep(for: .milliseconds(2))
    }
  }

  // MARK: - Reads

  private func key(_ key: PolicyKey) -> String {
    "\(configuration.prefix)/\(key.namespace.isEmpty ? "-" : key.namespace)/\(key.name)"
  }

  /// The policy key a store key names, if it is one.
  private func policyKey(_ data: Data) -> PolicyKey? {
    let text = String(decoding: data, as: UTF8.self)
    guard text.hasPrefix(configuration.prefix + "/") else { return nil }
    let parts = text.dropFirst(configuration.prefix.count + 1).split(
      separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
    return PolicyKey(namespace: parts[0] == "-" ? "" : String(parts[0]), name: String(parts[1]))
  }

  /// The policy a key-value holds, checked against its key; nil (logged) when it cannot be read.
  private func decode(_ kv: EtcdKeyValue) -> ParsedPolicy? {
    guard let key = policyKey(kv.key) else {
      logger.warning(
        "ignored a key in the cluster policy store",
        metadata: ["key": "\(String(decoding: kv.key, as: UTF8.self))"])
      return nil
    }
    do {
      let parsed = try PolicyManifest.parseStored(String(decoding: kv.value, as: UTF8.self))
      guard PolicyKey(parsed.ref) == key else {
        logger.warning(
          "ignored a policy stored under another policy's key",
          metadata: ["key": "\(key.namespace)/\(key.name)"])
        return nil
      }
      return parsed
    } catch {
      logger.warning(
        "ignored a policy that does not parse",
        metadata: ["key": "\(key.namespace)/\(key.name)", "error": "\(error.problem)"])
      return nil
    }
  }

  private func load() async throws -> Int64 {
    let (kvs, revision) = try await client.rangeAll(prefix: configuration.prefix + "/")
    let policies = kvs.compactMap { kv in
      decode(kv).map { (policy: $0, importedAt: UInt64(kv.modRevision)) }
    }
    events.serialized {
      let change = engine.replaceAll(with: policies, revision: UInt64(revision))
      events.publish(
        revision: engine.revision, affected: change.affected, added: change.identities.added,
        deleted: change.identities.deleted)
    }
    applied.withLock { $0 = max($0, revision) }
    logger.info(
      "policy repository read from the cluster store",
      metadata: ["policy.revision": "\(revision)", "policy.count": "\(policies.count)"])
    return revision
  }

  private func apply(_ batch: [EtcdEvent]) {
    var index = batch.startIndex
    while index < batch.endIndex {
      // One etcd revision at a time: a transaction's changes land together.
      let revision = batch[index].kv.modRevision
      var upserting: [ParsedPolicy] = []
      var deleting: [PolicyKey] = []
      while index < batch.endIndex, batch[index].kv.modRevision == revision {
        let event = batch[index]
        switch event.kind {
        case .put:
          if let policy = decode(event.kv) {
            upserting.append(policy)
          } else if let key = policyKey(event.kv.key) {
            deleting.append(key)  // unreadable now: what it held before no longer stands
          }
        case .delete:
          if let key = policyKey(event.kv.key) { deleting.append(key) }
        }
        index += 1
      }
      events.serialized {
        let change = engine.apply(
          upserting: upserting, deleting: deleting, revision: UInt64(revision))
        events.publish(
          revision: engine.revision, affected: change.affected, added: change.identities.added,
          deleted: change.identities.deleted)
      }
      applied.withLock { $0 = max($0, revision) }
    }
  }
}
