import GRPCCore
import TesseraCore
import TesseraProto

extension EndpointServiceHandler {
  public func getEndpoint(request: Tessera_Endpoint_V1_GetEndpointRequest, context: ServerContext)
    async throws -> Tessera_Endpoint_V1_Endpoint
  {
    try requireServing()
    guard let endpoint = try endpoints(request.endpoint).first else {
      throw RPCError(
        code: .notFound,
        message:
          "no endpoint matches \(request.endpoint.id != 0 ? "id \(request.endpoint.id)" : "container \(request.endpoint.containerID)")"
      )
    }
    return described(endpoint)
  }

  /// The endpoint on the wire, with its failing regeneration if any.
  func described(_ endpoint: Endpoint) -> Tessera_Endpoint_V1_Endpoint {
    var wire = Tessera_Endpoint_V1_Endpoint(endpoint)
    if let failure = manager.regenerator.failure(of: endpoint.id) {
      wire.regenerationFailures = UInt32(clamping: failure.consecutive)
      wire.lastRegenerationError = failure.lastError
    }
    return wire
  }

  public func listEndpoints(
    request: Tessera_Endpoint_V1_ListEndpointsRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_ListEndpointsResponse {
    try requireServing()
    return .with { $0.endpoints = manager.registry.all().map(described) }
  }
}
