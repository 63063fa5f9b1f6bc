import GRPCCore
import TesseraCore
import TesseraProto

extension IdentityServiceHandler {
  public func releaseIdentity(
    request: Tessera_Identity_V1_ReleaseIdentityRequest, context: ServerContext
  ) async throws -> Tessera_Identity_V1_ReleaseIdentityResponse {
    let result = try await allocator.releaseIdentity(
      id: NumericIdentity(request.id), node: try context.actingNode(requested: request.node),
      requestID: request.requestID)
    return .with {
      $0.released = result.released
      $0.remainingReferences = UInt32(clamping: result.remainingReferences)
    }
  }
}
