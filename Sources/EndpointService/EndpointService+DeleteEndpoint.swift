import GRPCCore
import TesseraCore
import TesseraProto

extension EndpointServiceHandler {
  public func deleteEndpoint(
    request: Tessera_Endpoint_V1_DeleteEndpointRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_DeleteEndpointResponse {
    try requireServing()
    var deleted = 0
    for endpoint in try endpoints(request.endpoint)
    where try await manager.deleteEndpoint(id: endpoint.id) != nil {
      deleted += 1
    }
    return .with {
      $0.existed = deleted > 0
      $0.deleted = UInt32(deleted)
    }
  }

  public func garbageCollectEndpoints(
    request: Tessera_Endpoint_V1_GarbageCollectEndpointsRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_GarbageCollectEndpointsResponse {
    try requireServing()
    let valid = Set(
      request.validAttachments.map {
        EndpointRegistry.Attachment(containerID: $0.containerID, interfaceName: $0.interfaceName)
      })
    let removed = try await manager.garbageCollect(valid: valid, network: request.network)
    return .with { $0.removed = removed.map(Tessera_Endpoint_V1_Endpoint.init) }
  }
}
