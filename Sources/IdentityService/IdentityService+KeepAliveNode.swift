import GRPCCore
import TesseraProto
import TesseraRuntime

extension IdentityServiceHandler {
  public func keepAliveNode(
    request: Tessera_Identity_V1_KeepAliveNodeRequest, context: ServerContext
  ) async throws -> Tessera_Identity_V1_KeepAliveNodeResponse {
    let renewal = try await allocator.keepAliveNode(
      node: try context.actingNode(requested: request.node))
    return .with {
      $0.ttlSeconds = renewal.ttlSeconds
      $0.referencesLost = renewal.referencesLost
    }
  }
}
