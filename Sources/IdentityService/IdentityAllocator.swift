import Logging
import Metrics
import TesseraCore

/// Label set ↔ numeric identity, refcounted per node.
///
/// Filters labels, answers reserved identities without touching the store,
/// and makes sure the policy service's SelectorCache holds an identity before
/// the allocation that created it returns.
public final class IdentityAllocator: Sendable {
  /// Tunables with sane defaults.
  public struct Configuration: Sendable {
    public var nodeName: String
    public var labelFilter: LabelFilter
    /// How long an unreferenced identity is kept, so a flapping workload keeps its number.
    public var gracePeriodMilliseconds: Int64

    public init(
      nodeName: String, labelFilter: LabelFilter = .defaults,
      gracePeriodMilliseconds: Int64 = 60_000
    ) {
      self.nodeName = nodeName
      self.labelFilter = labelFilter
      self.gracePeriodMilliseconds = gracePeriodMilliseconds
    }
  }

  public let configuration: Configuration
  public let store: any IdentityStore
  private let batcher: IdentityChangeBatcher
  public let events = IdentityEvents()
  private let logger: Logger

  public init(
    configuration: Configuration, store: any IdentityStore, changeSink: any IdentityChangeSink,
    logger: Logger = Logger(label: "tessera.identity")
  ) {
    self.configuration = configuration
    self.store = store
    self.batcher = IdentityChangeBatcher(sink: changeSink)
    self.logger = logger
  }

  /// The identity-relevant subset of `labels`; reserved labels must stand alone.
  public func relevantLabels(_ labels: LabelSet) throws(IdentityError) -> LabelSet {
    let filtered = configuration.labelFilter.filter(labels)
    if filtered.hasReservedLabel && ReservedIdentity.matching(filtered) == nil {
      throw IdentityError(
        code: .invalidLabels,
        message: "reserved labels cannot be combined with other labels: \(filtered)")
    }
    if let cidr = filtered.labels.first(where: { $0.source == CIDRIdentity.labelSource }) {
      throw IdentityError(
        code: .invalidLabels,
        message: "label \(cidr): cidr labels belong to the identities of CIDRs policies name")
    }
    return filtered
  }

  /// Returns the identity for `labels` and takes one reference for `node`.
  ///
  /// An empty (filtered) label set is `reserved:init`; a reserved label set is
  /// its reserved identity. Neither is refcounted.
  ///
  /// - Throws: ``IdentityError`` `.policyUnavailable` when a new identity could
  ///   not reach the policy service (the allocation is rolled back).
  public func allocateIdentity(labels: LabelSet, node: String? = nil, requestID: String = "")
    async throws(IdentityError) -> (identity: SecurityIdentity, isNew: Bool)
  {
    let relevant = try relevantLabels(labels)
    if relevant.isEmpty {
      return (
        SecurityIdentity(id: .initializing, labels: ReservedIdentity.initializing.labels), false
      )
    }
    if let reserved = ReservedIdentity.matching(relevant) {
      return (SecurityIdentity(id: reserved.identity, labels: reserved.labels), false)
    }
    let node = node ?? configuration.nodeName
    let started = ContinuousClock.now
    let (identity, isNew) = try await store.allocate(
      labels: relevant, node: node, requestID: requestID)
    let stored = ContinuousClock.now
    if isNew || !batcher.isAnnounced(identity.id) {
      do {
        try await batcher.announce(added: [identity])
      } catch {
        try? await store.rollback(identity: identity, node: node, wasNew: isNew)
        throw IdentityError(
          code: .policyUnavailable,
          message: "identity \(identity.id) could not be announced to the policy service",
          cause: error)
      }
    }
    logger.debug(
      "allocation phases",
      metadata: [
        "identity": "\(identity.id)", "store": "\(stored - started)",
        "announce": "\(ContinuousClock.now - stored)",
      ])
    Counter(
      label: "tessera_identity_allocations_total", dimensions: [("new", isNew ? "true" : "false")]
    ).increment()
    if isNew {
      logger.info(
        "allocated identity",
        metadata: ["identity": "\(identity.id)", "labels": "\(identity.labels)"])
      events.publish(.added([identity]))
    }
    return (identity, isNew)
  }

  /// Drops one reference of `node`. Reserved identities are not refcounted.
  public func releaseIdentity(id: NumericIdentity, node: String? = nil, requestID: String = "")
    async throws(IdentityError) -> IdentityRelease
  {
    if id.isReserved { return IdentityRelease(released: false, remainingReferences: 0) }
    return try await store.release(
      id: id, node: node ?? configuration.nodeName, requestID: requestID)
  }

  /// Makes `node`'s references exactly what its endpoints hold (reserved identities are not counted).
  public func syncNodeReferences(node: String? = nil, held: [NumericIdentity: Int])
    async throws(IdentityError) -> ReferenceSync
  {
    let node = node ?? configuration.nodeName
    let sync = try await store.syncReferences(node: node, held: held.filter { !$0.key.isReserved })
    if sync.dropped > 0 || sync.added > 0 || !sync.missing.isEmpty {
      logger.warning(
        "node references reconciled with its endpoints",
        metadata: [
          "node": "\(node)", "dropped": "\(sync.dropped)", "added": "\(sync.added)",
          "missing": "\(sync.missing)",
        ])
    }
    return sync
  }

  /// Renews the lease `node`'s references are bound to (nodes served over the network).
  public func keepAliveNode(node: String? = nil) async throws(IdentityError) -> NodeLeaseRenewal {
    let node = node ?? configuration.nodeName
    let renewal = try await store.keepAliveNode(node)
    if renewal.referencesLost {
      logger.info(
        "node has a new lease; it restores its references",
        metadata: ["node": "\(node)", "ttl": "\(renewal.ttlSeconds)"])
    }
    return renewal
  }

  /// Deletes identities unreferenced for the grace period and tells the policy service.
  @discardableResult
  public func collectGarbage() async throws(IdentityError) -> [SecurityIdentity] {
    let deleted = try await store.collectGarbage(
      gracePeriodMilliseconds: configuration.gracePeriodMilliseconds)
    guard !deleted.isEmpty else { return [] }
    logger.info("garbage collected identities", metadata: ["identities": "\(deleted.map(\.id))"])
    // A shared store reports the deletion through followStore(), on every node alike.
    if store.isShared { return deleted }
    events.publish(.deleted(deleted))
    // The store no longer has them; a policy service that misses this learns it on its next resync.
    try? await batcher.announce(deleted: deleted.map(\.id))
    return deleted
  }

  /// Follows a shared store until cancelled: identities created or deleted
  /// anywhere reach the policy service and the watchers here.
  public func followStore() async throws {
    try await store.run { [batcher, events, logger] added, deleted in
      let fresh = added.filter { !batcher.isAnnounced($0.id) }
      if !fresh.isEmpty {
        logger.info(
          "identities learned from the store", metadata: ["identities": "\(fresh.map(\.id))"])
        // The watch stream to the policy service carries them too; this only makes it sooner.
        try? await batcher.announce(added: fresh)
        events.publish(.added(fresh))
      }
      if !deleted.isEmpty {
        logger.info(
          "identities deleted in the store", metadata: ["identities": "\(deleted.map(\.id))"])
        events.publish(.deleted(deleted))
        try? await batcher.announce(deleted: deleted.map(\.id))
      }
    }
  }

  /// Every identity, reserved ones first.
  public func identities() async throws(IdentityError) -> [StoredIdentity] {
    let reserved = ReservedIdentity.allCases.map {
      StoredIdentity(
        identity: SecurityIdentity(id: $0.identity, labels: $0.labels), references: [:],
        createdAtMilliseconds: 0)
    }
    return try await reserved + store.identities()
  }

  public func identity(id: NumericIdentity) async throws(IdentityError) -> StoredIdentity {
    if let reserved = ReservedIdentity(rawValue: id.rawValue) {
      return StoredIdentity(
        identity: SecurityIdentity(id: id, labels: reserved.labels), references: [:],
        createdAtMilliseconds: 0)
    }
    guard let stored = try await store.identity(id: id) else {
      throw IdentityError(code: .notFound, message: "no identity \(id)")
    }
    return stored
  }

  public func identity(labels: LabelSet) async throws(IdentityError) -> StoredIdentity {
    let relevant = try relevantLabels(labels)
    if let reserved = ReservedIdentity.matching(relevant) {
      return try await identity(id: reserved.identity)
    }
    guard let stored = try await store.identity(labels: relevant) else {
      throw IdentityError(code: .notFound, message: "no identity for labels \(relevant)")
    }
    return stored
  }
}
