import Foundation
import Testing
import TesseraCore

@testable import DatapathService

extension BPFDatapathBackendTests {
/// Measurements reported by the datapath issue: nanoseconds per packet of the
/// policy program (BPF_PROG_TEST_RUN with repeat) and the time to realise an
/// endpoint (programs + maps + attach) at 1,000 policy entries. Nested in the
/// serialized suite so that nothing else runs meanwhile.
@Suite("eBPF datapath measurements")
struct Measurements {
  private static func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
  }

  private static func milliseconds(_ start: UInt64) -> Double { Double(LibBPF.monotonicNanoseconds - start) / 1e6 }

  /// 1,000 entries: 250 peers × (TCP port, UDP range, SCTP port, one deny).
  private static func thousandEntries() -> [PolicyEntry] {
    (0..<250).flatMap { i -> [PolicyEntry] in
      let peer = NumericIdentity(UInt32(10_000 + i))
      return [
        PolicyEntry(peer: peer, direction: .ingress, proto: .tcp, ports: PortRange(single: UInt16(8000 + i))),
        PolicyEntry(peer: peer, direction: .ingress, proto: .udp, ports: PortRange(UInt16(20_000 + i * 4), UInt16(20_000 + i * 4 + 3))),
        PolicyEntry(peer: peer, direction: .egress, proto: .sctp, ports: PortRange(single: UInt16(3000 + i))),
        PolicyEntry(peer: peer, direction: .egress, proto: .tcp, ports: PortRange(single: 25), verdict: .deny),
      ]
    }
  }

  @Test("ns per packet (BPF_PROG_TEST_RUN, repeat 200000)")
  func nanosecondsPerPacket() throws {
    try BPFTestEnvironment.withBackend { backend, _ in
      let datapath = try Datapath(backend: backend)
      try datapath.upsertIPCache([IPCacheEntry(prefix: IPPrefix("10.0.1.1/32")!, identity: NumericIdentity(10_005))])
      _ = try datapath.realize(endpoint(id: 1, ingressEnforced: true, egressEnforced: true, entries: Self.thousandEntries()))
      let repeats: UInt32 = 200_000
      let established = Packet.ipv4("10.0.1.1", "10.0.0.5", proto: Packet.tcp, sport: 50000, dport: 8005)
      let cases: [(String, [UInt8])] = [
        // The first run creates the conntrack entry; the rest are established.
        ("established flow (conntrack hit)", established),
        ("new flow, denied by default (ct miss + ipcache + 8 policy lookups)", Packet.ipv4("10.0.1.1", "10.0.0.5", proto: Packet.tcp, sport: 50001, dport: 9999)),
        ("new flow, denied by a deny entry", Packet.ipv4("10.0.0.5", "10.0.1.1", proto: Packet.tcp, sport: 50002, dport: 25)),
        ("non-IP (ARP)", Packet.arp()),
      ]
      for (name, packet) in cases {
        let run = try backend.runProgram(endpointID: 1, direction: packet[14 + 12] == 10 && packet[14 + 15] == 5 ? .egress : .ingress, packet: packet, repeat: repeats)
        print("datapath benchmark: \(name): \(run.nanoseconds) ns/packet (\(run.passed ? "pass" : "drop"))")
      }
    }
  }

  @Test("realise at 1,000 entries; create p50/p99 with attach")
  func realizeTimes() throws {
    try BPFTestEnvironment.withDummyDevices(30) { devices in
      try BPFTestEnvironment.withBackend { backend, _ in
        let datapath = try Datapath(backend: backend)
        let entries = Self.thousandEntries()

        // One endpoint with 1,000 entries, attached. (Endpoints are built
        // before the clock starts: sorting 1,000 entries is not realisation.)
        let first = endpoint(id: 1, device: devices[0], ingressEnforced: true, entries: entries)
        var start = LibBPF.monotonicNanoseconds
        _ = try datapath.realize(first)
        let create1000 = Self.milliseconds(start)
        let load = Double(backend.lastProgramLoadNanoseconds) / 1e6

        // Incremental: one new peer (SelectorCache delta).
        let plusOne = endpoint(
          id: 1, device: devices[0], revision: 2, ingressEnforced: true,
          entries: entries + [PolicyEntry(peer: NumericIdentity(99_999), direction: .ingress, proto: .tcp, ports: PortRange(single: 80))])
        start = LibBPF.monotonicNanoseconds
        _ = try datapath.realize(plusOne)
        let incremental = Self.milliseconds(start)

        // Full rewrite: every entry changes port.
        let shifted = entries.map { entry -> PolicyEntry in
          var e = entry
          if e.proto == .tcp && e.direction == .ingress { e.ports = PortRange(single: e.ports.first &+ 1000) }
          return e
        }
        let rewritten = endpoint(id: 1, device: devices[0], revision: 3, ingressEnforced: true, entries: shifted)
        start = LibBPF.monotonicNanoseconds
        _ = try datapath.realize(rewritten)
        let rewrite250 = Self.milliseconds(start)

        start = LibBPF.monotonicNanoseconds
        let readBack = try backend.policyEntries(endpointID: 1)
        let readTime = Self.milliseconds(start)
        #expect(readBack.count == rewritten.policy.entries.count)

        // Creates of typical endpoints (10 entries), each attached to its own device.
        var creates: [Double] = []
        var loads: [Double] = []
        for (i, device) in devices.dropFirst().enumerated() {
          let small = endpoint(id: UInt64(100 + i), ip: "10.0.9.\(i + 1)/32", device: device, ingressEnforced: true, entries: Array(entries.prefix(10)))
          start = LibBPF.monotonicNanoseconds
          _ = try datapath.realize(small)
          creates.append(Self.milliseconds(start))
          loads.append(Double(backend.lastProgramLoadNanoseconds) / 1e6)
        }
        var removes: [Double] = []
        for i in 0..<creates.count {
          start = LibBPF.monotonicNanoseconds
          _ = try datapath.removeEndpoint(id: UInt64(100 + i))
          removes.append(Self.milliseconds(start))
        }
        func f(_ x: Double) -> String { String(format: "%.2f ms", x) }
        print("datapath benchmark: create with 1,000 entries + attach: \(f(create1000)) (program load \(f(load)))")
        print("datapath benchmark: incremental realise, +1 entry on 1,000: \(f(incremental))")
        print("datapath benchmark: realise changing 250 of 1,000 entries: \(f(rewrite250))")
        print(
          "datapath benchmark: create (10 entries, attach) x\(creates.count): p50 \(f(Self.percentile(creates, 0.5))) p99 \(f(Self.percentile(creates, 0.99))); program load p50 \(f(Self.percentile(loads, 0.5))) p99 \(f(Self.percentile(loads, 0.99)))"
        )
        print("datapath benchmark: policyEntries read back (\(readBack.count) entries): \(f(readTime))")
        print("datapath benchmark: remove x\(removes.count): p50 \(f(Self.percentile(removes, 0.5))) p99 \(f(Self.percentile(removes, 0.99)))")
        #expect(Self.percentile(creates, 0.99) < 20)
      }
    }
  }
}
}
