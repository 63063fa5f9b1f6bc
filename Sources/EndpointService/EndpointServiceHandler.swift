import Foundation
import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// The gRPC face of the endpoint service; one RPC per file in `EndpointService+*.swift`.
public struct EndpointServiceHandler: Tessera_Endpoint_V1_EndpointService.SimpleServiceProtocol {
  let manager: EndpointManager
  let workloads: WorkloadRegistry
  let logger: Logger

  public init(manager: EndpointManager, workloads: WorkloadRegistry, logger: Logger) {
    self.manager = manager
    self.workloads = workloads
    self.logger = logger
  }

  /// Runs `operation`, cancelling it when the client's deadline passes or the client goes away.
  func cancellable<T: Sendable>(
    _ context: ServerContext, _ operation: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let task = Task { try await operation() }
    return try await withRPCCancellationHandler {
      try await task.value
    } onCancelRPC: {
      task.cancel()
    }
  }

  /// The endpoints a selector names; empty selectors are rejected.
  func endpoints(_ selector: Tessera_Endpoint_V1_EndpointSelector) throws -> [Endpoint] {
    if selector.id != 0 {
      return manager.registry.endpoint(id: selector.id).map { [$0] } ?? []
    }
    guard !selector.containerID.isEmpty else {
      throw RPCError(code: .invalidArgument, message: "select an endpoint by id or container_id")
    }
    return manager.registry.endpoints(
      containerID: selector.containerID, interfaceName: selector.interfaceName)
  }
}

extension Tessera_Endpoint_V1_Endpoint {
  init(_ endpoint: Endpoint) {
    self.init()
    id = endpoint.id
    containerID = endpoint.containerID
    interfaceName = endpoint.interfaceName
    hostInterface = endpoint.hostInterface
    ips = endpoint.ips.map(\.address)
    namespace = endpoint.namespace
    podName = endpoint.podName
    labels = endpoint.labels.proto
    identity = endpoint.identity.rawValue
    state = Tessera_Endpoint_V1_EndpointState(endpoint.state)
    policyRevision = endpoint.policyRevision
    identityRevision = endpoint.identityRevision
    netns = endpoint.netns
    createdAtUnixMs = Int64(endpoint.createdAt.timeIntervalSince1970 * 1000)
  }
}

extension Tessera_Endpoint_V1_EndpointState {
  init(_ state: EndpointState) {
    switch state {
    case .waitingForIdentity: self = .waitingForIdentity
    case .waitingToRegenerate: self = .waitingToRegenerate
    case .regenerating: self = .regenerating
    case .ready: self = .ready
    case .disconnecting: self = .disconnecting
    case .disconnected: self = .disconnected
    case .restoring: self = .restoring
    }
  }
}

extension Tessera_Endpoint_V1_Workload {
  init(_ workload: Workload) {
    self.init()
    namespace = workload.namespace
    podName = workload.podName
    labels = workload.labels.proto
  }
}
