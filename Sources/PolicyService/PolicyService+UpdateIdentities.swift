import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension PolicyServiceHandler {
  /// New identities enter the SelectorCache here; endpoints whose policy
  /// selects them are told through `WatchPolicy`.
  public func updateIdentities(
    request: Tessera_Policy_V1_UpdateIdentitiesRequest, context: ServerContext
  ) async throws -> Tessera_Policy_V1_UpdateIdentitiesResponse {
    let added = try request.added.map { identity throws(RPCError) in
      try SecurityIdentity(proto: identity)
    }
    let result = identitiesChanged(
      added: added, deleted: request.deleted.map(NumericIdentity.init(rawValue:)))
    return .with {
      $0.selectorsChanged = UInt32(clamping: result.selectorsChanged)
      $0.instanceID = instanceID
    }
  }

  /// Identities enter or leave the SelectorCache (pushed by the identity service, or
  /// followed from its watch) and the change is announced as one numbered event.
  /// Together, so GetEventSequence never sees an identity whose event is not yet numbered.
  public func identitiesChanged(added: [SecurityIdentity], deleted: [NumericIdentity]) -> (
    selectorsChanged: Int, affected: AffectedIdentities
  ) {
    // The identity service allocates no CIDR identity: one it names is neither applied nor
    // announced (nodes map CIDRs by what the rules' own events say).
    let added = added.filter { !CIDRIdentity.isCIDR($0.id) }
    let deleted = deleted.filter { !CIDRIdentity.isCIDR($0) }
    return events.serialized {
      let result = engine.updateIdentities(added: added, deleted: deleted)
      events.publish(
        revision: engine.revision, affected: result.affected, added: added,
        deleted: deleted)
      return result
    }
  }
}
