import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension DatapathServiceHandler {
  public func realizeEndpointPolicy(
    request: Tessera_Datapath_V1_RealizeEndpointPolicyRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_RealizeEndpointPolicyResponse {
    guard request.endpointID != 0 else {
      throw RPCError(code: .invalidArgument, message: "endpoint_id must be set")
    }
    guard request.hasPolicy else {
      throw RPCError(code: .invalidArgument, message: "policy must be set")
    }
    // Only the endpoint service knows the ports behind a name; a row left unresolved here
    // would silently allow or deny nothing.
    guard request.policy.namedPortEntries.isEmpty else {
      throw RPCError(
        code: .invalidArgument,
        message: "policy has named-port rows: the endpoint service resolves them before realising")
    }
    guard request.hostInterface.utf8.count < 16, !request.hostInterface.contains("/") else {
      throw RPCError(
        code: .invalidArgument, message: "'\(request.hostInterface)' is not a valid interface name")
    }
    let ips = try request.ips.map { text throws(RPCError) in try IPPrefix(parsing: text) }
    let wanted = DatapathEndpoint(
      id: request.endpointID, hostInterface: request.hostInterface, ips: ips,
      identity: NumericIdentity(request.identity), policy: try EndpointPolicy(proto: request.policy)
    )
    let realization = try datapath.realize(wanted)
    logger.debug(
      "realized endpoint policy",
      metadata: [
        "endpoint.id": "\(request.endpointID)", "revision": "\(realization.realizedRevision)",
        "written": "\(realization.entriesWritten)", "deleted": "\(realization.entriesDeleted)",
      ])
    return .with {
      $0.realizedRevision = realization.realizedRevision
      $0.entriesWritten = UInt32(clamping: realization.entriesWritten)
      $0.entriesDeleted = UInt32(clamping: realization.entriesDeleted)
    }
  }

  public func removeEndpoint(
    request: Tessera_Datapath_V1_RemoveEndpointRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_RemoveEndpointResponse {
    let existed = try datapath.removeEndpoint(id: request.endpointID)
    return .with { $0.existed = existed }
  }
}
