import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// Keeps the SelectorCache in line with the identity service (docs/architecture.md §4)
/// by following its `WatchIdentities` stream: the snapshot first (identities no
/// longer there are dropped), then live additions and deletions. After any
/// interruption it reconnects, possibly to another replica, and resynchronises
/// from a fresh snapshot, so no change is lost. This is what lets several
/// policy-service replicas serve one cluster; the identity service's pushes
/// (`UpdateIdentities`) to a policy service on its own node remain, and either
/// path may bring an identity first.
public struct IdentityFollower<Transport: ClientTransport>: Sendable {
  private let client: Tessera_Identity_V1_IdentityService.Client<Transport>
  private let handler: PolicyServiceHandler
  private let logger: Logger

  public init(client: GRPCClient<Transport>, handler: PolicyServiceHandler, logger: Logger) {
    self.client = .init(wrapping: client)
    self.handler = handler
    self.logger = logger
  }

  /// Follows until cancelled; `onSynced` runs once, after the first complete snapshot.
  public func run(onSynced: @escaping @Sendable () async -> Void) async {
    let controller = Controller("identity-watch")
    var backoff = Backoff(initial: .milliseconds(20), maximum: .seconds(1))
    var synced = false
    while !Task.isCancelled {
      do {
        let wasSynced = synced
        synced = try await client.watchIdentities(.init()) { response in
          var snapshot: [SecurityIdentity] = []
          var synced = wasSynced
          for try await event in response.messages {
            switch event.kind {
            case .snapshot:
              snapshot += try event.identities.map { identity throws(RPCError) in
                try SecurityIdentity(proto: identity)
              }
            case .snapshotDone:
              let stale = handler.engine.allocatedIdentities().subtracting(snapshot.map(\.id))
              _ = handler.identitiesChanged(added: snapshot, deleted: Array(stale))
              logger.info(
                "SelectorCache synced with the identity service",
                metadata: [
                  "identities": "\(snapshot.count)", "dropped": "\(stale.count)",
                ])
              snapshot = []
              controller.succeeded()
              if !synced {
                synced = true
                await onSynced()
              }
            case .added:
              let added = try event.identities.map { identity throws(RPCError) in
                try SecurityIdentity(proto: identity)
              }
              _ = handler.identitiesChanged(added: added, deleted: [])
            case .deleted:
              _ = handler.identitiesChanged(
                added: [], deleted: event.identities.map { NumericIdentity(rawValue: $0.id) })
            case .unspecified, .UNRECOGNIZED:
              break
            }
          }
          return synced
        }
        backoff.reset()
      } catch {
        controller.failed(error)
        logger.debug("identity watch interrupted; reconnecting", metadata: ["error": "\(error)"])
      }
      try? await backoff.sleep()
    }
  }
}
