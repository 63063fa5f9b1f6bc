import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

extension EndpointError {
  /// Maps a failed call to another service: its own contract errors keep
  /// their meaning, everything else means "try again later".
  static func upstream(_ service: String, _ error: any Error) -> EndpointError {
    if let rpc = error as? RPCError {
      switch rpc.code {
      case .invalidArgument:
        return EndpointError(code: .invalidArgument, message: rpc.message)
      case .deadlineExceeded:
        return EndpointError(code: .deadlineExceeded, message: "\(service) service did not answer in time", cause: rpc)
      default:
        return EndpointError(code: .upstreamUnavailable, message: "\(service) service unavailable", cause: rpc)
      }
    }
    if error is CancellationError {
      return EndpointError(code: .deadlineExceeded, message: "request cancelled while waiting for the \(service) service")
    }
    return EndpointError(code: .upstreamUnavailable, message: "\(service) service call failed", cause: error)
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

  public func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (identity: SecurityIdentity, isNew: Bool) {
    do {
      let response = try await client.allocateIdentity(.with { $0.labels = labels.proto }, options: .failFast(timeout: timeout))
      return (try SecurityIdentity(proto: response.identity), response.isNew)
    } catch {
      throw .upstream("identity", error)
    }
  }

  public func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError) {
    do {
      _ = try await client.releaseIdentity(.with { $0.id = id.rawValue }, options: .failFast(timeout: timeout))
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

/// ``PolicyComputing`` over gRPC, plus the policy watch.
public struct PolicyServiceClient<Transport: ClientTransport>: PolicyComputing {
  private let client: Tessera_Policy_V1_PolicyService.Client<Transport>
  private let timeout: Duration

  public init(wrapping client: GRPCClient<Transport>, timeout: Duration = .seconds(5)) {
    self.client = .init(wrapping: client)
    self.timeout = timeout
  }

  public func computePolicy(for identity: SecurityIdentity) async throws(EndpointError) -> EndpointPolicy {
    do {
      let response = try await client.computeEndpointPolicy(
        .with {
          $0.identity = identity.id.rawValue
          $0.labels = identity.labels.proto
        }, options: .failFast(timeout: timeout))
      return try EndpointPolicy(proto: response)
    } catch {
      throw .upstream("policy", error)
    }
  }

  /// Follows the policy service's change stream for as long as the task runs,
  /// reconnecting after failures. After every (re)connect it reports a change
  /// to all endpoints, since events may have been missed meanwhile.
  public func watchPolicy(logger: Logger, onChange: @escaping @Sendable (PolicyChange) -> Void) async {
    var backoff = Backoff(initial: .milliseconds(50), maximum: .seconds(2))
    while !Task.isCancelled {
      do {
        try await client.watchPolicy(.init()) { response in
          var first = true
          for try await event in response.messages {
            if first {
              first = false
              onChange(PolicyChange(revision: event.revision, affectedIdentities: nil))
              continue
            }
            onChange(PolicyChange(
              revision: event.revision,
              affectedIdentities: event.all ? nil : Set(event.affectedIdentities.map(NumericIdentity.init(rawValue:)))))
          }
        }
        backoff.reset()
      } catch {
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

  public func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError) -> UInt64 {
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
      _ = try await client.removeEndpoint(.with { $0.endpointID = id }, options: .failFast(timeout: timeout))
    } catch {
      throw .upstream("datapath", error)
    }
  }

  public func realizedEndpoints() async throws(EndpointError) -> [UInt64: (identity: NumericIdentity, revision: UInt64)] {
    do {
      let response = try await client.listEndpoints(.init(), options: .failFast(timeout: timeout))
      var result: [UInt64: (identity: NumericIdentity, revision: UInt64)] = [:]
      for endpoint in response.endpoints {
        result[endpoint.endpointID] = (NumericIdentity(endpoint.identity), endpoint.realizedRevision)
      }
      return result
    } catch {
      throw .upstream("datapath", error)
    }
  }
}

extension DatapathServiceClient: IPCacheWriting {
  public func upsertIPCache(_ entries: [IPPrefix: NumericIdentity]) async throws(EndpointError) {
    guard !entries.isEmpty else { return }
    do {
      _ = try await client.upsertIPCache(
        .with {
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

  public func deleteIPCache(_ prefixes: [IPPrefix]) async throws(EndpointError) {
    guard !prefixes.isEmpty else { return }
    do {
      _ = try await client.deleteIPCache(.with { $0.prefixes = prefixes.map(\.description) }, options: .failFast(timeout: timeout))
    } catch {
      throw .upstream("datapath", error)
    }
  }
}
