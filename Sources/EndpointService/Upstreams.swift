import TesseraCore

/// The identity service as the endpoint service uses it.
public protocol IdentityAllocating: Sendable {
  func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (
    identity: SecurityIdentity, isNew: Bool
  )
  func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError)
  /// Makes this node's references exactly `held` (identity → endpoints holding it).
  func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError)
  /// Renews the lease this node's references are bound to, where they are bound to one.
  func keepAliveNode() async throws(EndpointError) -> NodeLease
  /// ``syncReferences(held:)`` after a restore, with the identity each restored
  /// endpoint's labels resolved to (keyed by the labels' canonical key).
  func syncReferences(held: [NumericIdentity: Int], resolved: [String: SecurityIdentity])
    async throws(EndpointError)
}

extension IdentityAllocating {
  public func syncReferences(held: [NumericIdentity: Int], resolved: [String: SecurityIdentity])
    async throws(EndpointError)
  { try await syncReferences(held: held) }

  /// An identity service on this node binds references to no lease of the node's.
  public func keepAliveNode() async throws(EndpointError) -> NodeLease { .notLeased }
}

/// The policy service as the endpoint service uses it.
public protocol PolicyComputing: Sendable {
  func computePolicy(for identity: SecurityIdentity) async throws(EndpointError) -> EndpointPolicy
  /// Where the policy service's event log stands now; nil when the service
  /// numbers no events (then endpoints are realised without waiting for peers).
  func eventSequence() async throws(EndpointError) -> PolicyEventSequence?
  /// ``eventSequence()``, and which of `identities` the policy service's
  /// SelectorCache does not hold yet (the sequence covers the others' arrival).
  func eventSequence(requiring identities: Set<NumericIdentity>) async throws(EndpointError) -> (
    PolicyEventSequence, unknown: Set<NumericIdentity>
  )?
}

extension PolicyComputing {
  public func eventSequence() async throws(EndpointError) -> PolicyEventSequence? { nil }

  public func eventSequence(requiring identities: Set<NumericIdentity>) async throws(EndpointError)
    -> (
      PolicyEventSequence, unknown: Set<NumericIdentity>
    )?
  {
    try await eventSequence().map { ($0, []) }
  }
}

/// A position in the policy service's event log.
public struct PolicyEventSequence: Sendable, Hashable, CustomStringConvertible {
  public var sequence: UInt64
  /// The policy service instance whose log this is (changes on every start).
  public var instanceID: String

  public init(sequence: UInt64, instanceID: String) {
    self.sequence = sequence
    self.instanceID = instanceID
  }

  public var description: String { "\(instanceID)#\(sequence)" }
}

/// A change in the policy service that may affect endpoints.
public struct PolicyChange: Sendable, Equatable {
  public var revision: UInt64
  /// nil: every endpoint may be affected.
  public var affectedIdentities: Set<NumericIdentity>?
  /// The event's sequence number; nil for an unnumbered change.
  public var sequence: UInt64?
  /// Set on the first event of a stream: the instance whose log `sequence` belongs to.
  public var instanceID: String?
  /// Events may have been missed: drop every cached policy and recompute every endpoint.
  public var resync: Bool
  /// Identities the change brought into the policy service's SelectorCache, with
  /// the digest of their labels (``LabelSet/canonicalDigest``).
  public var addedIdentities: [NumericIdentity: UInt64]
  /// Identities the change removed from it.
  public var deletedIdentities: Set<NumericIdentity>
  /// On a stream's first change: the policy service names identity changes in its events.
  public var namesIdentityChanges: Bool
  /// CIDR identities the change brought into the SelectorCache, by prefix.
  public var addedCIDRs: [IPPrefix: NumericIdentity]
  /// CIDR identities the change retired: their prefixes are unmapped.
  public var retiredCIDRs: Set<NumericIdentity>
  /// On a stream's first change: every CIDR identity the policy service holds, by prefix
  /// (nil on later changes).
  public var cidrIdentities: [IPPrefix: NumericIdentity]?

  public init(
    revision: UInt64, affectedIdentities: Set<NumericIdentity>?, sequence: UInt64? = nil,
    instanceID: String? = nil, resync: Bool = false,
    addedIdentities: [NumericIdentity: UInt64] = [:],
    deletedIdentities: Set<NumericIdentity> = [], namesIdentityChanges: Bool = false,
    addedCIDRs: [IPPrefix: NumericIdentity] = [:], retiredCIDRs: Set<NumericIdentity> = [],
    cidrIdentities: [IPPrefix: NumericIdentity]? = nil
  ) {
    self.revision = revision
    self.affectedIdentities = affectedIdentities
    self.sequence = sequence
    self.instanceID = instanceID
    self.resync = resync
    self.addedIdentities = addedIdentities
    self.deletedIdentities = deletedIdentities
    self.namesIdentityChanges = namesIdentityChanges
    self.addedCIDRs = addedCIDRs
    self.retiredCIDRs = retiredCIDRs
    self.cidrIdentities = cidrIdentities
  }
}

/// The datapath service as the endpoint service uses it.
public protocol DatapathRealizing: Sendable {
  /// Returns the realised revision once the policy is in force.
  func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError) -> UInt64
  func removeEndpoint(id: UInt64) async throws(EndpointError)
  /// What the datapath holds: endpoint ID → (identity, realised revision).
  func realizedEndpoints() async throws(EndpointError) -> [UInt64: (
    identity: NumericIdentity, revision: UInt64
  )]
}

/// The datapath's ipcache as the cluster synchroniser uses it: addresses of
/// endpoints on other nodes and their identities.
public protocol IPCacheWriting: Sendable {
  func upsertIPCache(_ entries: [IPPrefix: NumericIdentity]) async throws(EndpointError)
  /// With `endingFlows`, the addresses' holders released them (their pods were deleted):
  /// every flow with one of them ends too.
  func deleteIPCache(_ prefixes: [IPPrefix], endingFlows: Bool) async throws(EndpointError)
}
