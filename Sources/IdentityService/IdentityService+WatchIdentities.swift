import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension IdentityServiceHandler {
  /// Subscribes before reading the snapshot, so no change falls between the two.
  public func watchIdentities(
    request: Tessera_Identity_V1_WatchIdentitiesRequest,
    response: RPCWriter<Tessera_Identity_V1_IdentityEvent>, context: ServerContext
  ) async throws {
    try await allocator.events.withSubscriptionForRPC { events in
      let snapshot = try await allocator.identities().map {
        Tessera_Common_V1_Identity($0.identity)
      }
      for chunk in stride(from: 0, to: snapshot.count, by: 1000) {
        try await response.write(
          .with {
            $0.kind = .snapshot
            $0.identities = Array(snapshot[chunk..<min(chunk + 1000, snapshot.count)])
          })
      }
      try await response.write(.with { $0.kind = .snapshotDone })
      for await event in events {
        try await response.write(
          .with {
            switch event {
            case .added(let identities):
              $0.kind = .added
              $0.identities = identities.map(Tessera_Common_V1_Identity.init)
            case .deleted(let identities):
              $0.kind = .deleted
              $0.identities = identities.map(Tessera_Common_V1_Identity.init)
            }
          })
      }
    }
  }
}
