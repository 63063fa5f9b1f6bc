import TesseraCore

/// One identity as the store knows it, with its references.
public struct StoredIdentity: Hashable, Sendable {
  public var identity: SecurityIdentity
  /// References per node.
  public var references: [String: Int]
  public var createdAtMilliseconds: Int64

  public init(identity: SecurityIdentity, references: [String: Int], createdAtMilliseconds: Int64) {
    self.identity = identity
    self.references = references
    self.createdAtMilliseconds = createdAtMilliseconds
  }

  public var totalReferences: Int { references.values.reduce(0, +) }
}

/// The result of releasing one reference.
public struct IdentityRelease: Hashable, Sendable {
  /// False when the node held no reference.
  public var released: Bool
  public var remainingReferences: Int

  public init(released: Bool, remainingReferences: Int) {
    self.released = released
    self.remainingReferences = remainingReferences
  }
}

/// What ``IdentityStore/syncReferences(node:held:)`` changed.
public struct ReferenceSync: Hashable, Sendable {
  public var dropped: Int
  public var added: Int
  /// Held identities the store no longer has.
  public var missing: [NumericIdentity]

  public init(dropped: Int = 0, added: Int = 0, missing: [NumericIdentity] = []) {
    self.dropped = dropped
    self.added = added
    self.missing = missing
  }
}

/// What ``IdentityStore/keepAliveNode(_:)`` did.
public struct NodeLeaseRenewal: Hashable, Sendable {
  /// Seconds the node's references outlive it from now; 0 when they are not bound
  /// to a lease of the node's own (nothing to keep alive).
  public var ttlSeconds: Int64
  /// The node's lease had expired with its references; a new one was granted.
  public var referencesLost: Bool

  public init(ttlSeconds: Int64, referencesLost: Bool) {
    self.ttlSeconds = ttlSeconds
    self.referencesLost = referencesLost
  }

  /// A node whose references are bound to no lease of its own.
  public static let notLeased = NodeLeaseRenewal(ttlSeconds: 0, referencesLost: false)
}

/// Where label sets and their numeric identities live.
///
/// Every operation is atomic: a crash never leaves a half-made identity or a
/// reference without its identity. Two allocations of equal label sets return
/// the same identity; an identity is never handed to two label sets.
public protocol IdentityStore: Sendable {
  /// Shown by `tessera status` and `tessera identity list`.
  var backendDescription: String { get }

  /// Returns the identity for `labels`, creating it if needed, and takes one reference for `node`.
  func allocate(labels: LabelSet, node: String) async throws(IdentityError) -> (
    identity: SecurityIdentity, isNew: Bool
  )

  /// `allocate(labels:node:)` for a call named by `requestID` (empty: unnamed): a
  /// store that can apply a call and lose its answer (a replica dies, the client
  /// retries elsewhere) answers a repeat of the name without applying it again.
  func allocate(labels: LabelSet, node: String, requestID: String) async throws(IdentityError)
    -> (identity: SecurityIdentity, isNew: Bool)

  /// `release(id:node:)` for a call named by `requestID`, as for `allocate`.
  func release(id: NumericIdentity, node: String, requestID: String) async throws(IdentityError)
    -> IdentityRelease

  /// Drops one reference of `node`; an identity left without references
  /// becomes eligible for garbage collection after the grace period.
  func release(id: NumericIdentity, node: String) async throws(IdentityError) -> IdentityRelease

  /// Drops an allocation that could not be completed (e.g. the policy service
  /// was unreachable): releases the reference and, when the identity was
  /// created by that allocation and nobody else took it, deletes it at once.
  func rollback(identity: SecurityIdentity, node: String, wasNew: Bool) async throws(IdentityError)

  func identity(id: NumericIdentity) async throws(IdentityError) -> StoredIdentity?
  func identity(labels: LabelSet) async throws(IdentityError) -> StoredIdentity?
  func identities() async throws(IdentityError) -> [StoredIdentity]

  /// Sets `node`'s reference counts to exactly `held` (allocated identities
  /// only): references nobody holds are dropped, lost ones restored.
  func syncReferences(node: String, held: [NumericIdentity: Int]) async throws(IdentityError)
    -> ReferenceSync

  /// Renews the lease `node`'s references are bound to (nodes served over the network).
  func keepAliveNode(_ node: String) async throws(IdentityError) -> NodeLeaseRenewal

  /// Deletes identities that have had no reference for at least `gracePeriodMilliseconds`; returns them.
  func collectGarbage(gracePeriodMilliseconds: Int64) async throws(IdentityError)
    -> [SecurityIdentity]

  /// True when identities can appear or vanish without this process (a shared
  /// store): ``run(onChange:)`` then reports every change, whoever made it.
  var isShared: Bool { get }

  /// Keeps the store in step with the world outside this process until the
  /// task is cancelled, reporting identities added or deleted by anyone.
  func run(
    onChange:
      @escaping @Sendable (_ added: [SecurityIdentity], _ deleted: [SecurityIdentity]) async -> Void
  ) async throws
}

extension IdentityStore {
  public var isShared: Bool { false }

  /// A store of one machine binds no reference to a node's lease.
  public func keepAliveNode(_ node: String) async throws(IdentityError) -> NodeLeaseRenewal {
    .notLeased
  }

  /// A store only this process writes has nothing to follow.
  public func run(
    onChange:
      @escaping @Sendable (_ added: [SecurityIdentity], _ deleted: [SecurityIdentity]) async -> Void
  ) async throws {
    while true { try await Task.sleep(for: .seconds(3600)) }
  }
}

extension IdentityStore {
  /// A store on one node, called over its Unix socket, needs no deduplication.
  public func allocate(labels: LabelSet, node: String, requestID: String)
    async throws(IdentityError) -> (identity: SecurityIdentity, isNew: Bool)
  {
    try await allocate(labels: labels, node: node)
  }

  public func release(id: NumericIdentity, node: String, requestID: String)
    async throws(IdentityError) -> IdentityRelease
  {
    try await release(id: id, node: node)
  }
}
