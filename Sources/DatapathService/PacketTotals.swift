import Metrics
import Synchronization
import TesseraCore

/// Turns the kernel's per-endpoint packet counters, which start at zero with
/// each endpoint and go when it goes, into Prometheus counters that never
/// decrease: each sample adds what every endpoint counted since the last one
/// (`tessera_datapath_packets_total{direction, verdict, reason}`). Packets an
/// endpoint counted after the last sample before its deletion are not added.
public final class PacketTotals: Sendable {
  private struct Key: Hashable {
    var endpointID: UInt64
    var direction: TrafficDirection
    var reason: String
  }

  private let seen = Mutex<[Key: UInt64]>([:])
  private let lostEvents = Mutex<UInt64>(0)

  public init() {}

  /// Adds what the datapath counted since the previous sample.
  public func sample(_ datapath: Datapath, eventsLost: UInt64 = 0) {
    var current: [Key: UInt64] = [:]
    for endpoint in datapath.endpoints() {
      guard let counters = try? datapath.counters(endpointID: endpoint.id) else { continue }
      for count in counters.reasons {
        current[Key(endpointID: endpoint.id, direction: count.direction, reason: count.reason)] =
          count.packets
      }
    }
    let increments = seen.withLock { seen in
      defer { seen = current }
      return current.compactMap { key, packets -> (Key, UInt64)? in
        // Fewer than before: the id was reused by a new endpoint; count from zero.
        let previous = seen[key].map { $0 <= packets ? $0 : 0 } ?? 0
        return packets > previous ? (key, packets - previous) : nil
      }
    }
    for (key, delta) in increments {
      let dropped = key.reason.hasPrefix("drop-")
      Counter(
        label: "tessera_datapath_packets_total",
        dimensions: [
          ("direction", key.direction.description), ("verdict", dropped ? "dropped" : "forwarded"),
          ("reason", String(key.reason.drop(while: { $0 != "-" }).dropFirst())),
        ]
      ).increment(by: Int64(clamping: delta))
    }
    let newlyLost = lostEvents.withLock { last in
      defer { last = max(last, eventsLost) }
      return eventsLost > last ? eventsLost - last : 0
    }
    if newlyLost > 0 {
      Counter(label: "tessera_datapath_events_lost_total").increment(by: Int64(clamping: newlyLost))
    }
  }
}
