import Foundation
import TesseraCore
import Testing

@testable import DatapathService

/// ns/packet of the handlers on established flows, both directions
/// (BPF_PROG_TEST_RUN with repeat). Printed, not asserted: a shared CI
/// machine's timings are too noisy for a bound. Runs only with
/// TESSERA_BPF_BENCH=1 (TESSERA_BPF_OBJECT picks the object to measure).
@Suite(
  "eBPF per-packet cost", .serialized,
  .enabled(
    if: ProcessInfo.processInfo.environment["TESSERA_BPF_BENCH"] == "1"
      && BPFTestEnvironment.available))
struct BPFPacketCostTests {
  @Test("established flows, egress and ingress")
  func establishedCost() throws {
    try BPFTestEnvironment.withBackend { backend, _ in
      let datapath = try Datapath(backend: backend)
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("10.0.2.0/24")!, identity: NumericIdentity(3000))
      ])
      _ = try datapath.realize(
        endpoint(
          id: 1, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: NumericIdentity(3000), direction: .egress, proto: .tcp,
              ports: PortRange(single: 80)),
            PolicyEntry(
              peer: NumericIdentity(3000), direction: .ingress, proto: .tcp,
              ports: PortRange(single: 8080)),
          ]))
      let out = Packet.ipv4("10.0.0.5", "10.0.2.7", proto: Packet.tcp, sport: 40000, dport: 80)
      let into = Packet.ipv4("10.0.2.7", "10.0.0.5", proto: Packet.tcp, sport: 40001, dport: 8080)
      #expect(try backend.passes(1, .egress, out))
      #expect(try backend.passes(1, .ingress, into))
      let ack = Packet.ipv4(
        "10.0.0.5", "10.0.2.7", proto: Packet.tcp, sport: 40000, dport: 80, tcpFlags: Packet.ack)
      let ackIn = Packet.ipv4(
        "10.0.2.7", "10.0.0.5", proto: Packet.tcp, sport: 40001, dport: 8080, tcpFlags: Packet.ack)
      let replyIn = Packet.ipv4(
        "10.0.2.7", "10.0.0.5", proto: Packet.tcp, sport: 80, dport: 40000, tcpFlags: Packet.ack)
      var rows: [(String, [UInt32])] = []
      for (name, direction, packet) in [
        ("egress established", TrafficDirection.egress, ack),
        ("ingress established", .ingress, ackIn),
        ("ingress reply", .ingress, replyIn),
      ] {
        var samples: [UInt32] = []
        for _ in 0..<5 {
          let run = try backend.runProgram(
            endpointID: 1, direction: direction, packet: packet, repeat: 200_000)
          #expect(run.passed)
          samples.append(run.nanoseconds)
        }
        rows.append((name, samples.sorted()))
      }
      for (name, samples) in rows {
        print("bpf-cost: \(name): median \(samples[samples.count / 2]) ns/packet (runs \(samples))")
      }
    }
  }
}
