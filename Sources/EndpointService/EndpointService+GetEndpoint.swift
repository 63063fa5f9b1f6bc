import GRPCCore
import TesseraCore
import TesseraProto

extension EndpointServiceHandler {
  public func getEndpoint(request: Tessera_Endpoint_V1_GetEndpointRequest, context: ServerContext)
    async throws -> Tessera_Endpoint_V1_Endpoint
  {
    guard let endpoint = try endpoints(request.endpoint).first else {
      throw RPCError(
        code: .notFound,
        message:
          "no endpoint matches \(request.endpoint.id != 0 ? "id \(request.endpoint.id)" : "container \(request.endpoint.containerID)")"
      )
    }
    return .init(endpoint)
  }

  public func listEndpoints(
    request: Tessera_Endpoint_V1_ListEndpointsRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_ListEndpointsResponse {
    .with { $0.endpoints = manager.registry.all().map(Tessera_Endpoint_V1_Endpoint.init) }
  }
}
