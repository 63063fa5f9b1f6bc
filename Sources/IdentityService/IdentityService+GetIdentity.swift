import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension IdentityServiceHandler {
  public func getIdentity(request: Tessera_Identity_V1_GetIdentityRequest, context: ServerContext)
    async throws -> Tessera_Identity_V1_IdentityInfo
  {
    .init(try await allocator.identity(id: NumericIdentity(request.id)))
  }

  public func lookupIdentity(
    request: Tessera_Identity_V1_LookupIdentityRequest, context: ServerContext
  ) async throws -> Tessera_Identity_V1_IdentityInfo {
    .init(try await allocator.identity(labels: try LabelSet(protoLabels: request.labels)))
  }

  public func listIdentities(
    request: Tessera_Identity_V1_ListIdentitiesRequest, context: ServerContext
  ) async throws -> Tessera_Identity_V1_ListIdentitiesResponse {
    let identities = try await allocator.identities()
    return .with {
      $0.identities = identities.map(Tessera_Identity_V1_IdentityInfo.init)
      $0.backend = allocator.store.backendDescription
    }
  }
}
