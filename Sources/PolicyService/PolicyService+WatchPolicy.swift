import GRPCCore
import TesseraProto

extension PolicyServiceHandler {
  /// The first event carries the current revision (`all` set); later events are live changes.
  public func watchPolicy(request: Tessera_Policy_V1_WatchPolicyRequest, response: RPCWriter<Tessera_Policy_V1_PolicyEvent>, context: ServerContext) async throws {
    try await events.withSubscriptionForRPC { events in
      try await response.write(.with {
        $0.revision = engine.revision
        $0.all = true
      })
      for await event in events { try await response.write(event) }
    }
  }
}
