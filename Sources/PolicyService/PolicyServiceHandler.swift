import Foundation
import GRPCCore
import Logging
import TesseraCore
import Synchronization
import TesseraProto
import TesseraRuntime

/// The gRPC face of the policy service; one RPC per file in `PolicyService+*.swift`.
public struct PolicyServiceHandler: Tessera_Policy_V1_PolicyService.SimpleServiceProtocol {
  let engine: PolicyEngine
  let events: PolicyEvents
  /// Policy-computing calls are refused until the SelectorCache was synced with the identity service.
  let readiness: PolicyReadiness
  /// Changes on every start, so the identity service notices a restart.
  let instanceID: String
  let logger: Logger
  /// Held while identities enter the SelectorCache and their event is numbered, and while
  /// GetEventSequence reads both.
  let identityPublication = SharedLock()

  /// - Parameter readiness: the daemon passes one that is not yet synced and
  ///   marks it after its first identity sync; the default is already synced.
  public init(engine: PolicyEngine, events: PolicyEvents, readiness: PolicyReadiness = PolicyReadiness(synced: true), logger: Logger) {
    self.engine = engine
    self.events = events
    self.readiness = readiness
    self.instanceID = events.instanceID
    self.logger = logger
  }
}

/// A lock a copyable handler can hold.
final class SharedLock: Sendable {
  private let mutex = Mutex(())
  func withLock<Result: Sendable>(_ body: () throws -> Result) rethrows -> Result { try mutex.withLock { _ in try body() } }
}
