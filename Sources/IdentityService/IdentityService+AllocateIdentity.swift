import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension IdentityServiceHandler {
  public func allocateIdentity(
    request: Tessera_Identity_V1_AllocateIdentityRequest, context: ServerContext
  ) async throws -> Tessera_Identity_V1_AllocateIdentityResponse {
    let labels = try LabelSet(protoLabels: request.labels)
    let (identity, isNew) = try await allocator.allocateIdentity(
      labels: labels, node: try context.actingNode(requested: request.node),
      requestID: request.requestID)
    return .with {
      $0.identity = .init(identity)
      $0.isNew = isNew
    }
  }
}
