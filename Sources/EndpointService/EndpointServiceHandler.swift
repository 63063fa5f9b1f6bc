import Foundation
import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// The gRPC face of the endpoint service; one RPC per file in `EndpointService+*.swift`.
public struct EndpointServiceHandler: Tessera_Endpoint_V1_EndpointService.SimpleServiceProtocol {
  let manager: EndpointManager
  /// Namespace and workload labels as this node knows them (reads).
  let workloads: WorkloadRegistry
  /// Where changes to them go: `workloads` itself, or the cluster store.
  let metadata: any MetadataStore
  /// Whether the node serves: after a restart, not before its endpoints are restored.
  let isServing: @Sendable () -> Bool
  /// DELs the CNI plugin queued; a create runs its own attachment's first.
  let deletionQueue: DeletionQueue?
  let logger: Logger

  /// - Parameter isServing: false while a restarted node restores its endpoints (the
  ///   daemon's health status); endpoint calls then get UNAVAILABLE (CNI code 11, and
  ///   the plugin queues a DEL), since the node's registry is still filling: a create
  ///   could take the ID of an endpoint not restored yet, a delete or a CNI CHECK could
  ///   miss one.
  public init(
    manager: EndpointManager, workloads: WorkloadRegistry, metadata: (any MetadataStore)? = nil,
    isServing: @escaping @Sendable () -> Bool = { true }, deletionQueue: DeletionQueue? = nil,
    logger: Logger
  ) {
    self.deletionQueue = deletionQueue
    self.manager = manager
    self.workloads = workloads
    self.metadata = metadata ?? workloads
    self.isServing = isServing
    self.logger = logger
  }

  /// Endpoint calls wait for the node to serve (see `isServing`).
  func requireServing() throws(RPCError) {
    guard isServing() else {
      throw RPCError(
        code: .unavailable,
        message: "the endpoint service is restoring its endpoints after a restart; try again")
    }
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
