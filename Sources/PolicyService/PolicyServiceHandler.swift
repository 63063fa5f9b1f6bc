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
  /// Policy-computing calls are refused until the SelectorCache was synced with the identity service.
  let readiness: PolicyReadiness
  /// Changes on every start, so the identity service notices a restart.
  let instanceID: String
  let logger: Logger
  /// The rule repository in etcd, shared with other replicas; nil: this daemon's own database.
  let cluster: ClusterPolicyRepository?

  /// - Parameter readiness: the daemon passes one that is not yet synced and
  ///   marks it after its first identity sync; the default is already synced.
  ///   - cluster: the shared rule repository in etcd; imports and deletes go there.
  public init(
    engine: PolicyEngine, events: PolicyEvents,
    readiness: PolicyReadiness = PolicyReadiness(synced: true),
    cluster: ClusterPolicyRepository? = nil, logger: Logger
  ) {
    self.cluster = cluster
    self.engine = engine
    self.events = events
    self.readiness = readiness
    self.instanceID = events.instanceID
    self.logger = logger
  }
}
