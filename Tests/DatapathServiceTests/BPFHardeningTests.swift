import CTesseraBPF
import Foundation
import TesseraCore
import Testing

@testable import DatapathService

private let frontend = NumericIdentity(2000)
private let other = NumericIdentity(3000)
private let frontendIP = "10.0.1.1"
private let frontendIP6 = "fd00::1:1"
private let otherIP = "10.0.2.7"
private let otherIP6 = "fd00::2:7"
private let routerIP = "192.0.2.1"
private let podIP = "10.0.0.5"
private let podIP6 = "fd00::5"

/// Attacks on the programs with crafted packets: forged sources, other
/// ethertypes, long IPv6 extension chains, fragments, forged ICMP errors.
/// Each case passed (or was judged differently) before the datapath closed it.
@Suite("eBPF datapath: ways around policy", .serialized, .enabled(if: BPFTestEnvironment.available))
struct BPFHardeningTests {
  private func withDatapath<R>(_ body: (Datapath, BPFDatapathBackend) throws -> R) throws -> R {
    try BPFTestEnvironment.withBackend { backend, _ in
      let datapath = try Datapath(backend: backend)
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("\(frontendIP)/32")!, identity: frontend),
        IPCacheEntry(prefix: IPPrefix("\(frontendIP6)/128")!, identity: frontend),
        IPCacheEntry(prefix: IPPrefix("10.0.2.0/24")!, identity: other),
        IPCacheEntry(prefix: IPPrefix("\(otherIP6)/128")!, identity: other),
      ])
      return try body(datapath, backend)
    }
  }

  private func pod(
    id: UInt64, ips: [String] = ["\(podIP)/32", "\(podIP6)/128"], ingressEnforced: Bool = false,
    egressEnforced: Bool = false,
    entries: [PolicyEntry] = [], revision: UInt64 = 1
  ) -> DatapathEndpoint {
    DatapathEndpoint(
      id: id, hostInterface: "", ips: ips.map { IPPrefix($0)! }, identity: NumericIdentity(1000),
      policy: EndpointPolicy(
        revision: revision, ingressEnforced: ingressEnforced, egressEnforced: egressEnforced,
        entries: entries.sorted()))
  }

  private func count(
    _ backend: BPFDatapathBackend, _ id: UInt64, _ direction: TrafficDirection, _ reason: String
  ) throws -> UInt64 {
    try backend.reasonCounters(endpointID: id).filter {
      $0.direction == direction && $0.reason == reason
    }.map(\.packets).reduce(0, +)
  }

  /// `frame` (Ethernet, then IPv4 or IPv6) with its IP header declaring `length`: the total
  /// length for IPv4, the payload length for IPv6. The frame's bytes stay as they are, so
  /// what lies past the declared length becomes trailing bytes.
  private func declaring(_ length: Int, _ frame: [UInt8]) -> [UInt8] {
    var frame = frame
    let field = frame[12] == 0x86 && frame[13] == 0xDD ? 14 + 4 : 14 + 2
    frame[field] = UInt8(length >> 8)
    frame[field + 1] = UInt8(length & 0xff)
    return frame
  }

  /// An ICMP message of `type` (identifier `id` where the type has one).
  private func icmp(_ source: String, _ destination: String, type: UInt8, id: UInt16 = 0)
    -> [UInt8]
  {
    let v6 = source.contains(":")
    let message = Packet.icmpMessage(
      type: type, code: 0, rest: [UInt8(id >> 8), UInt8(id & 0xff), 0, 1])
    return v6
      ? Packet.ipv6Frame(source, destination, proto: Packet.icmpv6, payload: message)
      : Packet.ipv4Frame(source, destination, proto: Packet.icmp, payload: message)
  }

  @Test(
    "ICMP rules match the type and family they name; only echo is tracked, so no other type rides on an allowed one"
  )
  func icmpTypes() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        pod(
          id: 30, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .icmp, ports: PortRange(single: 8)),
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .icmp, ports: PortRange(single: 13)),
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .icmpv6, ports: PortRange(single: 128)),
            // An any-protocol deny of a port range takes no ICMP type for a port.
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .any, ports: PortRange(1, 200),
              verdict: .deny),
          ]))
      // The named types from the named peer, each family its own.
      #expect(try backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 8, id: 1)))
      #expect(try backend.passes(30, .ingress, icmp(frontendIP6, podIP6, type: 128, id: 2)))
      #expect(try backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 13)))
      // The echo reply goes out as part of the request's flow (egress is enforced, no entry).
      #expect(try backend.passes(30, .egress, icmp(podIP, frontendIP, type: 0, id: 1)))
      #expect(try backend.passes(30, .egress, icmp(podIP6, frontendIP6, type: 129, id: 2)))
      // Other types, families, peers and protocols are not admitted by them.
      #expect(try !backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 17)))
      #expect(try !backend.passes(30, .ingress, icmp(frontendIP6, podIP6, type: 13)))
      #expect(try !backend.passes(30, .ingress, icmp(otherIP, podIP, type: 8, id: 3)))
      #expect(
        try !backend.passes(
          30, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 8, dport: 8)))
      // An allowed timestamp tracks nothing: the same pair's next message of another type
      // (or an unsolicited echo reply) is judged by policy, and the pod's own timestamp
      // reply needs an egress rule.
      #expect(try !backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 14)))
      #expect(try !backend.passes(30, .egress, icmp(podIP, frontendIP, type: 14)))
      #expect(try !backend.passes(30, .egress, icmp(podIP, frontendIP, type: 13)))
      #expect(try !backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 0, id: 0)))
      // An echo with identifier 0 opens no way for other types (their ports are never 0, 0).
      #expect(try backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 8, id: 0)))
      #expect(try !backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 17)))
      #expect(try !backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 5)))
      // An echo request whose identifier is an allowed message's type is no reply to it.
      #expect(try !backend.passes(30, .egress, icmp(podIP, frontendIP, type: 8, id: 13)))
      // Identifier 0 makes request and reply one tuple: the frontend's allowed request
      // (id 0, above) opens no request from the pod, and no second "request" from the
      // frontend's side in the reply's place.
      #expect(try !backend.passes(30, .egress, icmp(podIP, frontendIP, type: 8, id: 0)))
      #expect(try backend.passes(30, .egress, icmp(podIP, frontendIP, type: 0, id: 0)))
      #expect(try !backend.passes(30, .ingress, icmp(frontendIP, podIP, type: 0, id: 0)))
    }
  }

  @Test("an allowed echo reply opens nothing: requests never pass as its replies, either way")
  func echoReplyTracksNothing() throws {
    try withDatapath { datapath, backend in
      // Replies allowed in from anyone, nothing allowed out.
      _ = try datapath.realize(
        pod(
          id: 31, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: .unknown, direction: .ingress, proto: .icmp, ports: PortRange(single: 0))
          ]))
      #expect(try backend.passes(31, .ingress, icmp(frontendIP, podIP, type: 0, id: 0x1234)))
      // The pod's requests with that identifier would be the reply's reverse tuple.
      #expect(try !backend.passes(31, .egress, icmp(podIP, frontendIP, type: 8, id: 0x1234)))
      #expect(try !backend.passes(31, .egress, icmp(podIP, frontendIP, type: 8, id: 0x1234)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 31 }.isEmpty)
    }
  }

  @Test(
    "a TCP segment without SYN opens nothing: a connection made before policy was in force gets no replies through"
  )
  func midStreamSegmentTracksNothing() throws {
    try withDatapath { datapath, backend in
      // Only the frontend may connect in, to 8080; the pod may send anywhere.
      _ = try datapath.realize(
        pod(
          id: 32, ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
          ]))
      // A denied peer connected while the pod had no programs (a chained plugin's window);
      // now the pod answers it: its SYN-ACK, ACK and FIN go out (egress allows everything)
      // but none is taken for the opening of a flow, so the peer's segments stay denied.
      for flags in [Packet.synAck, Packet.ack, Packet.ack | 0x01] {
        #expect(
          try backend.passes(
            32, .egress,
            Packet.ipv4(
              podIP, otherIP, proto: Packet.tcp, sport: 8080, dport: 41000, tcpFlags: flags)))
        #expect(
          try !backend.passes(
            32, .ingress,
            Packet.ipv4(
              otherIP, podIP, proto: Packet.tcp, sport: 41000, dport: 8080, tcpFlags: Packet.ack)))
      }
      #expect(
        try backend.passes(
          32, .egress,
          Packet.ipv6TCP(podIP6, otherIP6, sport: 8080, dport: 41001, tcpFlags: Packet.ack)))
      #expect(
        try !backend.passes(
          32, .ingress,
          Packet.ipv6TCP(otherIP6, podIP6, sport: 41001, dport: 8080, tcpFlags: Packet.ack)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 32 }.isEmpty)
      // A connection the policy allows is tracked from its SYN, replies and all.
      #expect(
        try backend.passes(
          32, .ingress,
          Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 42000, dport: 8080)))
      #expect(
        try backend.passes(
          32, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 42000,
            tcpFlags: Packet.synAck)))
      #expect(
        try backend.passes(
          32, .ingress,
          Packet.ipv4(
            frontendIP, podIP, proto: Packet.tcp, sport: 42000, dport: 8080, tcpFlags: Packet.ack)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 32 }.count == 1)
    }
  }

  @Test(
    "the other half is judged on the connection's own ports (an egress rule for the peer's service port admits no answers to its client port), and a reset picks nothing up"
  )
  func otherHalfUsesTheConnectionsPorts() throws {
    try withDatapath { datapath, backend in
      // Both ways, frontend on TCP 8080 only.
      _ = try datapath.realize(
        pod(
          id: 38, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080)),
            PolicyEntry(
              peer: frontend, direction: .egress, proto: .tcp, ports: PortRange(single: 8080)),
          ]))
      // The frontend's segment to 8080 comes in; its other half, the pod's answers to the
      // frontend's port 42200, is not allowed out: nothing is tracked, the answers stay denied.
      #expect(
        try backend.passes(
          38, .ingress,
          Packet.ipv4(
            frontendIP, podIP, proto: Packet.tcp, sport: 42200, dport: 8080, tcpFlags: Packet.ack)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 38 }.isEmpty)
      #expect(
        try !backend.passes(
          38, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 42200, tcpFlags: Packet.ack)))
      // Ingress from the frontend on 8080, egress open: both halves are allowed, but a reset
      // ends what it belongs to and starts no tracking.
      _ = try datapath.realize(
        pod(
          id: 39, ips: ["10.0.0.6/32"], ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
          ]))
      #expect(
        try backend.passes(
          39, .ingress,
          Packet.ipv4(
            frontendIP, "10.0.0.6", proto: Packet.tcp, sport: 42300, dport: 8080,
            tcpFlags: Packet.ack | 0x04)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 39 }.isEmpty)
    }
  }

  @Test(
    "SCTP: only an INIT opens an association; a packet of other chunks is tracked only when the pod's policy allows both halves of its association"
  )
  func sctpOpensWithInit() throws {
    try withDatapath { datapath, backend in
      // The frontend may open associations to 2905; the pod may send anywhere.
      _ = try datapath.realize(
        pod(
          id: 37, ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .sctp, ports: PortRange(single: 2905))
          ]))
      // The pod answers an association a denied peer opened before its policy was in force:
      // its DATA goes out, but opens nothing for the peer's.
      #expect(
        try backend.passes(
          37, .egress,
          Packet.ipv4(
            podIP, otherIP, proto: Packet.sctp, sport: 2905, dport: 41000,
            sctpChunk: Packet.sctpData)))
      #expect(
        try !backend.passes(
          37, .ingress,
          Packet.ipv4(
            otherIP, podIP, proto: Packet.sctp, sport: 41000, dport: 2905,
            sctpChunk: Packet.sctpData)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 37 }.isEmpty)
      // The frontend's INIT opens one; the pod's INIT ACK passes as its reply.
      #expect(
        try backend.passes(
          37, .ingress,
          Packet.ipv4(frontendIP, podIP, proto: Packet.sctp, sport: 42000, dport: 2905)))
      #expect(
        try backend.passes(
          37, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.sctp, sport: 2905, dport: 42000, sctpChunk: 2)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 37 }.count == 1)
      // The frontend's DATA on an association whose entry is gone: both halves are allowed
      // (egress is open), so it is tracked again.
      #expect(
        try backend.passes(
          37, .ingress,
          Packet.ipv4(
            frontendIP, podIP, proto: Packet.sctp, sport: 42001, dport: 2905,
            sctpChunk: Packet.sctpData)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 37 }.count == 2)
      // An SCTP header without a chunk is no SCTP packet.
      var chunkless = Packet.ipv4(
        frontendIP, podIP, proto: Packet.sctp, sport: 42002, dport: 2905)
      chunkless.removeLast(4)
      chunkless[14 + 3] -= 4
      #expect(try !backend.passes(37, .ingress, chunkless))
    }
  }

  @Test(
    "a TCP segment without SYN is tracked when the pod's policy allows both halves of its connection: one whose entry expired or was evicted is picked up again"
  )
  func midStreamSegmentPicksUpAllowedConnection() throws {
    try withDatapath { datapath, backend in
      let allowFrontend = PolicyEntry(
        peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
      // The frontend may connect in to 8080; the pod may send anywhere.
      _ = try datapath.realize(pod(id: 34, ingressEnforced: true, entries: [allowFrontend]))
      // The frontend's segment of a connection whose entry is gone: both halves are
      // allowed, so the connection is tracked again from here.
      #expect(
        try backend.passes(
          34, .ingress,
          Packet.ipv4(
            frontendIP, podIP, proto: Packet.tcp, sport: 42100, dport: 8080, tcpFlags: Packet.ack)))
      #expect(
        try backend.passes(
          34, .ingress,
          Packet.ipv6TCP(frontendIP6, podIP6, sport: 42100, dport: 8080, tcpFlags: Packet.ack)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 34 }.count == 2)
      // Egress enforced with nothing allowed: the picked-up connection lives on, as one
      // opened by its SYN does; a new answer from the pod does not.
      _ = try datapath.realize(
        pod(
          id: 34, ingressEnforced: true, egressEnforced: true, entries: [allowFrontend], revision: 2
        ))
      #expect(
        try backend.passes(
          34, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 42100, tcpFlags: Packet.ack)))
      #expect(
        try !backend.passes(
          34, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 42101, tcpFlags: Packet.ack)))
      // The frontend's segment of another connection: allowed in, but the other half is
      // not, so it passes untracked and the pod's answer stays denied.
      #expect(
        try backend.passes(
          34, .ingress,
          Packet.ipv4(
            frontendIP, podIP, proto: Packet.tcp, sport: 42102, dport: 8080, tcpFlags: Packet.ack)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 34 }.count == 2)
      #expect(
        try !backend.passes(
          34, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 8080, dport: 42102, tcpFlags: Packet.ack)))
    }
  }

  @Test(
    "another node's pod: a bare delete of its address keeps the flows with it (a store session restarting), a release ends them; a local endpoint's address keeps its own"
  )
  func releasedRemoteAddressEndsFlows() throws {
    try withDatapath { datapath, backend in
      // The pod may connect to the frontend (another node's pod, at frontendIP) on 8080.
      _ = try datapath.realize(
        pod(
          id: 36, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .egress, proto: .tcp, ports: PortRange(single: 8080))
          ]))
      let frontendPrefix = IPPrefix("\(frontendIP)/32")!
      let podPrefix = IPPrefix("\(podIP)/32")!
      let reply = Packet.ipv4(
        frontendIP, podIP, proto: Packet.tcp, sport: 8080, dport: 43100, tcpFlags: Packet.ack)
      #expect(
        try backend.passes(
          36, .egress, Packet.ipv4(podIP, frontendIP, proto: Packet.tcp, sport: 43100, dport: 8080))
      )
      try datapath.deleteIPCache([frontendPrefix])
      #expect(try backend.passes(36, .ingress, reply), "a bare delete ends no flow")
      try datapath.upsertIPCache([IPCacheEntry(prefix: frontendPrefix, identity: frontend)])
      try datapath.deleteIPCache([frontendPrefix], endingFlows: true)
      #expect(try !backend.passes(36, .ingress, reply), "the release ended the connection")
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 36 }.isEmpty)
      // A release naming a local endpoint's address (a stale claim) ends none of its flows.
      try datapath.upsertIPCache([IPCacheEntry(prefix: frontendPrefix, identity: frontend)])
      #expect(
        try backend.passes(
          36, .egress, Packet.ipv4(podIP, frontendIP, proto: Packet.tcp, sport: 43101, dport: 8080))
      )
      try datapath.deleteIPCache([podPrefix], endingFlows: true)
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 36 }.count == 1)
    }
  }

  @Test(
    "an address another node's pod held, given to a new endpoint here: this node's flows with it end before the new endpoint's programs are attached"
  )
  func inheritedRemoteAddressEndsFlows() throws {
    try withDatapath { datapath, backend in
      // The pod may connect to the frontend (another node's pod, at frontendIP) on 8080.
      _ = try datapath.realize(
        pod(
          id: 40, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .egress, proto: .tcp, ports: PortRange(single: 8080))
          ]))
      let reply = Packet.ipv4(
        frontendIP, podIP, proto: Packet.tcp, sport: 8080, dport: 43200, tcpFlags: Packet.ack)
      #expect(
        try backend.passes(
          40, .egress, Packet.ipv4(podIP, frontendIP, proto: Packet.tcp, sport: 43200, dport: 8080))
      )
      #expect(try backend.passes(40, .ingress, reply))
      // The frontend pod went without a release reaching this node, and its address is
      // given to a new endpoint here, of another identity.
      _ = try datapath.realize(
        DatapathEndpoint(
          id: 41, hostInterface: "", ips: [IPPrefix("\(frontendIP)/32")!], identity: other,
          policy: EndpointPolicy(
            revision: 1, ingressEnforced: false, egressEnforced: false, entries: [])))
      #expect(try !backend.passes(40, .ingress, reply), "the new endpoint cannot answer through it")
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 40 }.isEmpty)
    }
  }

  @Test(
    "a pod's address takes its flows with it: the next holder gets no replies through its predecessor's connections"
  )
  func addressReuseEndsFlows() throws {
    try withDatapath { datapath, backend in
      // The pod may connect to the frontend on 8080 and send it UDP on 5353; nothing comes in.
      _ = try datapath.realize(
        pod(
          id: 33, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .egress, proto: .tcp, ports: PortRange(single: 8080)),
            PolicyEntry(
              peer: frontend, direction: .egress, proto: .udp, ports: PortRange(single: 5353)),
          ]))
      // A frontend pod on this node, at frontendIP.
      _ = try datapath.realize(
        DatapathEndpoint(
          id: 34, hostInterface: "", ips: [IPPrefix("\(frontendIP)/32")!], identity: frontend,
          policy: EndpointPolicy(
            revision: 1, ingressEnforced: false, egressEnforced: false, entries: [])))
      let toFrontend = Packet.ipv4(
        podIP, frontendIP, proto: Packet.tcp, sport: 43000, dport: 8080)
      let fromFrontend = Packet.ipv4(
        frontendIP, podIP, proto: Packet.tcp, sport: 8080, dport: 43000, tcpFlags: Packet.ack)
      #expect(try backend.passes(33, .egress, toFrontend))
      #expect(try backend.passes(33, .ingress, fromFrontend))
      // A datagram in fragments to the frontend: its first fragment passed, so later ones do.
      let udp =
        Packet.l4(proto: Packet.udp, sport: 45000, dport: 5353) + [UInt8](repeating: 0, count: 16)
      let laterFragment = Packet.ipv4Frame(
        podIP, frontendIP, proto: Packet.udp, payload: [UInt8](repeating: 0, count: 16), id: 77,
        fragmentOffset: 3, moreFragments: true)
      #expect(
        try backend.passes(
          33, .egress,
          Packet.ipv4Frame(
            podIP, frontendIP, proto: Packet.udp, payload: udp, id: 77, moreFragments: true)))
      #expect(try backend.passes(33, .egress, laterFragment))
      // The frontend pod goes; its address is handed to a pod of another identity.
      #expect(try datapath.removeEndpoint(id: 34))
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("\(frontendIP)/32")!, identity: other)
      ])
      #expect(try !backend.passes(33, .ingress, fromFrontend))
      #expect(try !backend.passes(33, .egress, laterFragment))
      #expect(
        try !backend.passes(
          33, .egress,
          Packet.ipv4(
            podIP, frontendIP, proto: Packet.tcp, sport: 43000, dport: 8080, tcpFlags: Packet.ack)))
      #expect(try backend.conntrackEntries().filter { $0.endpointID == 33 }.isEmpty)
    }
  }

  @Test(
    "on a bridge: a pod sends no router advertisement or redirect, and receives no new flow addressed to another pod"
  )
  func bridgeNeighbours() throws {
    try withDatapath { datapath, backend in
      // Every peer allowed in both directions: only the checks before policy can drop.
      _ = try datapath.realize(
        pod(
          id: 33, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(peer: frontend, direction: .ingress, proto: .any, ports: .any),
            PolicyEntry(peer: .worldIPv6, direction: .egress, proto: .any, ports: .any),
          ]))
      let advert = Packet.icmpMessage(type: 134, code: 0, rest: [64, 0, 0x07, 0x08])
      let redirect = Packet.icmpMessage(type: 137, code: 0, body: [UInt8](repeating: 0, count: 32))
      for message in [advert, redirect] {
        #expect(
          try !backend.passes(
            33, .egress,
            Packet.ipv6Frame(
              "fe80::5", "ff02::1", proto: Packet.icmpv6, payload: message, hopLimit: 255)))
      }
      #expect(try count(backend, 33, .egress, "drop-invalid-source") == 2)
      // A neighbour solicitation still passes.
      #expect(
        try backend.passes(
          33, .egress,
          Packet.ipv6Frame(
            podIP6, "ff02::1:ff00:1", proto: Packet.icmpv6,
            payload: Packet.icmpMessage(type: 135, code: 0, body: IPPrefix("fd00::1")!.bytes),
            hopLimit: 255)))
      // In: a new flow addressed to another pod (the bridge delivered it here because
      // this pod claimed that pod's MAC) is dropped; to this pod, its link-local
      // address or a multicast group it passes.
      let tcp = Packet.l4(proto: Packet.tcp, sport: 41000, dport: 8080)
      #expect(
        try !backend.passes(
          33, .ingress, Packet.ipv4Frame(frontendIP, "10.0.0.99", proto: Packet.tcp, payload: tcp)))
      #expect(
        try !backend.passes(
          33, .ingress, Packet.ipv6Frame(frontendIP6, "fd00::99", proto: Packet.tcp, payload: tcp)))
      #expect(try count(backend, 33, .ingress, "drop-invalid-packet") == 2)
      #expect(
        try backend.passes(
          33, .ingress, Packet.ipv4Frame(frontendIP, podIP, proto: Packet.tcp, payload: tcp)))
      #expect(
        try backend.passes(
          33, .ingress, Packet.ipv6Frame(frontendIP6, podIP6, proto: Packet.tcp, payload: tcp)))
      let udp = Packet.l4(proto: Packet.udp, sport: 5353, dport: 5353)
      #expect(
        try backend.passes(
          33, .ingress, Packet.ipv4Frame(frontendIP, "224.0.0.251", proto: Packet.udp, payload: udp)
        ))
      #expect(
        try backend.passes(
          33, .ingress, Packet.ipv6Frame(frontendIP6, "ff02::fb", proto: Packet.udp, payload: udp)))
      #expect(
        try backend.passes(
          33, .ingress, Packet.ipv6Frame(frontendIP6, "fe80::5", proto: Packet.udp, payload: udp)))
    }
  }

  @Test(
    "ND and MLD pass before policy only on the link: the hop limit an on-link sender gives, to a link-scope address or the node"
  )
  func neighbourDiscoveryStaysOnLink() throws {
    try withDatapath { datapath, backend in
      try datapath.upsertIPCache([IPCacheEntry(prefix: IPPrefix("fd00::ff/128")!, identity: .host)])
      _ = try datapath.realize(pod(id: 32, ingressEnforced: true, egressEnforced: true))
      let solicitation = Packet.icmpMessage(
        type: 135, code: 0, body: IPPrefix("fd00::ff")!.bytes)
      let report = Packet.icmpMessage(type: 143, code: 0)
      func out(
        _ destination: String, _ payload: [UInt8], hopLimit: UInt8, from source: String = podIP6
      ) throws -> Bool {
        try backend.passes(
          32, .egress,
          Packet.ipv6Frame(
            source, destination, proto: Packet.icmpv6, payload: payload, hopLimit: hopLimit))
      }
      // On the link: solicited-node multicast, link-local, the node's own address; MLD.
      #expect(try out("ff02::1:ff00:ff", solicitation, hopLimit: 255))
      #expect(try out("fe80::1", solicitation, hopLimit: 255))
      #expect(try out("fd00::ff", solicitation, hopLimit: 255))
      #expect(try out("ff02::16", report, hopLimit: 1, from: "fe80::5"))
      // Off the link (forwarded by the node) or with another hop limit: policy, which
      // allows nothing here.
      #expect(try !out(otherIP6, solicitation, hopLimit: 255))
      #expect(try !out("ff02::1:ff00:ff", solicitation, hopLimit: 64))
      // MLD from a global source: no MLD (RFC 2710, 3810), judged by policy.
      #expect(try !out("ff02::16", report, hopLimit: 1))
      #expect(try count(backend, 32, .egress, "drop-policy-default") == 3)
      // Not MLD (hop limit 2), so its link-local source is no source it may use.
      #expect(try !out("ff05::16", report, hopLimit: 2, from: "fe80::5"))
      #expect(try count(backend, 32, .egress, "drop-invalid-source") == 1)
      // In: only what an on-link sender gives (a forwarded message lost a hop; a
      // forwarded MLD can arrive with hop limit 1, but never from a link-local source).
      #expect(
        try backend.passes(
          32, .ingress,
          Packet.ipv6Frame("fe80::1", "ff02::1", proto: Packet.icmpv6, payload: report, hopLimit: 1)
        ))
      #expect(
        try !backend.passes(
          32, .ingress,
          Packet.ipv6Frame(otherIP6, podIP6, proto: Packet.icmpv6, payload: report, hopLimit: 1)))
      #expect(
        try backend.passes(
          32, .ingress,
          Packet.ipv6Frame(
            "fe80::1", podIP6, proto: Packet.icmpv6, payload: solicitation, hopLimit: 255)))
      #expect(
        try !backend.passes(
          32, .ingress,
          Packet.ipv6Frame(
            otherIP6, podIP6, proto: Packet.icmpv6, payload: solicitation, hopLimit: 254)))
    }
  }

  @Test(
    "ICMP conntrack entries on ports 0, 0 (what older programs made of every ICMP message) are removed at start-up"
  )
  func portlessICMPConntrackRemoved() throws {
    try BPFTestEnvironment.withBackend { backend, pin in
      let datapath = try Datapath(backend: backend)
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("\(frontendIP)/32")!, identity: frontend)
      ])
      _ = try datapath.realize(pod(id: 34))
      #expect(try backend.passes(34, .ingress, icmp(frontendIP, podIP, type: 8, id: 0)))
      #expect(try backend.passes(34, .ingress, icmp(frontendIP, podIP, type: 8, id: 7)))
      #expect(
        try backend.passes(
          34, .ingress, Packet.ipv4(frontendIP, podIP, proto: Packet.tcp, sport: 4000, dport: 80)))
      func tracked(_ b: BPFDatapathBackend) throws -> [ConntrackEntry] {
        try b.conntrackEntries().filter { $0.endpointID == 34 }
      }
      #expect(try tracked(backend).count == 3)
      // A restart of the daemon: the same maps, a new backend.
      let restarted = try BPFDatapathBackend(
        configuration: .init(objectPath: BPFTestEnvironment.objectPath!, pinDirectory: pin))
      let left = try tracked(restarted)
      #expect(left.count == 2)
      #expect(!left.contains { $0.proto == .icmp && $0.sourcePort == 0 && $0.destinationPort == 0 })
    }
  }

  @Test("ICMP in IPv6 and ICMPv6 in IPv4 are no real packets: dropped as invalid")
  func icmpOfTheOtherFamily() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(pod(id: 33))
      let echo = Packet.icmpMessage(type: 8, code: 0, rest: [0, 1, 0, 1])
      #expect(
        try !backend.passes(
          33, .ingress, Packet.ipv6Frame(frontendIP6, podIP6, proto: Packet.icmp, payload: echo)))
      #expect(
        try !backend.passes(
          33, .ingress, Packet.ipv4Frame(frontendIP, podIP, proto: Packet.icmpv6, payload: echo)))
      #expect(try count(backend, 33, .ingress, "drop-invalid-packet") == 2)
    }
  }

  @Test("every reason has a name, and the new ones count as what they are")
  func reasonNames() {
    #expect(BPFDatapathBackend.reasonNames.count == Int(TESSERA_REASON_MAX.rawValue))
    #expect(tessera_reason_is_drop(UInt32(TESSERA_DROP_INVALID_SOURCE.rawValue)) != 0)
    #expect(tessera_reason_is_drop(UInt32(TESSERA_FWD_CT_RELATED.rawValue)) == 0)
    #expect(tessera_reason_is_drop(UInt32(TESSERA_FWD_FRAGMENT.rawValue)) == 0)
  }

  @Test(
    "a forged IPv4/IPv6 TCP/UDP source is dropped before conntrack and policy; the own source passes"
  )
  func forgedSources() throws {
    try withDatapath { datapath, backend in
      // Egress allows the destination: only the source can stop the packet.
      _ = try datapath.realize(
        pod(
          id: 1, egressEnforced: true,
          entries: [PolicyEntry(peer: other, direction: .egress, proto: .any, ports: .any)]))
      #expect(
        try backend.passes(
          1, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.tcp, sport: 40000, dport: 8080)))
      #expect(
        try backend.passes(
          1, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 40000, dport: 53)))
      #expect(
        try backend.passes(1, .egress, Packet.ipv6TCP(podIP6, otherIP6, sport: 40000, dport: 8080)))
      #expect(
        try !backend.passes(
          1, .egress, Packet.ipv4(frontendIP, otherIP, proto: Packet.tcp, sport: 40001, dport: 8080)
        ))
      #expect(
        try !backend.passes(
          1, .egress, Packet.ipv4(frontendIP, otherIP, proto: Packet.udp, sport: 40001, dport: 53)))
      #expect(
        try !backend.passes(
          1, .egress, Packet.ipv6TCP(frontendIP6, otherIP6, sport: 40001, dport: 8080)))
      #expect(
        try !backend.passes(
          1, .egress,
          Packet.ipv6Frame(
            frontendIP6, otherIP6, proto: Packet.udp,
            payload: Packet.l4(proto: Packet.udp, sport: 1, dport: 53))))
      // A forged source riding a tracked flow: the tuple of the established
      // flow above, but from a neighbour's address, and the flow's "reply".
      #expect(
        try !backend.passes(
          1, .egress,
          Packet.ipv4(
            otherIP, podIP, proto: Packet.tcp, sport: 8080, dport: 40000, tcpFlags: Packet.ack)))
      #expect(
        try !backend.passes(
          1, .egress,
          Packet.ipv4(
            otherIP, otherIP, proto: Packet.tcp, sport: 8080, dport: 40000, tcpFlags: Packet.ack)))
      #expect(try count(backend, 1, .egress, "drop-invalid-source") == 6)
      let counters = try backend.counters(endpointID: 1)
      #expect(counters.egressDropped == 6)
      #expect(
        counters.reasons.contains {
          $0.direction == .egress && $0.reason == "drop-invalid-source" && $0.packets == 6
        })
      // The established flow still passes from the own source.
      #expect(
        try backend.passes(
          1, .egress,
          Packet.ipv4(
            podIP, otherIP, proto: Packet.tcp, sport: 40000, dport: 8080, tcpFlags: Packet.ack)))
    }
  }

  @Test(
    "link-local and unspecified IPv6 sources pass for neighbour discovery only; no address, no IP")
  func linkLocal() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(pod(id: 2))
      let solicitation = Packet.icmpMessage(
        type: 135, code: 0, body: [UInt8](repeating: 0, count: 16))
      #expect(
        try backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            "fe80::1", "ff02::1:ff00:5", proto: Packet.icmpv6, payload: solicitation, hopLimit: 255)
        ))
      #expect(
        try backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            "::", "ff02::1:ff00:5", proto: Packet.icmpv6, payload: solicitation, hopLimit: 255)))
      #expect(
        try backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            podIP6, "ff02::1:ff00:9", proto: Packet.icmpv6, payload: solicitation, hopLimit: 255)))
      // ND from a neighbour's global address, and link-local TCP: dropped.
      #expect(
        try !backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            otherIP6, "ff02::1:ff00:5", proto: Packet.icmpv6, payload: solicitation, hopLimit: 255))
      )
      #expect(
        try !backend.passes(
          2, .egress, Packet.ipv6TCP("fe80::1", otherIP6, sport: 40000, dport: 80)))
      #expect(
        try !backend.passes(2, .egress, Packet.ipv6TCP("::", otherIP6, sport: 40000, dport: 80)))
      #expect(try count(backend, 2, .egress, "drop-invalid-source") == 3)

      // A neighbour advertisement announces its target: the pod's own address or a link-local one only.
      func advert(_ target: String) -> [UInt8] {
        Packet.icmpMessage(
          type: 136, code: 0, rest: [0x60, 0, 0, 0], body: IPPrefix(target)!.bytes)
      }
      #expect(
        try backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            podIP6, "ff02::1", proto: Packet.icmpv6, payload: advert(podIP6), hopLimit: 255)))
      #expect(
        try backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            "fe80::1", "ff02::1", proto: Packet.icmpv6, payload: advert("fe80::1"), hopLimit: 255)))
      #expect(
        try !backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            podIP6, "ff02::1", proto: Packet.icmpv6, payload: advert(otherIP6), hopLimit: 255)))
      #expect(
        try !backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            "fe80::1", "ff02::1", proto: Packet.icmpv6, payload: advert(otherIP6), hopLimit: 255)))
      let truncated = Packet.icmpMessage(type: 136, code: 0, rest: [0x60, 0, 0, 0])
      #expect(
        try !backend.passes(
          2, .egress,
          Packet.ipv6Frame(
            podIP6, "ff02::1", proto: Packet.icmpv6, payload: truncated, hopLimit: 255))
      )
      // The pod's own address as the target, but past the length the IPv6 header declares
      // (8: the ICMPv6 header alone): trailing bytes are no target, and the stack would read
      // the message as truncated.
      let trailingTarget = declaring(
        8,
        Packet.ipv6Frame(
          podIP6, "ff02::1", proto: Packet.icmpv6, payload: advert(podIP6), hopLimit: 255))
      #expect(try !backend.passes(2, .egress, trailingTarget))
      #expect(try count(backend, 2, .egress, "drop-invalid-source") == 7)

      _ = try datapath.realize(pod(id: 3, ips: []))
      #expect(
        try !backend.passes(
          3, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 1, dport: 53)))
      #expect(
        try !backend.passes(
          3, .egress,
          Packet.ipv6Frame(
            "fe80::1", "ff02::1:ff00:5", proto: Packet.icmpv6, payload: solicitation, hopLimit: 255)
        ))
      #expect(try !backend.passes(3, .egress, Packet.arp(sender: podIP, target: otherIP)))
      #expect(try count(backend, 3, .egress, "drop-invalid-source") == 3)
    }
  }

  @Test(
    "only ARP and IP pass: VLAN-tagged, LLDP, IPX dropped; ARP from the container must announce its own address"
  )
  func ethertypes() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(pod(id: 4))
      let ip = Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 1, dport: 53)
      for direction in [TrafficDirection.egress, .ingress] {
        #expect(try !backend.passes(4, direction, Packet.vlanTagged(ip)))
        #expect(try !backend.passes(4, direction, Packet.vlanTagged(ip, tpid: 0x88a8)))
        #expect(
          try !backend.passes(
            4, direction, Packet.frame(ethertype: 0x88cc, [UInt8](repeating: 0, count: 46))))
        #expect(
          try !backend.passes(
            4, direction, Packet.frame(ethertype: 0x8137, [UInt8](repeating: 0, count: 46))))
        #expect(try count(backend, 4, direction, "drop-unknown-l3") == 4)
      }
      #expect(try backend.passes(4, .egress, Packet.arp(sender: podIP, target: otherIP)))
      #expect(try backend.passes(4, .egress, Packet.arp(sender: "0.0.0.0", target: podIP)))
      #expect(try !backend.passes(4, .egress, Packet.arp(sender: frontendIP, target: otherIP)))
      #expect(try count(backend, 4, .egress, "drop-invalid-source") == 1)
      // The host answering the pod: ARP into the container is not judged.
      #expect(try backend.passes(4, .ingress, Packet.arp(sender: frontendIP, target: podIP)))
    }
  }

  @Test(
    "IPv6 extension chains are parsed to the end (8 headers) or dropped, never judged with port 0")
  func extensionHeaders() throws {
    try withDatapath { datapath, backend in
      // Deny frontend TCP 22, allow frontend anything else.
      _ = try datapath.realize(
        pod(
          id: 5, ingressEnforced: true,
          entries: [
            PolicyEntry(peer: frontend, direction: .ingress, proto: .any, ports: .any),
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 22),
              verdict: .deny),
          ]))
      var sport: UInt16 = 41000
      func into(headers: Int, extension type: UInt8 = 60, dport: UInt16) throws -> Bool {
        sport += 1
        let chain = [(UInt8, [UInt8])](repeating: (type, [0, 0, 0, 0, 0, 0]), count: headers)
        return try backend.passes(
          5, .ingress,
          Packet.ipv6Frame(
            frontendIP6, podIP6, extensions: chain, proto: Packet.tcp,
            payload: Packet.l4(proto: Packet.tcp, sport: sport, dport: dport)))
      }
      for headers in [0, 1, 4, 5, 8] {
        #expect(try !into(headers: headers, dport: 22), "\(headers) headers")
        #expect(try into(headers: headers, dport: 80), "\(headers) headers")
      }
      #expect(try !into(headers: 9, dport: 80))
      #expect(try !into(headers: 12, dport: 22))
      #expect(try count(backend, 5, .ingress, "drop-ipv6-ext-headers") == 2)
      // Extension headers the parser does not walk: dropped.
      for type: UInt8 in [135, 139, 140, 253, 254] {
        #expect(try !into(headers: 1, extension: type, dport: 80), "header \(type)")
      }
      #expect(try count(backend, 5, .ingress, "drop-ipv6-ext-headers") == 7)
      // A routing header with segments left: the destination is a waypoint, and the
      // packet's real destination is in the header. Dropped, whatever the routing type;
      // with no segment left it is only a record of the route, walked past as any header.
      func routed(type: UInt8, segmentsLeft: UInt8, _ direction: TrafficDirection) throws
        -> Bool
      {
        sport += 1
        let (source, destination) =
          direction == .ingress ? (frontendIP6, podIP6) : (podIP6, frontendIP6)
        return try backend.passes(
          5, direction,
          Packet.ipv6Frame(
            source, destination,
            extensions: [
              (43, [type, segmentsLeft, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 16))
            ],
            proto: Packet.tcp, payload: Packet.l4(proto: Packet.tcp, sport: sport, dport: 80)))
      }
      for type: UInt8 in [0, 2, 3, 4] {
        #expect(try !routed(type: type, segmentsLeft: 1, .ingress), "type \(type) in")
        #expect(try !routed(type: type, segmentsLeft: 1, .egress), "type \(type) out")
        #expect(try routed(type: type, segmentsLeft: 0, .ingress), "type \(type), none left")
      }
      #expect(try count(backend, 5, .ingress, "drop-ipv6-ext-headers") == 11)
    }
  }

  @Test(
    "fragments: later fragments pass only after their first fragment passed, per endpoint and direction"
  )
  func fragments() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        pod(
          id: 6, ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .udp, ports: PortRange(single: 53))
          ]))
      let udp53 =
        Packet.l4(proto: Packet.udp, sport: 5353, dport: 53) + [UInt8](repeating: 0, count: 16)
      let udp99 =
        Packet.l4(proto: Packet.udp, sport: 5353, dport: 99) + [UInt8](repeating: 0, count: 16)
      let middle = [UInt8](repeating: 0xab, count: 24)
      func v4(
        _ payload: [UInt8], id: UInt16, offset: UInt16, more: Bool, proto: UInt8 = Packet.udp,
        from: String = frontendIP
      ) -> [UInt8] {
        Packet.ipv4Frame(
          from, podIP, proto: proto, payload: payload, id: id, fragmentOffset: offset,
          moreFragments: more)
      }
      // Allowed first fragment, then its later fragments.
      #expect(try backend.passes(6, .ingress, v4(udp53, id: 7, offset: 0, more: true)))
      #expect(try backend.passes(6, .ingress, v4(middle, id: 7, offset: 3, more: true)))
      #expect(try backend.passes(6, .ingress, v4(middle, id: 7, offset: 6, more: false)))
      #expect(try count(backend, 6, .ingress, "forward-fragment") == 2)
      // Denied first fragment: its later fragments are dropped too.
      #expect(try !backend.passes(6, .ingress, v4(udp99, id: 8, offset: 0, more: true)))
      #expect(try !backend.passes(6, .ingress, v4(middle, id: 8, offset: 3, more: false)))
      // A later fragment without a first one, one of another sender, one at offset 1 of TCP.
      #expect(try !backend.passes(6, .ingress, v4(middle, id: 9, offset: 3, more: false)))
      #expect(
        try !backend.passes(6, .ingress, v4(middle, id: 7, offset: 3, more: false, from: otherIP)))
      #expect(
        try !backend.passes(
          6, .ingress, v4(middle, id: 7, offset: 1, more: false, proto: Packet.tcp)))
      // The first fragment's pass is per direction: not usable the other way.
      #expect(
        try !backend.passes(
          6, .egress,
          Packet.ipv4Frame(
            podIP, frontendIP, proto: Packet.udp, payload: middle, id: 7, fragmentOffset: 3)))
      #expect(try count(backend, 6, .ingress, "drop-fragment") == 3)

      // IPv6: the fragment header.
      func v6(_ payload: [UInt8], id: UInt32, offset: UInt16, more: Bool) -> [UInt8] {
        Packet.ipv6Frame(
          frontendIP6, podIP6,
          extensions: [(44, Packet.ipv6FragmentHeader(offset: offset, more: more, id: id))],
          proto: Packet.udp, payload: payload)
      }
      #expect(try backend.passes(6, .ingress, v6(udp53, id: 70, offset: 0, more: true)))
      #expect(try backend.passes(6, .ingress, v6(middle, id: 70, offset: 3, more: false)))
      #expect(try !backend.passes(6, .ingress, v6(udp99, id: 80, offset: 0, more: true)))
      #expect(try !backend.passes(6, .ingress, v6(middle, id: 80, offset: 3, more: false)))
      #expect(try !backend.passes(6, .ingress, v6(middle, id: 90, offset: 3, more: false)))
    }
  }

  @Test(
    "a header past the length the IP header declares is no header: a first fragment whose ports are only in trailing bytes is invalid"
  )
  func headersPastDeclaredLength() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        pod(
          id: 6, ingressEnforced: true,
          entries: [
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 80))
          ]))
      let tcp80 = Packet.l4(proto: Packet.tcp, sport: 40000, dport: 80, tcpFlags: Packet.syn)
      // IPv4: total length 20 (the header alone), the TCP header after it in the frame.
      let v4 = Packet.ipv4Frame(frontendIP, podIP, proto: Packet.tcp, payload: tcp80)
      #expect(try backend.passes(6, .ingress, v4))
      #expect(try !backend.passes(6, .ingress, declaring(20, v4)))
      // IPv6 (RFC 7112's case): a first fragment whose payload length ends after a
      // destination options header, the TCP header to an allowed port only in the
      // frame's trailing bytes; a later fragment would bring the real one.
      let v6 = Packet.ipv6Frame(
        frontendIP6, podIP6,
        extensions: [
          (44, Packet.ipv6FragmentHeader(offset: 0, more: true, id: 77)), (60, []),
        ], proto: Packet.tcp, payload: tcp80)
      // 16: the fragment and destination options headers.
      #expect(try !backend.passes(6, .ingress, declaring(16, v6)))
      #expect(try count(backend, 6, .ingress, "drop-invalid-packet") == 2)
      // The same with its true length passes: the bound is the declared length, not more.
      #expect(
        try backend.passes(
          6, .ingress,
          Packet.ipv6Frame(
            frontendIP6, podIP6,
            extensions: [(44, Packet.ipv6FragmentHeader(offset: 0, more: true, id: 78)), (60, [])],
            proto: Packet.tcp, payload: tcp80)))
    }
  }

  @Test(
    "an ICMP error about a tracked flow passes (PMTU) from the flow's path; one about any other flow, or from another pod, is judged by policy"
  )
  func icmpErrors() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(
        pod(
          id: 7, ingressEnforced: true, egressEnforced: true,
          entries: [
            PolicyEntry(peer: other, direction: .egress, proto: .tcp, ports: PortRange(single: 80)),
            PolicyEntry(
              peer: frontend, direction: .ingress, proto: .udp, ports: PortRange(single: 53)),
          ]))
      let syn = Packet.ipv4Packet(
        podIP, otherIP, proto: Packet.tcp,
        payload: Packet.l4(proto: Packet.tcp, sport: 40000, dport: 80))
      #expect(try backend.passes(7, .egress, [UInt8](Packet.frame(ethertype: 0x0800, syn))))
      func fragNeeded(quoting quoted: [UInt8], from: String = routerIP, to: String = podIP)
        -> [UInt8]
      {
        Packet.ipv4Frame(
          from, to, proto: Packet.icmp,
          payload: Packet.icmpMessage(type: 3, code: 4, rest: [0, 0, 5, 0x78], body: quoted))
      }
      #expect(try backend.passes(7, .ingress, fragNeeded(quoting: syn)))
      // The same error declaring a length that ends before the quoted ports (outer header,
      // ICMP header, quoted IP header): the ports in the frame's trailing bytes are no quote,
      // so it is judged by policy, which allows no ICMP in.
      #expect(try !backend.passes(7, .ingress, declaring(20 + 8 + 20, fragNeeded(quoting: syn))))
      #expect(
        try backend.passes(
          7, .ingress,
          Packet.ipv4Frame(
            routerIP, podIP, proto: Packet.icmp,
            payload: Packet.icmpMessage(type: 11, code: 0, body: syn))))
      #expect(try count(backend, 7, .ingress, "forward-ct-related") == 2)
      // The same errors from another pod (frontend, a workload that is not the flow's
      // peer): judged by policy, which allows frontend only UDP 53. From the peer itself
      // (other, a port unreachable) and from the node (host) they pass.
      #expect(try !backend.passes(7, .ingress, fragNeeded(quoting: syn, from: frontendIP)))
      #expect(
        try !backend.passes(
          7, .ingress,
          Packet.ipv4Frame(
            frontendIP, podIP, proto: Packet.icmp,
            payload: Packet.icmpMessage(type: 3, code: 3, body: syn))))
      #expect(
        try backend.passes(
          7, .ingress,
          Packet.ipv4Frame(
            otherIP, podIP, proto: Packet.icmp,
            payload: Packet.icmpMessage(type: 3, code: 3, body: syn))))
      try datapath.upsertIPCache([
        IPCacheEntry(prefix: IPPrefix("10.0.9.1/32")!, identity: .host)
      ])
      #expect(try backend.passes(7, .ingress, fragNeeded(quoting: syn, from: "10.0.9.1")))
      #expect(try count(backend, 7, .ingress, "forward-ct-related") == 4)
      // Untracked flow, and a quoted packet the pod did not send: not related, denied.
      let untracked = Packet.ipv4Packet(
        podIP, otherIP, proto: Packet.tcp,
        payload: Packet.l4(proto: Packet.tcp, sport: 40001, dport: 80))
      #expect(try !backend.passes(7, .ingress, fragNeeded(quoting: untracked)))
      let notOurs = Packet.ipv4Packet(
        frontendIP, otherIP, proto: Packet.tcp,
        payload: Packet.l4(proto: Packet.tcp, sport: 40000, dport: 80))
      #expect(try !backend.passes(7, .ingress, fragNeeded(quoting: notOurs)))
      // The error passed without opening anything: the flow's reverse is still new.
      #expect(
        try !backend.passes(
          7, .ingress, Packet.ipv4(routerIP, podIP, proto: Packet.tcp, sport: 80, dport: 40000)))

      // From the container: a port unreachable about an allowed incoming
      // flow goes back to its sender, and to nobody else.
      let query = Packet.ipv4Packet(
        frontendIP, podIP, proto: Packet.udp,
        payload: Packet.l4(proto: Packet.udp, sport: 5353, dport: 53))
      #expect(try backend.passes(7, .ingress, Packet.frame(ethertype: 0x0800, query)))
      let unreachable = Packet.icmpMessage(type: 3, code: 3, body: query)
      #expect(
        try backend.passes(
          7, .egress, Packet.ipv4Frame(podIP, frontendIP, proto: Packet.icmp, payload: unreachable))
      )
      #expect(
        try !backend.passes(
          7, .egress, Packet.ipv4Frame(podIP, otherIP, proto: Packet.icmp, payload: unreachable)))

      // IPv6 packet too big.
      let syn6 = Packet.ipv6Packet(
        podIP6, otherIP6, proto: Packet.tcp,
        payload: Packet.l4(proto: Packet.tcp, sport: 40000, dport: 80))
      #expect(try backend.passes(7, .egress, Packet.frame(ethertype: 0x86DD, syn6)))
      let tooBig = Packet.icmpMessage(type: 2, code: 0, rest: [0, 0, 5, 0], body: syn6)
      #expect(
        try backend.passes(
          7, .ingress,
          Packet.ipv6Frame("2001:db8::1", podIP6, proto: Packet.icmpv6, payload: tooBig)))
      #expect(
        try !backend.passes(
          7, .ingress,
          Packet.ipv6Frame(frontendIP6, podIP6, proto: Packet.icmpv6, payload: tooBig)),
        "packet too big from another pod")
      #expect(
        try !backend.passes(
          7, .ingress,
          declaring(
            8 + 40,
            Packet.ipv6Frame("2001:db8::1", podIP6, proto: Packet.icmpv6, payload: tooBig))))
      let untracked6 = Packet.ipv6Packet(
        podIP6, otherIP6, proto: Packet.tcp,
        payload: Packet.l4(proto: Packet.tcp, sport: 40009, dport: 80))
      #expect(
        try !backend.passes(
          7, .ingress,
          Packet.ipv6Frame(
            "2001:db8::1", podIP6, proto: Packet.icmpv6,
            payload: Packet.icmpMessage(type: 2, code: 0, body: untracked6))))
    }
  }

  @Test(
    "a failed first realise leaves nothing behind and names the missing device; a failed later one is redone in full"
  )
  func failedRealise() throws {
    try BPFTestEnvironment.withBackend { backend, pin in
      let datapath = try Datapath(backend: backend)
      var wanted = pod(
        id: 9,
        entries: [
          PolicyEntry(
            peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 80))
        ])
      wanted.hostInterface = "dpnosuch\(getpid() % 10000)"
      do {
        _ = try datapath.realize(wanted)
        Issue.record("realise on a missing device succeeded")
      } catch let error as DatapathError {
        #expect(error.code == .precondition)
        #expect(error.message.contains(wanted.hostInterface))
        #expect(error.rpcErrorCode == .failedPrecondition)
      }
      #expect(!FileManager.default.fileExists(atPath: "\(pin)/endpoints/9"))
      #expect(try backend.restoreEndpoints().isEmpty)
      #expect(throws: DatapathError.self) { try backend.counters(endpointID: 9) }
      // Nothing of any endpoint is left in the policy and counters maps.
      for map in ["tessera_policy", "tessera_metrics", "tessera_endpoints"] {
        if let dump = bpftoolDump("\(pin)/globals/\(map)") {
          #expect(dump == "[]", "\(map): \(dump)")
        }
      }
      #expect(try datapath.ipcacheEntries().allSatisfy { $0.identity != NumericIdentity(1000) })

      // A later realise that fails: the next one rewrites everything.
      try BPFTestEnvironment.withDummyDevices(1) { devices in
        wanted.hostInterface = devices[0]
        _ = try datapath.realize(wanted)
        #expect(FileManager.default.fileExists(atPath: "\(pin)/endpoints/9/from_container"))
        var moved = wanted
        moved.hostInterface = "dpnosuch\(getpid() % 10000)"
        moved.policy = EndpointPolicy(
          revision: 2, ingressEnforced: true, egressEnforced: false, entries: [])
        #expect(throws: DatapathError.self) { try datapath.realize(moved) }
        var back = wanted
        back.policy = EndpointPolicy(
          revision: 3, ingressEnforced: true, egressEnforced: false,
          entries: [
            PolicyEntry(peer: other, direction: .ingress, proto: .udp, ports: PortRange(single: 53))
          ])
        _ = try datapath.realize(back)
        #expect(try Set(backend.policyEntries(endpointID: 9)) == Set(back.policy.entries))
        #expect(try datapath.removeEndpoint(id: 9))
      }
      #expect(!FileManager.default.fileExists(atPath: "\(pin)/endpoints/9"))
    }
  }

  /// `bpftool -j map dump` of a pinned map, nil when bpftool is missing.
  private func bpftoolDump(_ path: String) -> String? {
    guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bpftool") else { return nil }
    let process = Process()
    let pipe = Pipe()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/bpftool")
    process.arguments = ["-j", "map", "dump", "pinned", path]
    process.standardOutput = pipe
    guard (try? process.run()) != nil else { return nil }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
  }

  @Test(
    "a counters map pinned by older programs (fewer reasons) is replaced on startup, its counts kept"
  )
  func metricsUpgrade() throws {
    guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bpftool") else {
      print("BPFHardeningTests: metricsUpgrade skipped: /usr/sbin/bpftool missing")
      return
    }
    let pin = "/sys/fs/bpf/datapath-upgrade-\(getpid())"
    defer { BPFTestEnvironment.removePinDirectory(pin) }
    try FileManager.default.createDirectory(
      atPath: "\(pin)/globals", withIntermediateDirectories: true)
    // The value of programs with 12 reasons: 2 * 12 counters of 16 bytes.
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/bpftool")
    process.arguments = [
      "map", "create", "\(pin)/globals/tessera_metrics", "type", "percpu_hash", "key", "8", "value",
      "384", "entries", "16", "name",
      "tessera_metrics", "flags", "1",
    ]
    try process.run()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0)
    let backend = try BPFDatapathBackend(
      configuration: .init(objectPath: BPFTestEnvironment.objectPath!, pinDirectory: pin))
    let datapath = try Datapath(backend: backend)
    _ = try datapath.realize(pod(id: 10))
    #expect(
      try !backend.passes(
        10, .egress, Packet.ipv4(frontendIP, otherIP, proto: Packet.udp, sport: 1, dport: 53)))
    #expect(try count(backend, 10, .egress, "drop-invalid-source") == 1)
    #expect(try datapath.removeEndpoint(id: 10))
  }
}
