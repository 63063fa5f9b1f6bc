import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension PolicyServiceHandler {
  public func computeEndpointPolicy(
    request: Tessera_Policy_V1_ComputeEndpointPolicyRequest, context: ServerContext
  ) async throws -> Tessera_Common_V1_EndpointPolicy {
    // Before the first identity sync a computed policy could lack peers that exist.
    try readiness.requireSynced()
    let subject = SecurityIdentity(
      id: NumericIdentity(request.identity), labels: try LabelSet(protoLabels: request.labels))
    let policy = engine.computePolicy(for: subject)
    return .init(request.resolvesNamedPorts ? policy : policy.withoutNamedPorts())
  }

  public func listSelectors(request: Tessera_Policy_V1_ListSelectorsRequest, context: ServerContext)
    async throws -> Tessera_Policy_V1_ListSelectorsResponse
  {
    try readiness.requireSynced()
    return .with {
      $0.selectors = engine.selectors().map { snapshot in
        .with {
          $0.selector = snapshot.selector
          $0.identities = snapshot.identities.map(\.rawValue)
          $0.users = UInt32(clamping: snapshot.users)
        }
      }
    }
  }
}
