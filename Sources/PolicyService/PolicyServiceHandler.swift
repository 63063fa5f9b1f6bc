import Foundation
import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// The gRPC face of the policy service; one RPC per file in `PolicyService+*.swift`.
public struct PolicyServiceHandler: Tessera_Policy_V1_PolicyService.SimpleServiceProtocol {
  let engine: PolicyEngine
  let events: PolicyEvents
  /// Changes on every start, so the identity service notices a restart.
  let instanceID: String
  let logger: Logger

  public init(engine: PolicyEngine, events: PolicyEvents, instanceID: String = UUID().uuidString, logger: Logger) {
    self.engine = engine
    self.events = events
    self.instanceID = instanceID
    self.logger = logger
  }
}

/// Fans policy changes out to `WatchPolicy` streams.
public typealias PolicyEvents = EventBroadcaster<Tessera_Policy_V1_PolicyEvent>

extension EventBroadcaster where Event == Tessera_Policy_V1_PolicyEvent {
  /// Publishes a change unless it affects no identity.
  public func publish(revision: UInt64, affected: AffectedIdentities) {
    if case .some(let identities) = affected, identities.isEmpty { return }
    publish(.with {
      $0.revision = revision
      switch affected {
      case .all: $0.all = true
      case .some(let identities): $0.affectedIdentities = identities.map(\.rawValue).sorted()
      }
    })
  }
}

extension PolicyError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch code {
    case .invalidManifest: .invalidArgument
    case .notFound: .notFound
    default: .internalError
    }
  }

  public var rpcErrorMessage: String { description }
}

extension Tessera_Policy_V1_PolicyRef {
  init(_ ref: PolicyRef) {
    self.init()
    namespace = ref.namespace
    name = ref.name
    kind = ref.kind
  }
}

extension Tessera_Policy_V1_Policy {
  init(_ policy: StoredPolicy) {
    self.init()
    ref = .init(policy.ref)
    revision = policy.revision
    sourceJson = policy.sourceJSON
    ruleCount = UInt32(clamping: policy.ruleCount)
  }
}
