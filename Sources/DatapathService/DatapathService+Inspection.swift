import GRPCCore
import TesseraCore
import TesseraProto

extension DatapathServiceHandler {
  public func listConntrack(
    request: Tessera_Datapath_V1_ListConntrackRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_ListConntrackResponse {
    let entries = try datapath.conntrackEntries()
    // Conntrack timestamps are CLOCK_MONOTONIC, as bpf_ktime_get_ns reports them.
    let now = LibBPF.monotonicNanoseconds
    return .with {
      $0.maxEntries = datapath.conntrackMaxEntries
      $0.entries = entries.map { entry in
        .with {
          $0.source = entry.source
          $0.destination = entry.destination
          $0.sourcePort = UInt32(entry.sourcePort)
          $0.destinationPort = UInt32(entry.destinationPort)
          $0.protocol = Tessera_Common_V1_Protocol(entry.proto)
          $0.endpointID = entry.endpointID
          $0.direction = Tessera_Common_V1_Direction(entry.direction)
          $0.packets = entry.packets
          $0.idleNanoseconds = now > entry.lastSeenNanoseconds ? now - entry.lastSeenNanoseconds : 0
        }
      }
    }
  }

  public func getEndpointCounters(
    request: Tessera_Datapath_V1_GetEndpointCountersRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_EndpointCounters {
    let counters = try datapath.counters(endpointID: request.endpointID)
    return .with {
      $0.endpointID = request.endpointID
      $0.ingressForwarded = counters.ingressForwarded
      $0.ingressDropped = counters.ingressDropped
      $0.egressForwarded = counters.egressForwarded
      $0.egressDropped = counters.egressDropped
      $0.reasons = counters.reasons.map { count in
        .with {
          $0.direction = Tessera_Common_V1_Direction(count.direction)
          $0.reason = count.reason
          $0.packets = count.packets
        }
      }
    }
  }
}
