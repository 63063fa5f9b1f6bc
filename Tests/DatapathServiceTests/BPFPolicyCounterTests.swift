import CTesseraBPF
import Foundation
import TesseraCore
import Testing

@testable import DatapathService

private let frontend = NumericIdentity(2000)
private let other = NumericIdentity(3000)
private let frontendIP = "10.0.1.1"
private let otherIP = "10.0.2.7"
private let podIP = "10.0.0.5"

private let web = PolicyEntry(
  peer: other, direction: .egress, proto: .tcp, ports: PortRange(single: 80))
private let tls = PolicyEntry(
  peer: other, direction: .egress, proto: .tcp, ports: PortRange(single: 443))
private let admin = PolicyEntry(
  peer: frontend, direction: .ingress, proto: .tcp, ports: PortRange(single: 8080))
private let noDNS = PolicyEntry(
  peer: other, direction: .egress, proto: .udp, ports: PortRange(single: 53), verdict: .deny)

/// Packets and bytes per policy entry (`tessera_policy_stats`): the entry
/// that allowed a connection counts every packet of it, both directions;
/// a deny entry counts its drops.
@Suite(
  "eBPF datapath: per-entry counters", .serialized, .enabled(if: BPFTestEnvironment.available))
struct BPFPolicyCounterTests {
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

  private func pod(_ entries: [PolicyEntry], revision: UInt64 = 1) -> DatapathEndpoint {
    endpoint(
      id: 1, ip: "\(podIP)/32", revision: revision, ingressEnforced: true, egressEnforced: true,
      entries: entries)
  }

  /// Packets and bytes counted on each entry of the endpoint.
  private func counts(_ backend: BPFDatapathBackend, _ id: UInt64 = 1) throws -> [PolicyEntry: (
    packets: UInt64, bytes: UInt64
  )] {
    Dictionary(
      uniqueKeysWithValues: try backend.countedPolicyEntries(endpointID: id).map {
        ($0.entry, ($0.packets, $0.bytes))
      })
  }

  /// A TCP connection to `otherIP:dport` from source port `sport`: its SYN,
  /// `forward` more packets of the flow and `replies` packets back; returns
  /// the bytes of every packet sent.
  private func connection(
    _ backend: BPFDatapathBackend, sport: UInt16, dport: UInt16, forward: Int, replies: Int,
    open: Bool = true
  ) throws -> UInt64 {
    var bytes: UInt64 = 0
    if open {
      let syn = Packet.ipv4(podIP, otherIP, proto: Packet.tcp, sport: sport, dport: dport)
      #expect(try backend.passes(1, .egress, syn))
      bytes += UInt64(syn.count)
    }
    let ack = Packet.ipv4(
      podIP, otherIP, proto: Packet.tcp, sport: sport, dport: dport, tcpFlags: Packet.ack)
    let reply = Packet.ipv4(
      otherIP, podIP, proto: Packet.tcp, sport: dport, dport: sport, tcpFlags: Packet.ack)
    for _ in 0..<forward {
      #expect(try backend.passes(1, .egress, ack))
      bytes += UInt64(ack.count)
    }
    for _ in 0..<replies {
      #expect(try backend.passes(1, .ingress, reply))
      bytes += UInt64(reply.count)
    }
    return bytes
  }

  @Test(
    "the entry that allowed a connection counts its packets both ways; a deny entry its drops; nothing else moves"
  )
  func countsPerEntry() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(pod([web, tls, admin, noDNS]))
      #expect(try counts(backend).values.allSatisfy { $0 == (0, 0) })

      let bytes = try connection(backend, sport: 40000, dport: 80, forward: 5, replies: 4)
      var now = try counts(backend)
      #expect(now[web]?.packets == 10)
      #expect(now[web]?.bytes == bytes)
      for entry in [tls, admin, noDNS] { #expect(now[entry]?.packets == 0, "\(entry)") }

      // Drops by the deny entry count on it; a default-deny drop counts nowhere.
      let dns = Packet.ipv4(podIP, otherIP, proto: Packet.udp, sport: 5353, dport: 53)
      for _ in 0..<3 { #expect(try !backend.passes(1, .egress, dns)) }
      #expect(
        try !backend.passes(
          1, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.tcp, sport: 40001, dport: 9999)))
      now = try counts(backend)
      #expect(now[noDNS]?.packets == 3)
      #expect(now[noDNS]?.bytes == 3 * UInt64(dns.count))
      #expect(now[web]?.packets == 10)
      #expect(now[tls]?.packets == 0)
      #expect(now[admin]?.packets == 0)

      // A second connection on the same entry adds to it.
      _ = try connection(backend, sport: 40002, dport: 80, forward: 1, replies: 1)
      #expect(try counts(backend)[web]?.packets == 13)
    }
  }

  @Test(
    "an entry deleted and added again starts at 0, and connections it allowed before never count on the slot again"
  )
  func deleteAndReAdd() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(pod([web, admin]))
      _ = try connection(backend, sport: 40000, dport: 80, forward: 2, replies: 2)
      #expect(try counts(backend)[web]?.packets == 5)
      let webSlot = try #require(slots(backend)[web])

      // Deleted: the connection stays (conntrack), its slot is free.
      _ = try datapath.realize(pod([admin], revision: 2))
      _ = try connection(backend, sport: 40000, dport: 80, forward: 1, replies: 1, open: false)
      // A new entry takes the freed slot under a new generation: the old
      // connection's packets do not count on it.
      _ = try datapath.realize(pod([admin, tls], revision: 3))
      #expect(try slots(backend)[tls] == webSlot, "the freed slot is handed out again")
      _ = try connection(backend, sport: 40000, dport: 80, forward: 2, replies: 2, open: false)
      #expect(try counts(backend)[tls]?.packets == 0)

      // Added again: at 0, and still not moved by the old connection.
      _ = try datapath.realize(pod([admin, tls, web], revision: 4))
      #expect(try counts(backend)[web]?.packets == 0)
      _ = try connection(backend, sport: 40000, dport: 80, forward: 2, replies: 2, open: false)
      #expect(try counts(backend)[web]?.packets == 0)
      #expect(try counts(backend)[tls]?.packets == 0)
      // A new connection counts on the new entry.
      _ = try connection(backend, sport: 40003, dport: 80, forward: 1, replies: 0)
      #expect(try counts(backend)[web]?.packets == 2)
    }
  }

  @Test("a port range that changes gets new counters; an unchanged entry keeps its own")
  func changedRange() throws {
    try withDatapath { datapath, backend in
      _ = try datapath.realize(pod([web, tls]))
      _ = try connection(backend, sport: 40000, dport: 80, forward: 1, replies: 1)
      _ = try connection(backend, sport: 40001, dport: 443, forward: 0, replies: 0)
      var wider = web
      wider.ports = PortRange(80, 90)
      _ = try datapath.realize(pod([wider, tls], revision: 2))
      let now = try counts(backend)
      #expect(now[wider]?.packets == 0)
      #expect(now[tls]?.packets == 1)
      #expect(Set(try slots(backend).values).count == 2)
      #expect(
        try backend.state.withLock { $0.counterSlots.count } == 2, "the old range's slot is freed")
    }
  }

  @Test("a restart of the daemon keeps the counters and the slot of every entry")
  func restart() throws {
    let pin = "/sys/fs/bpf/tessera-test-counters-\(getpid())"
    defer { BPFTestEnvironment.removePinDirectory(pin) }
    let configuration = BPFDatapathBackend.Configuration(
      objectPath: BPFTestEnvironment.objectPath!, pinDirectory: pin)
    var first: BPFDatapathBackend? = try BPFDatapathBackend(configuration: configuration)
    let datapath = try Datapath(backend: first!)
    try datapath.upsertIPCache([
      IPCacheEntry(prefix: IPPrefix("10.0.2.0/24")!, identity: other)
    ])
    _ = try datapath.realize(pod([web, tls, admin]))
    _ = try connection(first!, sport: 40000, dport: 80, forward: 3, replies: 3)
    let before = try counts(first!)
    let slotsBefore = try slots(first!)
    first = nil

    let second = try BPFDatapathBackend(configuration: configuration)
    defer { try? second.removeEndpoint(pod([])) }
    let datapath2 = try Datapath(backend: second)
    #expect(try slots(second) == slotsBefore)
    #expect(try counts(second)[web]?.packets == before[web]?.packets)
    #expect(try counts(second)[web]?.packets == 7)
    _ = try connection(second, sport: 40000, dport: 80, forward: 1, replies: 0, open: false)
    #expect(try counts(second)[web]?.packets == 8)
    // A new entry gets a slot no other entry holds.
    _ = try datapath2.realize(pod([web, tls, admin, noDNS], revision: 2))
    let slotsAfter = try slots(second)
    #expect(Set(slotsAfter.values).count == 4)
    #expect(!Set(slotsBefore.values).contains(try #require(slotsAfter[noDNS])))
    #expect(try counts(second)[noDNS]?.packets == 0)
    #expect(try datapath2.removeEndpoint(id: 1))
    #expect(try second.state.withLock { $0.counterSlots.count } == 0, "removal frees every slot")
  }

  @Test(
    "conntrack and policy maps of older programs (without counter slots) are replaced on startup: connections survive, entries get slots"
  )
  func upgradeFromOldLayout() throws {
    guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/bpftool") else {
      print("BPFPolicyCounterTests: upgradeFromOldLayout skipped: /usr/sbin/bpftool missing")
      return
    }
    // The value sizes before the counters: ct_entry without its two slot
    // fields, policy_value without stats_slot (fields were appended).
    let oldCTValue = MemoryLayout<ct_entry>.size - 8
    let oldPolicyValue = MemoryLayout<policy_value>.size - 4
    #expect(oldCTValue == 48 && oldPolicyValue == 8)
    let pin = "/sys/fs/bpf/tessera-test-ct-upgrade-\(getpid())"
    defer { BPFTestEnvironment.removePinDirectory(pin) }
    try FileManager.default.createDirectory(
      atPath: "\(pin)/globals", withIntermediateDirectories: true)
    for arguments in [
      [
        "tessera_ct", "lru_hash", "\(MemoryLayout<ct_key>.size)", "\(oldCTValue)", "65536", "0",
      ],
      [
        "tessera_policy", "lpm_trie", "\(MemoryLayout<policy_key>.size)", "\(oldPolicyValue)",
        "1048576", "1",
      ],
      // Unchanged: kept as it is.
      [
        "tessera_endpoints", "hash", "8", "\(MemoryLayout<endpoint_info>.size)", "65535", "1",
      ],
    ] {
      try bpftool([
        "map", "create", "\(pin)/globals/\(arguments[0])", "type", arguments[1], "key",
        arguments[2], "value", arguments[3], "entries", arguments[4], "name", arguments[0],
        "flags", arguments[5],
      ])
    }
    // What older programs and datapathd left: endpoint 10, egress enforced,
    // allowed to port 80 of `other`, with a connection to port 443 (allowed
    // by a rule since deleted) that must survive the upgrade.
    var info = endpoint_info()
    info.identity = 1000
    info.flags = UInt32(TESSERA_EP_F_EGRESS_ENFORCED)
    info.policy_revision = 1
    info.nr_ips = 1
    info.ips.0.family = UInt8(TESSERA_FAMILY_V4)
    info.ips.0.prefixlen = 32
    info.ips.0.addr.0 = 10
    info.ips.0.addr.3 = 5
    try write(pin, "tessera_endpoints", UInt64(10), info)
    let group = PolicyGroup(verdict: .allow, direction: .egress, proto: .tcp, peer: other)
    try write(
      pin, "tessera_policy",
      PolicyEncoding.key(endpointID: 10, group: group, prefix: PortPrefix(port: 80, length: 16)),
      PolicyEncoding.value(group: group, block: PolicyBlock(cluster: PortRange(single: 80))),
      valueSize: oldPolicyValue)
    let now = LibBPF.monotonicNanoseconds
    var key = ct_key()
    var flow = ct_entry()
    withUnsafeMutableBytes(of: &key.saddr) { $0.copyBytes(from: [10, 0, 0, 5]) }
    withUnsafeMutableBytes(of: &key.daddr) { $0.copyBytes(from: [10, 0, 2, 7]) }
    let (s0, d0) = (
      withUnsafeBytes(of: key.saddr) { $0.load(as: UInt64.self) },
      withUnsafeBytes(of: key.daddr) { $0.load(as: UInt64.self) }
    )
    try #require(tessera_ct_tuple_reversed(s0, 0, d0, 0, 40000, 443) == 0, "canonical as written")
    key.sport = 40000
    key.dport = 443
    key.proto = Packet.tcp
    key.family = UInt8(TESSERA_FAMILY_V4)
    key.direction = UInt8(TESSERA_DIR_EGRESS)
    key.endpoint_id = 10
    flow.created_ns = now
    flow.last_seen_ns = now
    flow.expires_ns = now + 3_600_000_000_000
    flow.packets_fwd = 3
    flow.packets_rev = 2
    flow.flags = UInt32(TESSERA_CT_F_CANONICAL)
    flow.direction = UInt8(TESSERA_DIR_EGRESS)
    try write(pin, "tessera_ct", key, flow, valueSize: oldCTValue)

    let backend = try BPFDatapathBackend(
      configuration: .init(objectPath: BPFTestEnvironment.objectPath!, pinDirectory: pin))
    defer { try? backend.removeEndpoint(endpoint(id: 10, entries: [])) }
    let datapath = try Datapath(backend: backend)
    try datapath.upsertIPCache([
      IPCacheEntry(prefix: IPPrefix("10.0.2.0/24")!, identity: other)
    ])
    #expect(try valueSize(pin, "tessera_ct") == MemoryLayout<ct_entry>.size)
    #expect(try valueSize(pin, "tessera_policy") == MemoryLayout<policy_value>.size)
    #expect(datapath.endpoint(id: 10)?.policy.entries == [web])
    let slot = try #require(slots(backend, 10)[web])
    #expect(slot != BPFDatapathBackend.noCounterSlot, "the copied entry got a counter slot")
    _ = try backend.loader.loadEndpoint(10)

    // The connection survived: its packets pass although no entry allows
    // port 443 now, and its conntrack counts carried over.
    let ack = Packet.ipv4(
      podIP, otherIP, proto: Packet.tcp, sport: 40000, dport: 443, tcpFlags: Packet.ack)
    let reply = Packet.ipv4(
      otherIP, podIP, proto: Packet.tcp, sport: 443, dport: 40000, tcpFlags: Packet.ack)
    #expect(try backend.passes(10, .egress, ack))
    #expect(try backend.passes(10, .ingress, reply))
    #expect(
      try backend.conntrackEntries().first { $0.endpointID == 10 && $0.destinationPort == 443 }?
        .packets == 7)
    #expect(
      try !backend.passes(
        10, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.tcp, sport: 40001, dport: 443)))
    // The copied entry counts new connections.
    #expect(try counts(backend, 10)[web]?.packets == 0)
    #expect(
      try backend.passes(
        10, .egress, Packet.ipv4(podIP, otherIP, proto: Packet.tcp, sport: 40002, dport: 80)))
    #expect(
      try backend.passes(
        10, .ingress,
        Packet.ipv4(
          otherIP, podIP, proto: Packet.tcp, sport: 80, dport: 40002, tcpFlags: Packet.synAck)))
    #expect(try counts(backend, 10)[web]?.packets == 2)
    #expect(try datapath.removeEndpoint(id: 10))
  }

  // MARK: Helpers

  /// The counter slot of each entry, from the backend's mirror of the map.
  private func slots(_ backend: BPFDatapathBackend, _ id: UInt64 = 1) throws -> [PolicyEntry:
    UInt32]
  {
    let slice = backend.state.withLock { $0.slices[id] ?? [:] }
    var result: [PolicyEntry: UInt32] = [:]
    for (entry, slots) in PolicyEncoding.decodeWithSlots(slice) {
      try #require(slots.count == 1, "\(entry) has one slot")
      result[entry] = slots.first
    }
    // The mirror is what the kernel holds.
    #expect(try backend.readSlices(only: id)[id] ?? [:] == slice)
    return result
  }

  private func bpftool(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/bpftool")
    process.arguments = arguments
    try process.run()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "bpftool \(arguments.joined(separator: " "))")
  }

  /// Writes the first `valueSize` bytes of `value` (the layout of older
  /// programs) under `key` in the pinned map.
  private func write<K, V>(
    _ pin: String, _ map: String, _ key: K, _ value: V, valueSize: Int? = nil
  )
    throws
  {
    let fd = tessera_bpf_obj_get("\(pin)/globals/\(map)")
    try #require(fd >= 0)
    defer { tessera_bpf_close_fd(fd) }
    var key = key
    var bytes = withUnsafeBytes(of: value) { Array($0) }
    bytes = Array(bytes.prefix(valueSize ?? bytes.count))
    let rc = withUnsafeBytes(of: &key) { k in
      bytes.withUnsafeBytes { tessera_bpf_map_update(fd, k.baseAddress, $0.baseAddress, 0) }
    }
    try #require(rc == 0, "writing \(map): \(rc)")
  }

  /// The value size of the pinned map, as bpftool reports it.
  private func valueSize(_ pin: String, _ map: String) throws -> Int? {
    let process = Process()
    let output = Pipe()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/bpftool")
    process.arguments = ["-j", "map", "show", "pinned", "\(pin)/globals/\(map)"]
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    return json?["bytes_value"] as? Int
  }
}
