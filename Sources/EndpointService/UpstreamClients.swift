import Foundation
import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

extension EndpointError {
  /// Maps a failed call to another service by what it means for the caller:
  /// only an unreachable, unready or slow service is "try again"; a request the
  /// service refused keeps its meaning (a missing device is a failed
  /// precondition, a bad label an invalid argument) so nobody retries what
  /// cannot succeed.
  static func upstream(_ service: String, _ error: any Error) -> EndpointError {
    if let rpc = error as? RPCError { return upstream(service, rpc) }
    if error is CancellationError {
      return EndpointError(
        code: .upstreamUnavailable,
        message: "request cancelled while waiting for the \(service) service")
    }
    // Anything but an RPCError is a failure of the transport below gRPC.
    return EndpointError(
      code: .upstreamUnavailable, message: "\(service) service call failed", cause: error)
  }

  static func upstream(_ service: String, _ rpc: RPCError) -> EndpointError {
    let said = rpc.message.isEmpty ? "\(rpc.code)" : rpc.message
    // RPCError.Code is a struct, so the compiler cannot check this switch: every
    // code is listed, and one added by a later gRPC counts as a failure, never as "try again".
    switch rpc.code {
    case .invalidArgument, .outOfRange:
      return EndpointError(
        code: .invalidArgument, message: "\(service) service rejected the request: \(said)")
    case .notFound, .failedPrecondition:
      // What the request names (e.g. the host interface) is missing or unusable.
      return EndpointError(
        code: .failedPrecondition, message: "\(service) service refused the request: \(said)")
    case .resourceExhausted:
      return EndpointError(
        code: .failedPrecondition, message: "\(service) service is out of resources: \(said)")
    case .alreadyExists:
      return EndpointError(code: .duplicate, message: "\(service) service: \(said)")
    case .unavailable, .cancelled, .aborted:
      return EndpointError(
        code: .upstreamUnavailable, message: "\(service) service unavailable", cause: rpc)
    case .deadlineExceeded:
      return EndpointError(
        code: .upstreamUnavailable, message: "\(service) service did not answer in time", cause: rpc
      )
    case .permissionDenied, .unauthenticated, .unimplemented, .internalError, .dataLoss, .unknown:
      return EndpointError(
        code: .upstreamFailed, message: "\(service) service failed: \(rpc.code): \(said)")
    default:
      return EndpointError(
        code: .upstreamFailed, message: "\(service) service failed: \(rpc.code): \(said)")
    }
  }
}

/// ``IdentityAllocating`` over gRPC.
public struct IdentityServiceClient<Transport: ClientTransport>: IdentityAllocating {
  private let client: Tessera_Identity_V1_IdentityService.Client<Transport>
  private let timeout: Duration

  public init(wrapping client: GRPCClient<Transport>, timeout: Duration = .seconds(5)) {
    self.client = .init(wrapping: client)
    self.timeout = timeout
  }

  public func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    do {
      // One id per call: the transport's retries on UNAVAILABLE (on another replica,
      // perhaps after the first one applied it and died) resend it unchanged.
      let response = try await client.allocateIdentity(
        .with {
          $0.labels = labels.proto
          $0.requestID = UUID().uuidString
        }, options: .failFast(timeout: timeout))
      return (try SecurityIdentity(proto: response.identity), response.isNew)
    } catch {
      throw .upstream("identity", error)
    }
  }

  public func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError) {
    do {
      _ = try await client.releaseIdentity(
        .with {
          $0.id = id.rawValue
          $0.requestID = UUID().uuidString
        }, options: .failFast(timeout: timeout))
    } catch let error as RPCError where error.code == .notFound {
      return  // Already garbage collected: nothing to release.
    } catch {
      throw .upstream("identity", error)
    }
  }

  public func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError) {
    do {
      _ = try await client.syncNodeReferences(
        .with {
          $0.held = held.sorted { $0.key < $1.key }.map { id, count in
            .with {
              $0.identity = id.rawValue
              $0.count = UInt32(clamping: count)
            }
          }
        }, options: .failFast(timeout: timeout))
    } catch {
      throw .upstream("identity", error)
    }
  }
}

extension IdentityServiceClient {
  public func keepAliveNode() async throws(EndpointError) -> NodeLease {
    do {
      let response = try await client.keepAliveNode(.init(), options: .failFast(timeout: timeout))
      return NodeLease(
        timeToLive: response.ttlSeconds > 0 ? .seconds(response.ttlSeconds) : nil,
        referencesLost: response.referencesLost)
    } catch let error as RPCError where error.code == .unimplemented {
      return .notLeased  // An identity service older than node leases.
    } catch {
      throw .upstream("identity", error)
    }
  }
}

/// ``PolicyComputing`` over gRPC, plus the policy watch.
public struct PolicyServiceClient<Transport: ClientTransport>: PolicyComputing {
  private let client: Tessera_Policy_V1_PolicyService.Client<Transport>
  private let timeout: Duration

  public init(wrapping client: GRPCClient<Transport>, timeout: Duration = .seconds(5)) {
    self.client = .init(wrapping: client)
    self.timeout = timeout
  }

  public func computePolicy(for identity: SecurityIdentity) async throws(EndpointError)
    -> EndpointPolicy
  {
    do {
      let response = try await client.computeEndpointPolicy(
        .with {
          $0.identity = identity.id.rawValue
          $0.labels = identity.labels.proto
          $0.resolvesNamedPorts = true
        }, options: .failFast(timeout: timeout))
      return try EndpointPolicy(proto: response)
    } catch {
      throw .upstream("policy", error)
    }
  }

  public func eventSequence() async throws(EndpointError) -> PolicyEventSequence? {
    try await eventSequence(requiring: []).map(\.0)
  }

  public func eventSequence(requiring identities: Set<NumericIdentity>) async throws(EndpointError)
    -> (
      PolicyEventSequence, unknown: Set<NumericIdentity>
    )?
  {
    do {
      let request = Tessera_Policy_V1_GetEventSequenceRequest.with {
        $0.identities = identities.map(\.rawValue).sorted()
      }
      let response = try await client.getEventSequence(
        request, options: .failFast(timeout: timeout))
      return (
        PolicyEventSequence(sequence: response.sequence, instanceID: response.instanceID),
        Set(response.unknownIdentities.map(NumericIdentity.init(rawValue:)))
      )
    } catch {
      throw .upstream("policy", error)
    }
  }

  /// Follows the policy service's change stream for as long as the task runs,
  /// reconnecting after failures.
  ///
  /// Every event carries its sequence number. After every (re)connect the
  /// first change is a full resynchronisation (every endpoint recomputed),
  /// unless the new stream continues the old one exactly (same instance, same
  /// sequence). A stream the service ended because this subscriber lagged is
  /// reconnected at once.
  public func watchPolicy(
    logger: Logger, onChange: @escaping @Sendable (PolicyChange) async -> Void
  ) async {
    let controller = Controller("policy-watch")
    var backoff = Backoff(initial: .milliseconds(50), maximum: .seconds(2))
    var last: PolicyEventSequence?
    while !Task.isCancelled {
      let previous = last
      do {
        last = try await client.watchPolicy(.init()) { response in
          var position = previous
          var first = true
          for try await event in response.messages {
            if first {
              first = false
              let continues =
                previous
                == PolicyEventSequence(sequence: event.sequence, instanceID: event.instanceID)
              position = PolicyEventSequence(sequence: event.sequence, instanceID: event.instanceID)
              controller.succeeded()
              await onChange(
                PolicyChange(
                  revision: event.revision, affectedIdentities: continues ? [] : nil,
                  sequence: event.sequence, instanceID: event.instanceID, resync: !continues,
                  namesIdentityChanges: event.namesIdentityChanges,
                  cidrIdentities: PolicyChange.cidrs(event.cidrIdentities)))
              continue
            }
            position?.sequence = event.sequence
            await onChange(PolicyChange(liveEvent: event))
          }
          return position
        }
        backoff.reset()
      } catch let error as RPCError where error.code == .resourceExhausted {
        controller.failed(error)
        logger.warning(
          "policy watch lagged behind and was ended by the policy service; resynchronising",
          metadata: ["error": "\(error)"])
        backoff.reset()
        continue
      } catch {
        controller.failed(error)
        logger.debug("policy watch interrupted; reconnecting", metadata: ["error": "\(error)"])
      }
      try? await backoff.sleep()
    }
  }
}

/// ``DatapathRealizing`` over gRPC.
public struct DatapathServiceClient<Transport: ClientTransport>: DatapathRealizing {
  private let client: Tessera_Datapath_V1_DatapathService.Client<Transport>
  private let timeout: Duration

  public init(wrapping client: GRPCClient<Transport>, timeout: Duration = .seconds(5)) {
    self.client = .init(wrapping: client)
    self.timeout = timeout
  }

  public func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError)
    -> UInt64
  {
    do {
      let response = try await client.realizeEndpointPolicy(
        .with {
          $0.endpointID = endpoint.id
          $0.hostInterface = endpoint.hostInterface
          $0.ips = endpoint.ips.map(\.address)
          $0.identity = endpoint.identity.rawValue
          $0.policy = .init(policy)
        }, options: .failFast(timeout: timeout))
      return response.realizedRevision
    } catch {
      throw .upstream("datapath", error)
    }
  }

  public func removeEndpoint(id: UInt64) async throws(EndpointError) {
    do {
      _ = try await client.removeEndpoint(
        .with { $0.endpointID = id }, options: .failFast(timeout: timeout))
    } catch {
      throw .upstream("datapath", error)
    }
  }

  public func realizedEndpoints() async throws(EndpointError) -> [UInt64: (
    identity: NumericIdentity, revision: UInt64
  )] {
    do {
      let response = try await client.listEndpoints(.init(), options: .failFast(timeout: timeout))
      var result: [UInt64: (identity: NumericIdentity, revision: UInt64)] = [:]
      for endpoint in response.endpoints {
        result[endpoint.endpointID] = (
          NumericIdentity(endpoint.identity), endpoint.realizedRevision
        )
      }
      return result
    } catch {
      throw .upstream("datapath", error)
    }
  }
}

extension DatapathServiceClient: IPCacheWriting {
  public func upsertIPCache(_ entries: [IPPrefix: NumericIdentity]) async throws(EndpointError) {
    try await upsert(entries, cidr: false)
  }

  public func deleteIPCache(_ prefixes: [IPPrefix], endingFlows: Bool) async throws(EndpointError) {
    try await delete(prefixes, cidr: false, endingFlows: endingFlows)
  }

  /// UpsertIPCache; `cidr` marks CIDR entries, which yield to every other kind.
  private func upsert(_ entries: [IPPrefix: NumericIdentity], cidr: Bool)
    async throws(EndpointError)
  {
    guard !entries.isEmpty else { return }
    do {
      _ = try await client.upsertIPCache(
        .with {
          $0.cidr = cidr
          $0.entries = entries.sorted { $0.key < $1.key }.map { prefix, identity in
            .with {
              $0.prefix = prefix.description
              $0.identity = identity.rawValue
            }
          }
        }, options: .failFast(timeout: timeout))
    } catch {
      throw .upstream("datapath", error)
    }
  }

  /// DeleteIPCache; with `cidr` only entries that still hold a CIDR identity go; with
  /// `endingFlows` every flow with one of the addresses ends too.
  private func delete(_ prefixes: [IPPrefix], cidr: Bool, endingFlows: Bool = false)
    async throws(EndpointError)
  {
    guard !prefixes.isEmpty else { return }
    do {
      _ = try await client.deleteIPCache(
        .with {
          $0.cidr = cidr
          $0.endFlows = endingFlows
          $0.prefixes = prefixes.map(\.description)
        }, options: .failFast(timeout: timeout))
    } catch {
      throw .upstream("datapath", error)
    }
  }
}

extension PolicyChange {
  /// A `WatchPolicy` event after a stream's first: the identities whose policy may
  /// differ, and those it brought into (number → labels digest) or removed from the
  /// SelectorCache.
  public init(liveEvent event: Tessera_Policy_V1_PolicyEvent) {
    self.init(
      revision: event.revision,
      affectedIdentities: event.all
        ? nil : Set(event.affectedIdentities.map(NumericIdentity.init(rawValue:))),
      sequence: event.sequence,
      addedIdentities: Dictionary(
        event.addedIdentities.map { (NumericIdentity(rawValue: $0.id), $0.labelsDigest) },
        uniquingKeysWith: { first, _ in first }),
      deletedIdentities: Set(event.deletedIdentities.map(NumericIdentity.init(rawValue:))),
      addedCIDRs: Self.cidrs(event.addedIdentities),
      retiredCIDRs: Set(event.retiredCidrIdentities.map(NumericIdentity.init(rawValue:))))
  }

  /// The CIDR identities among `arrivals`, by prefix (arrivals outside the CIDR scope, or
  /// whose prefix does not parse, are not CIDR identities).
  static func cidrs(_ arrivals: [Tessera_Policy_V1_IdentityArrival]) -> [IPPrefix: NumericIdentity]
  {
    var cidrs: [IPPrefix: NumericIdentity] = [:]
    for arrival in arrivals where CIDRIdentity.isCIDR(NumericIdentity(arrival.id)) {
      if let prefix = IPPrefix(arrival.cidr) { cidrs[prefix] = NumericIdentity(arrival.id) }
    }
    return cidrs
  }
}

extension DatapathServiceClient: CIDRIPCacheWriting {
  public func upsertCIDREntries(_ entries: [IPPrefix: NumericIdentity]) async throws(EndpointError)
  {
    try await upsert(entries, cidr: true)
  }

  public func deleteCIDREntries(_ prefixes: [IPPrefix]) async throws(EndpointError) {
    try await delete(prefixes, cidr: true)
  }

  public func ipcacheEntries() async throws(EndpointError) -> [IPPrefix: NumericIdentity] {
    do {
      let response = try await client.listIPCache(.init(), options: .failFast(timeout: timeout))
      var entries: [IPPrefix: NumericIdentity] = [:]
      for entry in response.entries {
        if let prefix = IPPrefix(entry.prefix) { entries[prefix] = NumericIdentity(entry.identity) }
      }
      return entries
    } catch {
      throw .upstream("datapath", error)
    }
  }
}
