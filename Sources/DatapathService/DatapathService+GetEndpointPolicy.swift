import GRPCCore
import TesseraCore
import TesseraProto

extension DatapathServiceHandler {
  /// Reads the entries back from the backend's real map, not from memory,
  /// with the packets and bytes counted on each.
  public func getEndpointPolicy(
    request: Tessera_Datapath_V1_GetEndpointPolicyRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_DatapathEndpoint {
    guard let endpoint = datapath.endpoint(id: request.endpointID) else {
      throw RPCError(code: .notFound, message: "no endpoint \(request.endpointID) in the datapath")
    }
    return .init(
      endpoint, entries: try datapath.countedPolicyEntries(endpointID: request.endpointID))
  }

  public func listEndpoints(
    request: Tessera_Datapath_V1_ListDatapathEndpointsRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_ListDatapathEndpointsResponse {
    .with { $0.endpoints = datapath.endpoints().map { Tessera_Datapath_V1_DatapathEndpoint($0) } }
  }
}
