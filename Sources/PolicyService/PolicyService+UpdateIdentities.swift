import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension PolicyServiceHandler {
  /// New identities enter the SelectorCache here; endpoints whose policy
  /// selects them are told through `WatchPolicy`.
  public func updateIdentities(request: Tessera_Policy_V1_UpdateIdentitiesRequest, context: ServerContext) async throws -> Tessera_Policy_V1_UpdateIdentitiesResponse {
    let added = try request.added.map { identity throws(RPCError) in try SecurityIdentity(proto: identity) }
    // Together, so GetEventSequence never sees an identity whose event is not yet numbered.
    let result = identityPublication.withLock {
      let result = engine.updateIdentities(added: added, deleted: request.deleted.map(NumericIdentity.init(rawValue:)))
      events.publish(revision: engine.revision, affected: result.affected)
      return result
    }
    return .with {
      $0.selectorsChanged = UInt32(clamping: result.selectorsChanged)
      $0.instanceID = instanceID
    }
  }
}
