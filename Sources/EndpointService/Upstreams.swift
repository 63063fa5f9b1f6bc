import TesseraCore

/// The identity service as the endpoint service uses it.
public protocol IdentityAllocating: Sendable {
  func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (identity: SecurityIdentity, isNew: Bool)
  func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError)
  /// Makes this node's references exactly `held` (identity → endpoints holding it).
  func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError)
}

/// The policy service as the endpoint service uses it.
public protocol PolicyComputing: Sendable {
  func computePolicy(for identity: SecurityIdentity) async throws(EndpointError) -> EndpointPolicy
}

/// A change in the policy service that may affect endpoints.
public struct PolicyChange: Sendable, Equatable {
  public var revision: UInt64
  /// nil: every endpoint may be affected.
  public var affectedIdentities: Set<NumericIdentity>?

  public init(revision: UInt64, affectedIdentities: Set<NumericIdentity>?) {
    self.revision = revision
    self.affectedIdentities = affectedIdentities
  }
}

/// The datapath service as the endpoint service uses it.
public protocol DatapathRealizing: Sendable {
  /// Returns the realised revision once the policy is in force.
  func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError) -> UInt64
  func removeEndpoint(id: UInt64) async throws(EndpointError)
  /// What the datapath holds: endpoint ID → (identity, realised revision).
  func realizedEndpoints() async throws(EndpointError) -> [UInt64: (identity: NumericIdentity, revision: UInt64)]
}

/// The datapath's ipcache as the cluster synchroniser uses it: addresses of
/// endpoints on other nodes and their identities.
public protocol IPCacheWriting: Sendable {
  func upsertIPCache(_ entries: [IPPrefix: NumericIdentity]) async throws(EndpointError)
  func deleteIPCache(_ prefixes: [IPPrefix]) async throws(EndpointError)
}
