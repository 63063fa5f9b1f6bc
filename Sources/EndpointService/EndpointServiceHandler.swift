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
  let logger: Logger

  public init(
    manager: EndpointManager, workloads: WorkloadRegistry, metadata: (any MetadataStore)? = nil,
    logger: Logger
  ) {
    self.manager = manager
    self.workloads = workloads
    self.metadata = metadata ?? workloads
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
