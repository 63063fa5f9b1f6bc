import Foundation
import GRPCCore
import Logging
import Synchronization
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
public final class PolicyEvents: Sendable {
  private struct State {
    var subscribers: [Int: AsyncStream<Tessera_Policy_V1_PolicyEvent>.Continuation] = [:]
    var next = 0
  }

  private let state = Mutex(State())

  public init() {}

  public func publish(revision: UInt64, affected: AffectedIdentities) {
    let event = Tessera_Policy_V1_PolicyEvent.with {
      $0.revision = revision
      switch affected {
      case .all: $0.all = true
      case .some(let identities): $0.affectedIdentities = identities.map(\.rawValue).sorted()
      }
    }
    if case .some(let identities) = affected, identities.isEmpty { return }
    for subscriber in state.withLock({ Array($0.subscribers.values) }) { subscriber.yield(event) }
  }

  public func subscribe() -> AsyncStream<Tessera_Policy_V1_PolicyEvent> {
    let (stream, continuation) = AsyncStream<Tessera_Policy_V1_PolicyEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
    let id = state.withLock { state in
      defer { state.next += 1 }
      state.subscribers[state.next] = continuation
      return state.next
    }
    continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) } }
    return stream
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
