import Foundation
import Testing
import TesseraCore

@testable import DatapathService

/// ns per packet of the endpoint programs on every path, with
/// BPF_PROG_TEST_RUN, in the setting of tessera-bench's `datapathFigures`
/// (20 endpoints of 1,000 policy entries). Opt-in, as it only prints:
///
///     TESSERA_BPF_BENCH=1 [TESSERA_BPF_OBJECT=variant.o] swift test --filter BPFDatapathBenchmark
///
/// Paths measured with `repeat` run the same frame many times, so only a
/// path that leaves no state (established, reply, denied, ARP) can be timed
/// that way; a new allowed flow creates a conntrack entry, so it is timed one
/// run at a time over distinct flows (median; the per-run overhead is
/// estimated by the same measurement of an established flow and subtracted
/// in the "net estimate").
@Suite("eBPF datapath benchmark", .serialized, .enabled(if: ProcessInfo.processInfo.environment["TESSERA_BPF_BENCH"] != nil && BPFTestEnvironment.available))
struct BPFDatapathBenchmark {
  static func thousandEntries() -> [PolicyEntry] {
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

  @Test("ns per packet by path")
  func nsPerPacket() throws {
    let rounds = Int(ProcessInfo.processInfo.environment["TESSERA_BPF_BENCH_ROUNDS"] ?? "") ?? 5
    try BPFTestEnvironment.withBackend { backend, _ in
      let datapath = try Datapath(backend: backend)
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("10.250.1.1/32")!, identity: NumericIdentity(10_005)),
        IPCacheEntry(prefix: IPPrefix("fd00:250::1:1/128")!, identity: NumericIdentity(10_005)),
      ])
      for id in 1...20 {
        _ = try datapath.realize(
          DatapathEndpoint(
            id: UInt64(id), hostInterface: "", ips: [IPPrefix("10.250.0.\(id)")!], identity: NumericIdentity(20_000),
            policy: EndpointPolicy(revision: 1, ingressEnforced: true, egressEnforced: true, entries: Self.thousandEntries())))
      }
      let repeats: UInt32 = 200_000
      let established = Packet.ipv4("10.250.1.1", "10.250.0.1", proto: Packet.tcp, sport: 50000, dport: 8005)
      let reply = Packet.ipv4("10.250.0.1", "10.250.1.1", proto: Packet.tcp, sport: 8005, dport: 50000, tcpFlags: Packet.ack)
      let established6 = Packet.ipv6TCP("fd00:250::1:1", "fd00:250::1", sport: 50000, dport: 8005)
      let denied = Packet.ipv4("10.250.1.1", "10.250.0.1", proto: Packet.tcp, sport: 50001, dport: 9999)
      #expect(try backend.passes(1, .ingress, established))
      #expect(try backend.passes(1, .egress, reply))
      #expect(try backend.passes(1, .ingress, established6))
      #expect(try !backend.passes(1, .ingress, denied))

      func best(_ direction: TrafficDirection, _ packet: [UInt8]) throws -> UInt64 {
        var values: [UInt64] = []
        for _ in 0..<rounds { values.append(UInt64(try backend.runProgram(endpointID: 1, direction: direction, packet: packet, repeat: repeats).nanoseconds)) }
        return values.sorted()[values.count / 2]
      }
      var sport: UInt16 = 1024
      /// The lowest of `rounds` medians of 4,000 single runs (new flows, or
      /// the established one), alternating so that both see the same load.
      func single() throws -> (newFlow: UInt64, established: UInt64) {
        var newFlowMedians: [UInt64] = []
        var establishedMedians: [UInt64] = []
        for _ in 0..<rounds {
          var fresh: [UInt64] = []
          var known: [UInt64] = []
          for _ in 0..<4_000 {
            sport = sport == UInt16.max ? 1024 : sport + 1
            let packet = Packet.ipv4("10.250.1.1", "10.250.0.1", proto: Packet.tcp, sport: sport, dport: 8005)
            let run = try backend.runProgram(endpointID: 1, direction: .ingress, packet: packet, repeat: 1)
            #expect(run.passed)
            fresh.append(UInt64(run.nanoseconds))
            known.append(UInt64(try backend.runProgram(endpointID: 1, direction: .ingress, packet: established, repeat: 1).nanoseconds))
          }
          newFlowMedians.append(fresh.sorted()[fresh.count / 2])
          establishedMedians.append(known.sorted()[known.count / 2])
        }
        return (newFlowMedians.min()!, establishedMedians.min()!)
      }
      let hit = try best(.ingress, established)
      let singles = try single()
      let rows: [(String, UInt64)] = [
        ("established (ct hit), repeat", hit),
        ("reply (ct reverse hit), repeat", try best(.egress, reply)),
        ("established IPv6, repeat", try best(.ingress, established6)),
        ("new flow denied, repeat", try best(.ingress, denied)),
        ("ARP pass-through, repeat", try best(.ingress, Packet.arp())),
        ("new flow allowed, 1 run", singles.newFlow),
        ("established, 1 run", singles.established),
        // The timer overhead of a single run is what the established flow
        // shows above its repeated figure.
        ("new flow allowed, net estimate", singles.newFlow + hit - min(singles.established, singles.newFlow + hit)),
      ]
      let object = ProcessInfo.processInfo.environment["TESSERA_BPF_OBJECT"] ?? BPFTestEnvironment.objectPath ?? "?"
      print("BPF bench (\(object)):")
      for (label, ns) in rows { print("  \(label.padding(toLength: 34, withPad: " ", startingAt: 0)) \(ns) ns") }
    }
  }
}
