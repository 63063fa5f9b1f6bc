import Foundation
import Synchronization
import TesseraCore
import TesseraProto
import Testing

@testable import DatapathService

/// The programs' events (the `tessera_events` ring buffer): what a drop, an
/// allowed connection and its close report, that the other packets of an
/// established flow cost no event, and that a full ring loses events but never packets.
@Suite("eBPF datapath: verdict events", .serialized, .enabled(if: BPFTestEnvironment.available))
struct BPFEventTests {
  let frontend = NumericIdentity(2000)
  let other = NumericIdentity(3000)
  let podIP = "10.0.0.5"

  private func withPod<R>(
    _ body: (BPFDatapathBackend, any DatapathEventReader) throws -> R
  ) throws -> R {
    try BPFTestEnvironment.withBackend { backend, _ in
      let datapath = try Datapath(backend: backend)
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("10.0.1.1/32")!, identity: frontend),
        IPCacheEntry(prefix: IPPrefix("10.0.2.0/24")!, identity: other),
      ])
      _ = try datapath.realize(
        endpoint(
          id: 7, ip: "\(podIP)/32", ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080)),
            PolicyEntry(peer: other, direction: .ingress, proto: .any, ports: .any, verdict: .deny),
          ]))
      let reader = try #require(try backend.makeEventReader())
      while try !reader.read(timeoutMilliseconds: 0).isEmpty {}
      return try body(backend, reader)
    }
  }

  @Test("drops and allowed connections are events with identities, ports, reason and entry kind")
  func verdicts() throws {
    try withPod { backend, reader in
      #expect(
        try backend.passes(
          7, .ingress, Packet.ipv4("10.0.1.1", podIP, proto: Packet.tcp, sport: 41000, dport: 8080))
      )
      // The same connection's next packet is established: no event.
      #expect(
        try backend.passes(
          7, .ingress,
          Packet.ipv4(
            "10.0.1.1", podIP, proto: Packet.tcp, sport: 41000, dport: 8080, tcpFlags: 0x10)))
      #expect(
        try !backend.passes(
          7, .ingress, Packet.ipv4("10.0.2.7", podIP, proto: Packet.tcp, sport: 41001, dport: 8080))
      )
      #expect(
        try !backend.passes(
          7, .ingress, Packet.ipv4("10.0.1.1", podIP, proto: Packet.udp, sport: 41002, dport: 9090))
      )

      let events = try reader.read(timeoutMilliseconds: 1000)
      #expect(events.count == 3)
      guard events.count == 3 else { return }
      let allowed = events[0]
      #expect(allowed.verdict == .forwarded && allowed.reason == "policy")
      #expect(allowed.match == .peerAndPort && !allowed.deniedByEntry)
      #expect(allowed.endpointID == 7 && allowed.direction == .ingress)
      #expect(allowed.source == "10.0.1.1" && allowed.destination == podIP)
      #expect(allowed.sourcePort == 41000 && allowed.destinationPort == 8080)
      #expect(allowed.ipProtocol == Packet.tcp)
      #expect(allowed.sourceIdentity == frontend.rawValue && allowed.destinationIdentity == 1000)
      #expect(abs(allowed.time.timeIntervalSinceNow) < 5)

      let denied = events[1]
      #expect(denied.verdict == .dropped && denied.reason == "policy-deny")
      #expect(denied.match == .peerOnly && denied.deniedByEntry)
      #expect(denied.sourceIdentity == other.rawValue && denied.sourcePort == 41001)

      let defaulted = events[2]
      #expect(defaulted.verdict == .dropped && defaulted.reason == "policy-default")
      #expect(defaulted.match == .defaultVerdict && !defaulted.deniedByEntry)
      #expect(defaulted.ipProtocol == Packet.udp && defaulted.destinationPort == 9090)
      // The peer is looked up for a drop's event even where no entry names a peer.
      #expect(defaulted.sourceIdentity == frontend.rawValue)
      #expect(allowed.state == .new && denied.state == .none)

      // The connection's first FIN is a state change: one event; the second FIN is not.
      let fin = Packet.ipv4(
        "10.0.1.1", podIP, proto: Packet.tcp, sport: 41000, dport: 8080, tcpFlags: 0x11)
      #expect(try backend.passes(7, .ingress, fin))
      #expect(try backend.passes(7, .ingress, fin))
      let closing = try reader.read(timeoutMilliseconds: 1000)
      #expect(closing.count == 1)
      #expect(closing.first?.state == .closing && closing.first?.reason == "ct-established")
      #expect(closing.first?.verdict == .forwarded && closing.first?.sourcePort == 41000)
      #expect(
        closing.first?.sourceIdentity == frontend.rawValue
          && closing.first?.destinationIdentity == 1000)
    }
  }

  @Test("a TCP segment that opens nothing passes without an event; the SYN of a connection has one")
  func untrackedSegmentsAreNotReported() throws {
    try withPod { backend, reader in
      // Egress is not enforced: the segments pass, but none opens a connection.
      for flags: UInt8 in [0x10, 0x11, 0x12, 0x10] {
        #expect(
          try backend.passes(
            7, .egress,
            Packet.ipv4(
              podIP, "10.0.2.7", proto: Packet.tcp, sport: 8080, dport: 42000, tcpFlags: flags)
          ))
      }
      #expect(
        try backend.passes(
          7, .egress, Packet.ipv4(podIP, "10.0.2.7", proto: Packet.tcp, sport: 42001, dport: 443)))
      let events = try reader.read(timeoutMilliseconds: 1000)
      #expect(events.count == 1)
      #expect(events.first?.state == .new && events.first?.sourcePort == 42001)
    }
  }

  @Test("a connection picked up mid-stream (both halves allowed) is reported once, as new")
  func pickedUpConnectionIsReportedOnce() throws {
    try withPod { backend, reader in
      for _ in 0..<3 {
        #expect(
          try backend.passes(
            7, .ingress,
            Packet.ipv4(
              "10.0.1.1", podIP, proto: Packet.tcp, sport: 41500, dport: 8080, tcpFlags: 0x10)))
      }
      let events = try reader.read(timeoutMilliseconds: 1000)
      #expect(events.count == 1)
      #expect(events.first?.state == .new && events.first?.sourcePort == 41500)
    }
  }

  @Test("ICMP events carry the message's type; other protocols' carry none")
  func icmpType() throws {
    try withPod { backend, reader in
      let timestamp = Packet.ipv4Frame(
        "10.0.1.1", podIP, proto: Packet.icmp,
        payload: Packet.icmpMessage(type: 13, code: 0, rest: [0, 1, 0, 1]))
      #expect(try !backend.passes(7, .ingress, timestamp))
      #expect(
        try !backend.passes(7, .ingress, Packet.icmpEcho("10.0.1.1", podIP, id: 9, reply: false)))
      #expect(
        try !backend.passes(
          7, .ingress, Packet.ipv4("10.0.1.1", podIP, proto: Packet.tcp, sport: 41001, dport: 9)))
      let events = try reader.read(timeoutMilliseconds: 1000)
      #expect(events.map(\.icmpType) == [13, 8, nil])
      #expect(events.first.map(Tessera_Datapath_V1_FlowEvent.init)?.icmpType == 13)
      #expect(events.last.map(Tessera_Datapath_V1_FlowEvent.init)?.hasIcmpType == false)
    }
  }

  @Test("drops before policy (a forged source) name their reason and the forged address")
  func forgedSource() throws {
    try withPod { backend, reader in
      #expect(
        try !backend.passes(
          7, .egress,
          Packet.ipv4("10.0.1.1", "10.0.2.7", proto: Packet.tcp, sport: 42000, dport: 80)))
      let events = try reader.read(timeoutMilliseconds: 1000)
      #expect(events.count == 1)
      #expect(events.first?.reason == "invalid-source")
      #expect(events.first?.source == "10.0.1.1" && events.first?.direction == .egress)
      #expect(events.first?.match == FlowEvent.PolicyMatch.none)
    }
  }

  @Test("a reader asleep is woken once a batch of events is pending")
  func batchWakesReader() throws {
    try withPod { backend, reader in
      let woken = DispatchSemaphore(value: 0)
      let firstRead = Mutex<(events: Int, took: Duration)?>(nil)
      DispatchQueue.global().async {
        let start = ContinuousClock.now
        let events = (try? reader.read(timeoutMilliseconds: 12_000))?.count ?? -1
        let took = ContinuousClock.now - start
        firstRead.withLock { $0 = (events, took) }
        woken.signal()
      }
      // Let the reader go to sleep in its poll, then write more than the wake-up
      // threshold (1/16 of the 1 MiB ring, under 1,000 events) in one burst.
      Thread.sleep(forTimeInterval: 0.3)
      _ = try backend.runProgram(
        endpointID: 7, direction: .ingress,
        packet: Packet.ipv4("10.0.2.7", podIP, proto: Packet.udp, sport: 43001, dport: 53),
        repeat: 2_000)
      // The read always ends (12 s at the latest) before the reader is closed.
      #expect(woken.wait(timeout: .now() + 20) == .success)
      let read = try #require(firstRead.withLock { $0 })
      #expect(read.events > 0)
      #expect(read.took < .seconds(10), "the reader slept through a batch")
    }
  }

  @Test("a full ring loses events, never packets, and counts what it lost")
  func overflow() throws {
    try withPod { backend, reader in
      let packets: UInt32 = 20_000
      let run = try backend.runProgram(
        endpointID: 7, direction: .ingress,
        packet: Packet.ipv4("10.0.2.7", podIP, proto: Packet.udp, sport: 43000, dport: 53),
        repeat: packets)
      #expect(!run.passed)
      let dropped = try backend.reasonCounters(endpointID: 7).filter {
        $0.direction == .ingress && $0.reason == "drop-policy-deny"
      }.map(\.packets).reduce(0, +)
      #expect(dropped == UInt64(packets))
      var read = 0
      while case let batch = try reader.read(timeoutMilliseconds: 100), !batch.isEmpty {
        read += batch.count
      }
      let lost = reader.lostInKernel
      #expect(lost > 0, "1 MiB holds fewer than \(packets) events")
      #expect(UInt64(read) + lost == UInt64(packets))
    }
  }
}
