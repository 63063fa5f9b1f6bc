import GRPCCore
import TesseraCore
import TesseraProto

extension DatapathServiceHandler {
  /// At most this many buffered events per request (the buffer's size anyway).
  static let observeLimit = 100_000

  public func observeFlows(
    request: Tessera_Datapath_V1_ObserveFlowsRequest,
    response: RPCWriter<Tessera_Datapath_V1_FlowEvent>, context: ServerContext
  ) async throws {
    let filter = FlowFilter(request.filter)
    try await flows.observe(
      last: min(Int(request.last), Self.observeLimit), matching: filter, follow: request.follow
    ) { event in
      try await response.write(Tessera_Datapath_V1_FlowEvent(event))
    }
  }

  public func getFlowStats(
    request: Tessera_Datapath_V1_GetFlowStatsRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_FlowStats {
    let statistics = flows.statistics
    return .with {
      $0.supported = statistics.supported
      $0.received = statistics.received
      $0.lost = statistics.lostInKernel
      $0.buffered = UInt32(clamping: statistics.buffered)
      $0.capacity = UInt32(clamping: statistics.capacity)
    }
  }
}
