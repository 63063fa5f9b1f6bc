import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension EndpointServiceHandler {
  public func updateEndpointLabels(
    request: Tessera_Endpoint_V1_UpdateEndpointLabelsRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_Endpoint {
    try requireServing()
    guard let endpoint = try endpoints(request.endpoint).first else {
      throw RPCError(code: .notFound, message: "no such endpoint")
    }
    let labels = try LabelSet(protoLabels: request.labels)
    let manager = self.manager
    let updated = try await cancellable(context) {
      try await manager.updateLabels(
        endpointID: endpoint.id, requestLabels: labels, sync: request.sync)
    }
    return .init(updated)
  }
}
