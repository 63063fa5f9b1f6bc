import GRPCCore
import GRPCNIOTransportHTTP2
import TesseraCore
import TesseraProto
import TesseraRuntime

/// Announces identity changes to the policy service over gRPC.
public struct PolicyServiceSink: IdentityChangeSink {
  private let client: Tessera_Policy_V1_PolicyService.Client<HTTP2ClientTransport.Posix>
  private let timeout: Duration

  public init(client: GRPCClient<HTTP2ClientTransport.Posix>, timeout: Duration = .seconds(2)) {
    self.client = .init(wrapping: client)
    self.timeout = timeout
  }

  public func identitiesChanged(added: [SecurityIdentity], deleted: [NumericIdentity]) async throws
    -> String
  {
    let request = Tessera_Policy_V1_UpdateIdentitiesRequest.with {
      $0.added = added.map(Tessera_Common_V1_Identity.init)
      $0.deleted = deleted.map(\.rawValue)
    }
    return try await client.updateIdentities(request, options: .failFast(timeout: timeout))
      .instanceID
  }
}

/// For an identity service with no policy service beside it (`--policy-service none`):
/// announces nothing. Policy services then learn identities from `WatchIdentities`
/// alone, and endpointd waits until its policy service holds an identity
/// (`GetEventSequence`) before using it, as it does for any replica that learns late.
public struct NoPolicyServiceSink: IdentityChangeSink {
  public init() {}

  public func identitiesChanged(added: [SecurityIdentity], deleted: [NumericIdentity]) async throws
    -> String
  { "none" }
}
