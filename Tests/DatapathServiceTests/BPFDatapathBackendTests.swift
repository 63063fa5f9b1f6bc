import CTesseraBPF
import Foundation
import TesseraCore
import Testing

@testable import DatapathService

private let frontend = NumericIdentity(2000)
private let other = NumericIdentity(3000)
private let frontendIP = "10.0.1.1"
private let otherIP = "10.0.2.7"
private let worldIP = "198.51.100.1"
private let podIP = "10.0.0.5"

/// Programs run on crafted packets with BPF_PROG_TEST_RUN; needs root,
/// bpffs and the object (skipped with the reason printed otherwise).
@Suite("eBPF datapath", .serialized, .enabled(if: BPFTestEnvironment.available))
struct BPFDatapathBackendTests {
  /// A datapath over a fresh backend with the two peers in the ipcache.
  private func withDatapath<R>(_ body: (Datapath, BPFDatapathBackend) throws -> R) throws -> R {
    try BPFTestEnvironment.withBackend { backend, _ in
      let datapath = try Datapath(backend: backend)
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("\(frontendIP)/32")!, identity: frontend),
        IPCacheEntry(prefix: IPPrefix("10.0.2.0/24")!, identity: other),
      ])
      return try body(datapath, backend)
    }
  }

  @Test("allowed and denied by identity, port and protocol")
  func identityPortProtocol() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        endpoint(
          id: 1, ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
          ]))
      #expect(
        try backend.passes(
          1, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 40001, dport: 8080))
      )
      #expect(
        try !backend.passes(
          1, .ingress, Packet.ipv4(otherIP, podIP, proto: Packet.tcp, sport: 40002, dport: 8080)))
      #expect(
        try !backend.passes(
          1, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 40003, dport: 9090))
      )
      #expect(
        try !backend.passes(
          1, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.udp, sport: 40004, dport: 8080))
      )
      #expect(
        try !backend.passes(1, .ingress, Packet.icmpEcho(frontendIP, podIP, id: 7, reply: false)))
      // Egress is not enforced.
      #expect(
        try backend.passes(
          1, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 40005, dport: 53)))
      // Non-IP passes.
      #expect(try backend.passes(1, .ingress, Packet.arp()))
    }
  }

  @Test("port ranges are inclusive; protocol ANY covers portless protocols")
  func rangesAndAny() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        endpoint(
          id: 2, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .egress, proto: .udp, ports: PortRange(8000, 8100)),
            PolicyEntry(peer: other, direction: .egress, proto: .any, ports: .any),
          ]))
      var sport: UInt16 = 41000
      func out(_ ip: String, _ proto: UInt8, _ port: UInt16) throws -> Bool {
        sport += 1
        return try backend.passes(
          2, .egress, Packet.ipv4(podIP, ip, proto: proto, sport: sport, dport: port))
      }
      #expect(try !out(frontendIP, Packet.udp, 7999))
      #expect(try out(frontendIP, Packet.udp, 8000))
      #expect(try out(frontendIP, Packet.udp, 8050))
      #expect(try out(frontendIP, Packet.udp, 8100))
      #expect(try !out(frontendIP, Packet.udp, 8101))
      #expect(try !out(frontendIP, Packet.tcp, 8050))
      #expect(try out(otherIP, Packet.sctp, 9))
      #expect(try out(otherIP, Packet.icmp, 0))
      #expect(try !out(worldIP, Packet.icmp, 0))
      #expect(
        try backend.passes(
          2, .egress, Packet.ipv6TCP("fd00::5", "fd00::9", sport: 40000, dport: 80)) == false)
    }
  }

  @Test("deny wins, even over a more specific allow inside a deny range")
  func denyPrecedence() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        endpoint(
          id: 3, ingressEnforced: true,
          entries: [
            PolicyEntry(peer: .unknown, direction: .ingress, proto: .tcp, ports: .any),
            PolicyEntry(
              peer: other, direction: .ingress, proto: .tcp, ports: PortRange(80, 90),
              verdict: .deny),
            // A wide deny for every peer with a narrower allow for frontend inside it.
            PolicyEntry(
              peer: .unknown, direction: .ingress, proto: .tcp, ports: PortRange(1000, 2000),
              verdict: .deny),
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 1500)),
            // Same peer and protocol: a deny range around a more specific allow.
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .udp, ports: PortRange(5000, 5999),
              verdict: .deny),
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .udp, ports: PortRange(single: 5353)),
            // A deny for ANY protocol beats a TCP allow.
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .any, ports: PortRange(single: 7000),
              verdict: .deny),
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 7000)),
          ]))
      var sport: UInt16 = 42000
      func into(_ ip: String, _ proto: UInt8, _ port: UInt16) throws -> Bool {
        sport += 1
        return try backend.passes(
          3, .ingress, Packet.ipv4(ip, podIP, proto: proto, sport: sport, dport: port))
      }
      #expect(try into(otherIP, Packet.tcp, 79))
      #expect(try !into(otherIP, Packet.tcp, 80))
      #expect(try !into(otherIP, Packet.tcp, 90))
      #expect(try into(frontendIP, Packet.tcp, 85))
      #expect(try !into(frontendIP, Packet.tcp, 1500))
      #expect(try !into(frontendIP, Packet.tcp, 1000))
      #expect(try into(frontendIP, Packet.tcp, 2001))
      #expect(try !into(frontendIP, Packet.udp, 5353))
      #expect(try !into(frontendIP, Packet.tcp, 7000))
    }
  }

  @Test(
    "the programs skip only the policy lookups no entry can answer, as entries of new kinds come and go"
  )
  func policyKinds() throws {
    try withDatapath { datapath, backend in
      var sport: UInt16 = 48000
      func into(_ ip: String, _ proto: UInt8, _ port: UInt16) throws -> Bool {
        sport += 1
        return try backend.passes(
          12, .ingress, Packet.ipv4(ip, podIP, proto: proto, sport: sport, dport: port))
      }
      func kinds() throws -> UInt32 {
        try #require(try backend.announcedPolicyKinds(endpointID: 12))
      }
      let allowFrontend = PolicyEntry(
        peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 80))
      _ = try datapath.realize(endpoint(id: 12, ingressEnforced: true, entries: [allowFrontend]))
      #expect(
        try kinds() == UInt32(TESSERA_EP_F_POLICY_KINDS)
          | BPFDatapathBackend.policyKinds(of: [PolicyGroup(allowFrontend)]))
      #expect(try into(frontendIP, Packet.tcp, 80))
      #expect(try !into(otherIP, Packet.tcp, 80))
      // A deny for any peer and protocol: a kind the endpoint had no entry of.
      _ = try datapath.realize(
        endpoint(
          id: 12, revision: 2, ingressEnforced: true,
          entries: [
            allowFrontend,
            PolicyEntry(
              peer: .unknown, direction: .ingress, proto: .any, ports: PortRange(single: 80),
              verdict: .deny),
          ]))
      #expect(try !into(frontendIP, Packet.tcp, 80))
      // An allow for any peer replaces the deny (a wildcard kind comes, the deny kind goes).
      _ = try datapath.realize(
        endpoint(
          id: 12, revision: 3, ingressEnforced: true,
          entries: [
            allowFrontend,
            PolicyEntry(peer: .unknown, direction: .ingress, proto: .udp, ports: .any),
          ]))
      #expect(try into(frontendIP, Packet.tcp, 80))
      #expect(try into(otherIP, Packet.udp, 53))
      #expect(try into(worldIP, Packet.udp, 53))
      #expect(try !into(otherIP, Packet.tcp, 80))
      #expect(
        try kinds()
          & BPFDatapathBackend.policyKinds(of: [
            PolicyGroup(verdict: .deny, direction: .ingress, proto: .any, peer: .unknown)
          ]) == 0)
      // Only wildcard-peer entries: the verdict does not need the ipcache.
      _ = try datapath.realize(
        endpoint(
          id: 12, revision: 4, ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: .unknown, direction: .ingress, proto: .tcp, ports: PortRange(single: 443))
          ]))
      #expect(try into(worldIP, Packet.tcp, 443))
      #expect(try !into(frontendIP, Packet.tcp, 80))
      // Egress has no entries and is not enforced: default allow.
      #expect(
        try backend.passes(
          12, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 48999, dport: 53)))
    }
  }

  @Test(
    "replies of allowed connections pass through conntrack; established flows survive a policy change"
  )
  func conntrack() throws {
    try withDatapath { datapath, backend in
      let allowFrontend = PolicyEntry(
        peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
      _ = try datapath.realize(
        endpoint(id: 4, ingressEnforced: true, egressEnforced: true, entries: [allowFrontend]))
      // Inbound SYN allowed; the SYN-ACK goes out although egress allows nothing.
      #expect(
        try backend.passes(
          4, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 43000, dport: 8080))
      )
      #expect(
        try backend.passes(
          4, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 43000, tcpFlags: Packet.synAck
          )))
      // Not a reply: another port of the same peer.
      #expect(
        try !backend.passes(
          4, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 43001, tcpFlags: Packet.synAck
          )))
      // A reply in the wrong direction is not a reply.
      #expect(
        try !backend.passes(
          4, .ingress, Packet.ipv4(podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 43000))
      )

      let entries = try backend.conntrackEntries().filter { $0.endpointID == 4 }
      #expect(entries.count == 1)
      #expect(
        entries.first?.source == frontendIP && entries.first?.destinationPort == 8080
          && entries.first?.direction == .ingress)
      #expect(entries.first?.packets == 2)
      // The programs' clock (jiffies, or the coarse clock) is CLOCK_MONOTONIC within a tick.
      let now = Int64(bitPattern: LibBPF.monotonicNanoseconds)
      let seen = Int64(bitPattern: entries.first?.lastSeenNanoseconds ?? 0)
      #expect(abs(now - seen) < 50_000_000, "last seen \(seen) ns, CLOCK_MONOTONIC \(now) ns")

      // Policy removes the allow: the established flow keeps flowing, a new one is dropped.
      _ = try datapath.realize(
        endpoint(id: 4, revision: 2, ingressEnforced: true, egressEnforced: true, entries: []))
      #expect(
        try backend.passes(
          4, .ingress,
          Packet.ipv4(
            frontendIP, podIP, proto: Packet.tcp, sport: 43000, dport: 8080, tcpFlags: Packet.ack)))
      #expect(
        try !backend.passes(
          4, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 43002, dport: 8080))
      )
      // A SYN reusing the tracked tuple opens a new connection: policy judges it again.
      #expect(
        try !backend.passes(
          4, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 43000, dport: 8080))
      )
      #expect(
        try backend.passes(
          4, .ingress,
          Packet.ipv4(
            frontendIP, podIP, proto: Packet.tcp, sport: 43000, dport: 8080, tcpFlags: Packet.ack)))

      // ICMP echo reply matches its request.
      _ = try datapath.realize(
        endpoint(id: 4, revision: 3, ingressEnforced: true, egressEnforced: false, entries: []))
      #expect(try backend.passes(4, .egress, Packet.icmpEcho(podIP, worldIP, id: 99, reply: false)))
      #expect(try backend.passes(4, .ingress, Packet.icmpEcho(worldIP, podIP, id: 99, reply: true)))
      #expect(
        try !backend.passes(4, .ingress, Packet.icmpEcho(worldIP, podIP, id: 98, reply: true)))
    }
  }

  @Test(
    "conntrack: one entry per flow whichever side has the lower address; a tuple equal to its reverse"
  )
  func conntrackOrientation() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        endpoint(
          id: 14, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(peer: other, direction: .ingress, proto: .udp, ports: PortRange(single: 53))
          ]))
      // The creating packet's source is the higher address (10.0.2.7 > 10.0.0.5).
      #expect(
        try backend.passes(
          14, .ingress, Packet.ipv4(otherIP, podIP, proto: Packet.udp, sport: 5353, dport: 53)))
      #expect(
        try backend.passes(
          14, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 53, dport: 5353)))
      #expect(
        try backend.passes(
          14, .ingress, Packet.ipv4(otherIP, podIP, proto: Packet.udp, sport: 5353, dport: 53)))
      #expect(
        try !backend.passes(
          14, .egress, Packet.ipv4(otherIP, podIP, proto: Packet.udp, sport: 5353, dport: 53)))
      #expect(
        try !backend.passes(
          14, .ingress, Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 53, dport: 5353)))
      let entries = try backend.conntrackEntries().filter { $0.endpointID == 14 }
      #expect(entries.count == 1)
      #expect(
        entries.first?.source == otherIP && entries.first?.sourcePort == 5353
          && entries.first?.destination == podIP)
      #expect(entries.first?.direction == .ingress && entries.first?.packets == 3)
      let reasons = try backend.reasonCounters(endpointID: 14)
      #expect(
        reasons.contains {
          $0.direction == .egress && $0.reason == "forward-ct-reply" && $0.packets == 1
        })
      #expect(
        reasons.contains {
          $0.direction == .ingress && $0.reason == "forward-ct-established" && $0.packets == 1
        })

      // Same address and port on both sides: the other direction is its reply.
      _ = try datapath.realize(
        endpoint(
          id: 14, revision: 2, ingressEnforced: true, egressEnforced: false,
          entries: [
            PolicyEntry(peer: other, direction: .ingress, proto: .udp, ports: PortRange(single: 53))
          ]))
      #expect(
        try backend.passes(
          14, .egress, Packet.ipv4(podIP, podIP, proto: Packet.udp, sport: 7, dport: 7)))
      #expect(
        try backend.passes(
          14, .ingress, Packet.ipv4(podIP, podIP, proto: Packet.udp, sport: 7, dport: 7)))
      #expect(
        try !backend.passes(
          14, .ingress, Packet.ipv4(podIP, podIP, proto: Packet.udp, sport: 8, dport: 8)))
      // IPv6: the reply of an outgoing connection, whichever address is lower.
      // (The local address is the endpoint's own: what leaves it must carry one.)
      for (revision, (local, remote)) in [
        (UInt64(3), ("fd00::5", "fd00::9")), (4, ("fd00::9", "fd00::5")),
      ] {
        _ = try datapath.realize(
          endpoint(
            id: 14, ip: "\(local)/128", revision: revision, ingressEnforced: true,
            entries: [
              PolicyEntry(
                peer: other, direction: .ingress, proto: .udp, ports: PortRange(single: 53))
            ]))
        #expect(
          try backend.passes(14, .egress, Packet.ipv6TCP(local, remote, sport: 40000, dport: 80)))
        #expect(
          try backend.passes(
            14, .ingress,
            Packet.ipv6TCP(remote, local, sport: 80, dport: 40000, tcpFlags: Packet.synAck)))
        #expect(
          try !backend.passes(
            14, .ingress,
            Packet.ipv6TCP(remote, local, sport: 80, dport: 40001, tcpFlags: Packet.synAck)))
      }
    }
  }

  @Test(
    "removing an endpoint deletes its conntrack entries across several batches of the walk, and no other endpoint's"
  )
  func removalPurgesOnlyItsOwnFlows() throws {
    try withDatapath { datapath, backend in
      let allow = [PolicyEntry(peer: frontend, direction: .ingress, proto: .tcp, ports: .any)]
      _ = try datapath.realize(endpoint(id: 21, ingressEnforced: true, entries: allow))
      _ = try datapath.realize(
        endpoint(id: 22, ip: "10.0.0.6/32", ingressEnforced: true, entries: allow))
      // More than two batches (1,024 keys each) for the removed endpoint, interleaved with the kept one's.
      for port in 0..<2_600 {
        let sport = UInt16(20_000 + port)
        #expect(
          try backend.passes(
            21, .ingress,
            Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: sport, dport: 8080)))
        if port.isMultiple(of: 8) {
          #expect(
            try backend.passes(
              22, .ingress,
              Packet.ipv4(frontendIP, "10.0.0.6", proto: Packet.tcp, sport: sport, dport: 8080)))
        }
      }
      let before = try backend.conntrackEntries()
      #expect(before.filter { $0.endpointID == 21 }.count == 2_600)
      #expect(before.filter { $0.endpointID == 22 }.count == 325)
      #expect(try datapath.removeEndpoint(id: 21))
      let after = try backend.conntrackEntries()
      #expect(after.filter { $0.endpointID == 21 }.isEmpty)
      #expect(after.filter { $0.endpointID == 22 }.count == 325)
    }
  }

  @Test("one endpoint's conntrack entry does not admit traffic into another")
  func conntrackIsPerEndpoint() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(endpoint(id: 5, ip: "10.0.0.5/32", entries: []))
      _ = try datapath.realize(
        endpoint(id: 6, identity: 1001, ip: "10.0.0.6/32", ingressEnforced: true, entries: []))
      #expect(
        try backend.passes(
          5, .egress,
          Packet.ipv4("10.0.0.5", "10.0.0.6", proto: Packet.tcp, sport: 44000, dport: 80)))
      #expect(
        try !backend.passes(
          6, .ingress,
          Packet.ipv4("10.0.0.5", "10.0.0.6", proto: Packet.tcp, sport: 44000, dport: 80)))
    }
  }

  @Test("an address missing from the ipcache is its family's world; the node's addresses are host")
  func worldAndHost() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        endpoint(
          id: 7, ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: .worldIPv4, direction: .ingress, proto: .tcp, ports: PortRange(single: 80)),
            PolicyEntry(
              peer: .host, direction: .ingress, proto: .tcp, ports: PortRange(single: 22)),
          ]))
      #expect(
        try backend.passes(
          7, .ingress, Packet.ipv4(worldIP, podIP, proto: Packet.tcp, sport: 45000, dport: 80)))
      #expect(
        try !backend.passes(
          7, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 45001, dport: 80)))
      #expect(
        try !backend.passes(
          7, .ingress, Packet.ipv4(worldIP, podIP, proto: Packet.tcp, sport: 45002, dport: 22)))
      #expect(
        try backend.ipcacheEntries().contains(
          IPCacheEntry(prefix: IPPrefix("127.0.0.1/32")!, identity: .host)))
      #expect(
        try backend.passes(
          7, .ingress, Packet.ipv4("127.0.0.1", podIP, proto: Packet.tcp, sport: 45003, dport: 22)))
    }
  }

  @Test("counters count forwarded and dropped packets per direction")
  func counters() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        endpoint(
          id: 8, ingressEnforced: true,
          entries: [PolicyEntry(peer: frontend, direction: .ingress, proto: .tcp, ports: .any)]))
      #expect(try datapath.counters(endpointID: 8) == EndpointCounters())
      _ = try backend.passes(
        8, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 46000, dport: 1))
      _ = try backend.passes(
        8, .ingress, Packet.ipv4(otherIP, podIP, proto: Packet.tcp, sport: 46001, dport: 1))
      _ = try backend.passes(
        8, .ingress, Packet.ipv4(otherIP, podIP, proto: Packet.tcp, sport: 46002, dport: 1))
      _ = try backend.passes(
        8, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 46003, dport: 1))
      var totals = try datapath.counters(endpointID: 8)
      #expect(
        totals.reasons.contains {
          $0.direction == .egress && $0.reason == "forward-policy" && $0.packets == 1
        })
      totals.reasons = []
      #expect(
        totals
          == EndpointCounters(
            ingressForwarded: 1, ingressDropped: 2, egressForwarded: 1, egressDropped: 0))
      let reasons = try backend.reasonCounters(endpointID: 8)
      #expect(
        reasons.contains {
          $0.direction == .ingress && $0.reason == "drop-policy-default" && $0.packets == 2
        })
    }
  }

  @Test(
    "bursts of 20,000 counter entries land whole: inserts the kernel's memory caches refuse for a moment (ENOMEM) are retried"
  )
  func counterBurstLands() throws {
    try BPFTestEnvironment.withBackend { _, pin in
      let fd = tessera_bpf_obj_get("\(pin)/globals/tessera_metrics")
      try #require(fd >= 0)
      defer { tessera_bpf_close_fd(fd) }
      let cpus = Int(tessera_bpf_num_possible_cpus())
      let zero = [UInt8](repeating: 0, count: MemoryLayout<endpoint_metrics>.stride * cpus)
      var failures: [Int32: Int] = [:]
      for round in 0..<2 {
        let keys = (0..<UInt64(20_000)).map { UInt64(1_000_000) + UInt64(round) * 20_000 + $0 }
        for var key in keys {
          let rc = zero.withUnsafeBytes { value in
            tessera_bpf_map_update(fd, &key, value.baseAddress, 1 /* BPF_NOEXIST */)
          }
          if rc != 0 { failures[rc, default: 0] += 1 }
        }
        for var key in keys { _ = tessera_bpf_map_delete(fd, &key) }
      }
      #expect(failures.isEmpty, "inserts failed (errno: count): \(failures)")
    }
  }

  @Test("policyEntries reads the kernel map back; incremental changes write only what changed")
  func readBack() throws {
    try withDatapath { datapath, backend in
      var entries = [
        PolicyEntry(peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(8080, 8090)),
        PolicyEntry(
          peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8091)),
        PolicyEntry(
          peer: other, direction: .egress, proto: .udp, ports: PortRange(1, 65535), verdict: .deny),
        PolicyEntry(peer: .unknown, direction: .egress, proto: .any, ports: .any),
      ]
      var ep = endpoint(id: 9, ingressEnforced: true, entries: entries)
      _ = try datapath.realize(ep)
      #expect(try backend.policyEntries(endpointID: 9) == ep.policy.entries)

      entries.remove(at: 1)
      entries.append(
        PolicyEntry(
          peer: NumericIdentity(4000), direction: .ingress, proto: .sctp,
          ports: PortRange(single: 9)))
      ep = endpoint(id: 9, revision: 2, ingressEnforced: true, entries: entries)
      let realization = try datapath.realize(ep)
      #expect(realization.entriesWritten == 1 && realization.entriesDeleted == 1)
      #expect(try backend.policyEntries(endpointID: 9) == ep.policy.entries)
    }
  }

  @Test("the kernel's verdict equals EndpointPolicy.verdict for random policies and packets")
  func randomizedAgainstReference() throws {
    let seed = UInt64(truncatingIfNeeded: Int(Date().timeIntervalSince1970))
    print("randomized datapath check: seed \(seed)")
    var rng = SplitMix64(seed: seed)
    let peers: [(identity: NumericIdentity, ip: String)] = [
      (frontend, frontendIP), (other, otherIP), (.worldIPv4, worldIP),
      (NumericIdentity(4000), "10.0.4.4"),
    ]
    let entryPeers: [NumericIdentity] = [
      .unknown, frontend, other, .worldIPv4, NumericIdentity(4000),
    ]
    let protocols: [L4Protocol] = [.any, .tcp, .udp, .sctp, .icmp]
    let packetProtocols: [(wire: UInt8, reference: L4Protocol)] = [
      (Packet.tcp, .tcp), (Packet.udp, .udp), (Packet.sctp, .sctp), (Packet.icmp, .icmp),
    ]
    // Echo request and reply (tracked), timestamp and an extended echo (each judged by
    // policy), destination unreachable quoting nothing (an error about no flow).
    let icmpTypes: [UInt16] = [8, 0, 13, 42, 3]
    func randomRange() -> PortRange {
      switch rng.next() % 6 {
      case 0: return .any
      case 1: return PortRange(single: UInt16(rng.next() % 64))
      default:
        let a = UInt16(rng.next() % 64)
        let b = UInt16(rng.next() % 64)
        return PortRange(min(a, b), max(a, b))
      }
    }

    try withDatapath { datapath, backend in
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("10.0.4.4/32")!, identity: NumericIdentity(4000))
      ])
      var sport: UInt16 = 10000
      var checked = 0
      for round in 1...25 {
        var entries: [PolicyEntry] = []
        for _ in 0..<Int(rng.next() % 24) {
          entries.append(
            PolicyEntry(
              peer: entryPeers[Int(rng.next() % UInt64(entryPeers.count))],
              direction: rng.next() % 2 == 0 ? .ingress : .egress,
              proto: protocols[Int(rng.next() % UInt64(protocols.count))],
              ports: randomRange(),
              verdict: rng.next() % 3 == 0 ? .deny : .allow))
        }
        let ep = endpoint(
          id: 10, revision: UInt64(round), ingressEnforced: rng.next() % 2 == 0,
          egressEnforced: rng.next() % 2 == 0,
          entries: entries)
        _ = try datapath.realize(ep)
        for _ in 0..<150 {
          let peer = peers[Int(rng.next() % UInt64(peers.count))]
          let direction: TrafficDirection = rng.next() % 2 == 0 ? .ingress : .egress
          let proto = packetProtocols[Int(rng.next() % UInt64(packetProtocols.count))]
          // An ICMP packet's "port" is its type (PolicyEntry.matches).
          let port =
            proto.wire == Packet.icmp
            ? icmpTypes[Int(rng.next() % UInt64(icmpTypes.count))] : UInt16(rng.next() % 70)
          sport = sport == UInt16.max ? 10000 : sport + 1
          var packet =
            direction == .ingress
            ? Packet.ipv4(peer.ip, podIP, proto: proto.wire, sport: sport, dport: port)
            : Packet.ipv4(podIP, peer.ip, proto: proto.wire, sport: sport, dport: port)
          if proto.wire == Packet.icmp { packet[14 + 20] = UInt8(port) }
          let expected = ep.policy.verdict(
            peer: peer.identity, direction: direction, proto: proto.reference, port: port)
          let kernel = try backend.passes(10, direction, packet)
          #expect(
            kernel == (expected == .allow),
            "round \(round): \(direction) peer \(peer.identity) proto \(proto.wire) port \(port): kernel \(kernel ? "allow" : "deny"), reference \(expected); policy \(ep.policy)"
          )
          checked += 1
        }
        // The map read back judges exactly like the policy written.
        let readBack = EndpointPolicy(
          revision: ep.policy.revision, ingressEnforced: ep.policy.ingressEnforced,
          egressEnforced: ep.policy.egressEnforced,
          entries: try backend.policyEntries(endpointID: 10))
        for peer in entryPeers + [NumericIdentity(5000)] {
          for direction in TrafficDirection.allCases {
            for proto in protocols {
              for port in UInt16(0)..<66 {
                #expect(
                  readBack.verdict(peer: peer, direction: direction, proto: proto, port: port)
                    == ep.policy.verdict(peer: peer, direction: direction, proto: proto, port: port)
                )
              }
            }
          }
        }
      }
      print("randomized datapath check: \(checked) packets agreed with EndpointPolicy.verdict")
    }
  }

  @Test("attach to a device, re-adopt after a restart without reloading, remove without leaks")
  func attachRestartRemove() throws {
    try BPFTestEnvironment.withDummyDevices(2) { devices in
      let pin = "/sys/fs/bpf/tessera-test-restart-\(getpid())"
      defer { BPFTestEnvironment.removePinDirectory(pin) }
      let configuration = BPFDatapathBackend.Configuration(
        objectPath: BPFTestEnvironment.objectPath!, pinDirectory: pin)
      let ep = endpoint(
        id: 11, device: devices[0], ingressEnforced: true,
        entries: [
          PolicyEntry(
            peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
        ])

      var first: BPFDatapathBackend? = try BPFDatapathBackend(configuration: configuration)
      defer { if let first { try? first.removeEndpoint(ep) } }
      let datapath = try Datapath(backend: first!)
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("\(frontendIP)/32")!, identity: frontend)
      ])
      _ = try datapath.realize(ep)
      let pinned = try first!.pinnedProgramIDs(endpointID: 11)
      #expect(pinned.fromContainer != 0 && pinned.toContainer != 0)
      let attached = try first!.attachedProgramIDs(interface: devices[0])
      #expect(attached == pinned)
      // An established connection before the restart.
      #expect(
        try first!.passes(
          11, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 47000, dport: 8080)
        ))
      first = nil

      // "Restart": a new backend on the same pins.
      let second = try BPFDatapathBackend(configuration: configuration)
      defer { try? second.removeEndpoint(ep) }
      #expect(second.adoptedExistingHandlers)
      let restored = try second.restoreEndpoints()
      #expect(restored == [ep])
      #expect(try second.attachedProgramIDs(interface: devices[0]) == pinned, "nothing re-attached")
      #expect(try second.pinnedProgramIDs(endpointID: 11) == pinned, "nothing reloaded")
      #expect(
        try second.passes(
          11, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 47000, tcpFlags: Packet.synAck
          )))
      #expect(
        try !second.passes(
          11, .ingress, Packet.ipv4(otherIP, podIP, proto: Packet.tcp, sport: 47001, dport: 8080)))

      // Device change: attached to the new one, detached from the old one.
      let datapath2 = try Datapath(backend: second)
      var moved = ep
      moved.hostInterface = devices[1]
      _ = try datapath2.realize(moved)
      #expect(try second.attachedProgramIDs(interface: devices[1]) == pinned)
      #expect(try second.attachedProgramIDs(interface: devices[0]) == (0, 0))

      // Remove: filters, pins, policy, conntrack, counters and the endpoint entry are gone.
      #expect(try datapath2.removeEndpoint(id: 11))
      #expect(try second.attachedProgramIDs(interface: devices[1]) == (0, 0))
      #expect(!FileManager.default.fileExists(atPath: "\(pin)/endpoints/11"))
      #expect(try second.restoreEndpoints().isEmpty)
      #expect(try second.conntrackEntries().filter { $0.endpointID == 11 }.isEmpty)
      #expect(throws: DatapathError.self) { try second.policyEntries(endpointID: 11) }
      #expect(throws: DatapathError.self) { try second.counters(endpointID: 11) }
      // Idempotent.
      try second.removeEndpoint(moved)
    }
  }

  @Test(
    "the conntrack table holds the configured number of flows (65,536 by default); a start with another size replaces it, its flows kept"
  )
  func conntrackMaxEntries() throws {
    try BPFTestEnvironment.withBackend { backend, _ in
      #expect(backend.conntrackMaxEntries == 65_536)
    }
    let pin = "/sys/fs/bpf/tessera-test-ctmax-\(getpid())"
    defer { BPFTestEnvironment.removePinDirectory(pin) }
    func configuration(_ entries: UInt32) -> BPFDatapathBackend.Configuration {
      .init(
        objectPath: BPFTestEnvironment.objectPath!, pinDirectory: pin, conntrackMaxEntries: entries)
    }
    // Egress enforced and nothing allowed out: the reply below passes only as the flow's.
    let ep = endpoint(
      id: 12, ingressEnforced: true, egressEnforced: true,
      entries: [
        PolicyEntry(
          peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
      ])
    var first: BPFDatapathBackend? = try BPFDatapathBackend(configuration: configuration(2048))
    #expect(first!.conntrackMaxEntries == 2048)
    let datapath = try Datapath(backend: first!)
    try datapath.upsertIPCache([
      IPCacheEntry(prefix: IPPrefix("\(frontendIP)/32")!, identity: frontend)
    ])
    _ = try datapath.realize(ep)
    #expect(
      try first!.passes(
        12, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 47100, dport: 8080)))
    first = nil

    // A start that cannot load its object after the old table was set aside keeps that table.
    let garbage = "/tmp/tessera-test-garbage-\(getpid()).o"
    FileManager.default.createFile(atPath: garbage, contents: Data("not an ELF object".utf8))
    defer { try? FileManager.default.removeItem(atPath: garbage) }
    #expect(throws: DatapathError.self) {
      _ = try BPFDatapathBackend(
        configuration: .init(objectPath: garbage, pinDirectory: pin, conntrackMaxEntries: 4096))
    }

    let second = try BPFDatapathBackend(configuration: configuration(4096))
    defer { try? second.removeEndpoint(ep) }
    #expect(!second.adoptedExistingHandlers, "another size is no restart of the same datapath")
    #expect(second.conntrackMaxEntries == 4096)
    #expect(try second.conntrackEntries().filter { $0.endpointID == 12 }.count == 1)
    #expect(
      try second.passes(
        12, .egress,
        Packet.ipv4(
          podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 47100, tcpFlags: Packet.synAck)),
      "the connection's reply still passes")
    let third = try BPFDatapathBackend(configuration: configuration(4096))
    #expect(third.adoptedExistingHandlers)
  }

  @Test("startup fails clearly without the object")
  func missingObject() {
    let error = #expect(throws: DatapathError.self) {
      _ = try BPFDatapathBackend(
        configuration: .init(
          objectPath: "/nonexistent/endpoint.bpf.o",
          pinDirectory: "/sys/fs/bpf/tessera-test-missing"))
    }
    #expect(error?.code == .precondition)
    #expect(error?.message.contains("scripts/build-bpf.sh") == true)
  }
}
