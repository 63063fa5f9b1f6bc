import CTesseraBPF
import TesseraCore

/// Reading back what the programs wrote: conntrack entries and counters.
extension BPFDatapathBackend {
  /// The conntrack table's capacity, as the kernel reports it.
  public var conntrackMaxEntries: UInt32 { tessera_bpf_map_max_entries(loader.conntrackFD) }

  public func conntrackEntries() throws(DatapathError) -> [ConntrackEntry] {
    let now = LibBPF.monotonicNanoseconds
    var entries: [ConntrackEntry] = []
    for key in try LibBPF.keys(loader.conntrackFD, as: ct_key.self, "listing conntrack") {
      guard
        let entry = try LibBPF.lookup(
          loader.conntrackFD, key, as: ct_entry.self, "reading conntrack"),
        entry.expires_ns > now
      else { continue }
      let family: IPPrefix.Family = key.family == UInt8(TESSERA_FAMILY_V6) ? .v6 : .v4
      var saddr = key.saddr
      var daddr = key.daddr
      var (sport, dport, direction) = (key.sport, key.dport, key.direction)
      // Canonical keys (maps_types.h): shown as the packet that created the entry.
      if entry.flags & UInt32(TESSERA_CT_F_CANONICAL) != 0 {
        direction = entry.direction
        if entry.reversed != 0 {
          swap(&saddr, &daddr)
          swap(&sport, &dport)
        }
      }
      entries.append(
        ConntrackEntry(
          source: Self.addressText(family: family, &saddr),
          destination: Self.addressText(family: family, &daddr),
          sourcePort: sport, destinationPort: dport,
          // Protocols L4Protocol does not name (GRE, ESP, ...) show as ANY.
          proto: L4Protocol(rawValue: key.proto) ?? .any,
          endpointID: key.endpoint_id,
          direction: TrafficDirection(rawValue: direction) ?? .ingress,
          packets: entry.packets_fwd + entry.packets_rev,
          lastSeenNanoseconds: entry.last_seen_ns))
    }
    return entries.sorted {
      ($0.endpointID, $0.source, $0.sourcePort) < ($1.endpointID, $1.source, $1.sourcePort)
    }
  }

  public func counters(endpointID: UInt64) throws(DatapathError) -> EndpointCounters {
    let perReason = try dropAndForwardCounts(endpointID: endpointID)
    var counters = EndpointCounters()
    for (index, packets) in perReason.enumerated() {
      let ingress = index < Int(TESSERA_REASON_MAX.rawValue)
      let reason = UInt32(index % Int(TESSERA_REASON_MAX.rawValue))
      switch (ingress, tessera_reason_is_drop(reason) == 0) {
      case (true, true): counters.ingressForwarded += packets
      case (true, false): counters.ingressDropped += packets
      case (false, true): counters.egressForwarded += packets
      case (false, false): counters.egressDropped += packets
      }
      if packets > 0 {
        counters.reasons.append(
          .init(
            direction: ingress ? .ingress : .egress, reason: Self.reasonNames[Int(reason)],
            packets: packets))
      }
    }
    return counters
  }

  private func dropAndForwardCounts(endpointID: UInt64) throws(DatapathError) -> [UInt64] {
    guard
      let perCPU = try LibBPF.lookupPerCPU(
        loader.metricsFD, endpointID, as: endpoint_metrics.self,
        "reading the counters of endpoint \(endpointID)")
    else {
      throw DatapathError(
        code: .notFound, message: "endpoint \(endpointID) has no counters in the eBPF datapath")
    }
    var totals = [UInt64](repeating: 0, count: 2 * Int(TESSERA_REASON_MAX.rawValue))
    for var cpu in perCPU {
      withUnsafeBytes(of: &cpu.counters) { raw in
        for (i, value) in raw.bindMemory(to: metrics_value.self).enumerated() where i < totals.count
        {
          totals[i] += value.packets
        }
      }
    }
    return totals
  }

  // MARK: Extras (CLI, tests, benchmarks)

  /// Packets per direction and named reason (`forward-policy`, `drop-policy-deny`, …).
  public func reasonCounters(endpointID: UInt64) throws(DatapathError) -> [(
    direction: TrafficDirection, reason: String, packets: UInt64
  )] {
    let perReason = try dropAndForwardCounts(endpointID: endpointID)
    let reasons = Int(TESSERA_REASON_MAX.rawValue)
    return perReason.enumerated().compactMap { index, packets in
      packets == 0
        ? nil : (index < reasons ? .ingress : .egress, Self.reasonNames[index % reasons], packets)
    }
  }

  /// Names of the programs' reasons (`enum tessera_reason`), by number.
  static let reasonNames = [
    "forward-policy", "forward-ct-established", "forward-ct-reply", "forward-non-ip",
    "forward-icmp6-nd",
    "drop-policy-deny", "drop-policy-default", "drop-invalid-packet", "drop-fragment",
    "drop-no-endpoint",
    "drop-ct-create-failed", "drop-missed-tail-call", "drop-invalid-source", "drop-unknown-l3",
    "drop-ipv6-ext-headers", "forward-ct-related", "forward-fragment",
  ]
}
