import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension IdentityServiceHandler {
  public func syncNodeReferences(
    request: Tessera_Identity_V1_SyncNodeReferencesRequest, context: ServerContext
  ) async throws -> Tessera_Identity_V1_SyncNodeReferencesResponse {
    var held: [NumericIdentity: Int] = [:]
    for entry in request.held {
      held[NumericIdentity(entry.identity), default: 0] += Int(entry.count)
    }
    let sync = try await allocator.syncNodeReferences(
      node: try context.actingNode(requested: request.node), held: held)
    return .with {
      $0.dropped = UInt32(clamping: sync.dropped)
      $0.added = UInt32(clamping: sync.added)
      $0.missing = sync.missing.map(\.rawValue)
    }
  }
}
