import CTesseraBPF
import TesseraCore

/// The entries of one endpoint that share verdict, direction, protocol and
/// peer: in the policy map they differ only by their port blocks.
struct PolicyGroup: Hashable, Sendable {
  var verdict: PolicyVerdict
  var direction: TrafficDirection
  var proto: L4Protocol
  var peer: NumericIdentity

  init(
    verdict: PolicyVerdict, direction: TrafficDirection, proto: L4Protocol, peer: NumericIdentity
  ) {
    self.verdict = verdict
    self.direction = direction
    self.proto = proto
    self.peer = peer
  }

  init(_ entry: PolicyEntry) {
    self.init(
      verdict: entry.verdict, direction: entry.direction, proto: entry.proto, peer: entry.peer)
  }

  /// Both groups a key can live in (a key changes verdict by an upsert).
  static func both(_ key: PolicyEntry.Key) -> [PolicyGroup] {
    [.allow, .deny].map {
      PolicyGroup(verdict: $0, direction: key.direction, proto: key.proto, peer: key.peer)
    }
  }
}

/// One port block in the policy map: the port range (cluster) it was
/// decomposed from and that range's counter slot (`tessera_policy_stats`).
struct PolicyBlock: Hashable, Sendable {
  var cluster: PortRange
  /// Shared by every block of the cluster; `TESSERA_POLICY_STATS_NONE` when not counted.
  var slot: UInt32

  init(cluster: PortRange, slot: UInt32 = UInt32(TESSERA_POLICY_STATS_NONE)) {
    self.cluster = cluster
    self.slot = slot
  }
}

/// One endpoint's part of the policy map: for each group, each port block
/// with its cluster and counter slot. Kept in memory as a mirror of the
/// kernel map, rebuilt from the map at startup.
typealias PolicySlice = [PolicyGroup: [PortPrefix: PolicyBlock]]

extension Dictionary where Key == PolicyGroup, Value == [PortPrefix: PolicyBlock] {
  /// The counter slots the slice's blocks use.
  var counterSlots: Set<UInt32> {
    var slots = Set<UInt32>()
    for blocks in values {
      for block in blocks.values where block.slot != UInt32(TESSERA_POLICY_STATS_NONE) {
        slots.insert(block.slot)
      }
    }
    return slots
  }
}

/// How ``PolicyEntry`` values become `policy_key`/`policy_value` pairs and back.
enum PolicyEncoding {
  /// The blocks a group's ranges are stored as: overlapping ranges are
  /// clustered, each cluster decomposed into aligned port prefixes.
  static func encodeGroup(_ ranges: [PortRange]) -> [PortPrefix: PortRange] {
    var result: [PortPrefix: PortRange] = [:]
    for cluster in PortPrefix.clusters(ranges) {
      for prefix in PortPrefix.decompose(cluster) { result[prefix] = cluster }
    }
    return result
  }

  /// The slice of `entries`, without counter slots.
  static func encode(_ entries: [PolicyEntry]) -> PolicySlice {
    Dictionary(grouping: entries, by: PolicyGroup.init).mapValues {
      encodeGroup($0.map(\.ports)).mapValues { PolicyBlock(cluster: $0) }
    }
  }

  /// The entries a slice stands for: one per stored cluster whose blocks
  /// cover it exactly; blocks that do not (a map written by someone else)
  /// come back as their merged ranges.
  static func decode(_ slice: PolicySlice) -> [PolicyEntry] {
    decodeWithSlots(slice).map(\.entry)
  }

  /// ``decode(_:)``, each entry with the counter slots of its blocks (one,
  /// unless someone else wrote the map).
  static func decodeWithSlots(_ slice: PolicySlice) -> [(entry: PolicyEntry, slots: Set<UInt32>)] {
    var entries: [(entry: PolicyEntry, slots: Set<UInt32>)] = []
    for (group, blocks) in slice {
      let byCluster = Dictionary(grouping: blocks, by: { $0.value.cluster })
      for (cluster, members) in byCluster {
        let merged = PortPrefix.merge(members.map(\.key))
        let ranges = merged == [cluster] ? [cluster] : merged
        let slots = Set(
          members.map(\.value.slot).filter { $0 != UInt32(TESSERA_POLICY_STATS_NONE) })
        for range in ranges {
          entries.append(
            (
              PolicyEntry(
                peer: group.peer, direction: group.direction, proto: group.proto, ports: range,
                verdict: group.verdict), slots
            ))
        }
      }
    }
    return entries.sorted { $0.entry < $1.entry }
  }

  static func key(endpointID: UInt64, group: PolicyGroup, prefix: PortPrefix) -> policy_key {
    var key = policy_key()
    key.prefixlen = UInt32(TESSERA_POLICY_STATIC_PREFIX) + UInt32(prefix.length)
    key.endpoint_id = endpointID
    key.deny = group.verdict == .deny ? 1 : 0
    key.direction = group.direction.rawValue
    key.proto = group.proto.rawValue
    key.peer = group.peer.rawValue
    key.dport = prefix.port.bigEndian
    return key
  }

  static func value(group: PolicyGroup, block: PolicyBlock) -> policy_value {
    var value = policy_value()
    value.verdict = group.verdict.rawValue
    value.flags = UInt8(TESSERA_POLICY_F_NONE)
    value.port_first = block.cluster.first
    value.port_last = block.cluster.last
    value.stats_slot = block.slot
    return value
  }

  /// The endpoint, group, prefix and block of one map entry; nil for keys
  /// Tessera never writes.
  static func decode(key: policy_key, value: policy_value) -> (
    endpointID: UInt64, group: PolicyGroup, prefix: PortPrefix, block: PolicyBlock
  )? {
    let staticPrefix = UInt32(TESSERA_POLICY_STATIC_PREFIX)
    guard key.prefixlen >= staticPrefix, key.prefixlen <= staticPrefix + 16,
      let direction = TrafficDirection(rawValue: key.direction),
      let proto = L4Protocol(rawValue: key.proto),
      value.port_first <= value.port_last
    else { return nil }
    let group = PolicyGroup(
      verdict: key.deny == 1 ? .deny : .allow, direction: direction, proto: proto,
      peer: NumericIdentity(key.peer))
    let prefix = PortPrefix(
      port: UInt16(bigEndian: key.dport), length: UInt8(key.prefixlen - staticPrefix))
    return (
      key.endpoint_id, group, prefix,
      PolicyBlock(cluster: PortRange(value.port_first, value.port_last), slot: value.stats_slot)
    )
  }
}
