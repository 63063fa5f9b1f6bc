import GRPCCore
import TesseraCore
import TesseraProto

extension PolicyServiceHandler {
  /// The first event carries the current revision and sequence (`all` set, and
  /// the instance ID) and every CIDR identity; later events are live changes, numbered
  /// without gaps.
  /// A subscriber that falls ``PolicyEvents/bufferSize`` events behind gets the
  /// events it still had buffered, then RESOURCE_EXHAUSTED.
  public func watchPolicy(
    request: Tessera_Policy_V1_WatchPolicyRequest,
    response: RPCWriter<Tessera_Policy_V1_PolicyEvent>, context: ServerContext
  ) async throws {
    try await events.withSubscriptionForRPC(reading: { engine.cidrIdentities() }) {
      subscription, cidrIdentities in
      try await response.write(
        .with {
          $0.revision = engine.revision
          $0.all = true
          $0.sequence = subscription.sequence
          $0.instanceID = events.instanceID
          $0.namesIdentityChanges = true
          $0.cidrIdentities = cidrIdentities.map(Tessera_Policy_V1_IdentityArrival.init)
        })
      for await event in subscription.events { try await response.write(event) }
      if subscription.lagged {
        logger.warning(
          "policy watch subscriber lagged; ending its stream",
          metadata: ["buffer": "\(events.bufferSize)"])
        throw RPCError(
          code: .resourceExhausted,
          message:
            "subscriber lagged: more than \(events.bufferSize) policy events behind; resubscribe and recompute from a full snapshot"
        )
      }
    }
  }

  /// With identities: which of them the SelectorCache does not hold yet. The
  /// sequence covers the event of every requested identity it does hold
  /// (docs/architecture.md §6, remote ipcache entries).
  public func getEventSequence(
    request: Tessera_Policy_V1_GetEventSequenceRequest, context: ServerContext
  ) async throws -> Tessera_Policy_V1_EventSequence {
    let (sequence, unknown) = events.serialized {
      (
        events.sequence,
        engine.unknownIdentities(among: request.identities.map(NumericIdentity.init(rawValue:)))
      )
    }
    return .with {
      $0.sequence = sequence
      $0.instanceID = events.instanceID
      $0.unknownIdentities = unknown.map(\.rawValue).sorted()
    }
  }
}
