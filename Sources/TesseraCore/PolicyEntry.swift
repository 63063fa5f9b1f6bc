/// Traffic direction relative to the endpoint.
public enum TrafficDirection: UInt8, Sendable, Hashable, Codable, CaseIterable,
  CustomStringConvertible
{
  case ingress = 1
  case egress = 2
  public var description: String { self == .ingress ? "ingress" : "egress" }
}

/// L4 protocol by IANA number; `.any` matches every protocol.
///
/// For `.icmp` and `.icmpv6` an entry's ports are ICMP types (Cilium's `icmps` rules store
/// the type where other protocols store the destination port), and the datapath looks a
/// packet up with its type as the port.
public enum L4Protocol: UInt8, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
  case any = 0
  case icmp = 1
  case tcp = 6
  case udp = 17
  case icmpv6 = 58
  case sctp = 132

  public var description: String {
    switch self {
    case .any: "ANY"
    case .icmp: "ICMP"
    case .tcp: "TCP"
    case .udp: "UDP"
    case .icmpv6: "ICMPv6"
    case .sctp: "SCTP"
    }
  }

  /// The protocols a port rule (`toPorts`, `ports`) may name: ICMP is written as `icmps`.
  public static let portProtocols: [L4Protocol] = [.tcp, .udp, .sctp, .any]

  /// Whether entries of this protocol carry ICMP types instead of ports.
  public var isICMP: Bool { self == .icmp || self == .icmpv6 }

  /// Accepts the names of the port protocols used in policies (`TCP`, `udp`, `ANY`, …).
  public init?(name: String) {
    guard let match = Self.portProtocols.first(where: { $0.description == name.uppercased() })
    else {
      return nil
    }
    self = match
  }
}

public enum PolicyVerdict: UInt8, Sendable, Hashable, Codable, CustomStringConvertible {
  case allow = 1
  case deny = 2
  public var description: String { self == .allow ? "allow" : "deny" }
}

extension Dictionary where Value == PolicyVerdict {
  /// Records `verdict` for `key`, as policies combine: a deny wins over an allow, whichever
  /// came first.
  public mutating func record(_ verdict: PolicyVerdict, for key: Key) {
    if verdict == .deny || self[key] == nil { self[key] = verdict }
  }
}

/// Destination ports `first...last`; `0...65535` with `first == 0` means any port.
public struct PortRange: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  public var first: UInt16
  public var last: UInt16

  public init(_ first: UInt16, _ last: UInt16) {
    precondition(first <= last, "port range must be ascending")
    self.first = first
    self.last = last
  }

  public init(single port: UInt16) { self.init(port, port) }

  public static let any = PortRange(0, 65535)
  public var isAny: Bool { first == 0 && last == 65535 }
  public func contains(_ port: UInt16) -> Bool { isAny || (first...last).contains(port) }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    (lhs.first, lhs.last) < (rhs.first, rhs.last)
  }
  public var description: String { isAny ? "any" : first == last ? "\(first)" : "\(first)-\(last)" }
}

/// One row of an endpoint's policy: traffic with `peer` in `direction` on
/// `proto`/`ports` gets `verdict`. A `peer` of `.unknown` (0) means every peer.
public struct PolicyEntry: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  public var peer: NumericIdentity
  public var direction: TrafficDirection
  public var proto: L4Protocol
  public var ports: PortRange
  public var verdict: PolicyVerdict

  public init(
    peer: NumericIdentity, direction: TrafficDirection, proto: L4Protocol = .any,
    ports: PortRange = .any, verdict: PolicyVerdict = .allow
  ) {
    self.peer = peer
    self.direction = direction
    // A port only means something with a protocol that has ports.
    self.proto = proto
    self.ports = ports
    self.verdict = verdict
  }

  /// The key the datapath stores the entry under (everything but the verdict).
  public struct Key: Hashable, Sendable, Comparable {
    public var peer: NumericIdentity
    public var direction: TrafficDirection
    public var proto: L4Protocol
    public var ports: PortRange

    public static func < (lhs: Self, rhs: Self) -> Bool {
      (
        lhs.direction.rawValue, lhs.peer.rawValue, lhs.proto.rawValue, lhs.ports.first,
        lhs.ports.last
      )
        < (
          rhs.direction.rawValue, rhs.peer.rawValue, rhs.proto.rawValue, rhs.ports.first,
          rhs.ports.last
        )
    }
  }

  public var key: Key { Key(peer: peer, direction: direction, proto: proto, ports: ports) }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    lhs.key == rhs.key ? lhs.verdict.rawValue < rhs.verdict.rawValue : lhs.key < rhs.key
  }

  public var description: String {
    "\(direction) \(verdict) peer=\(peer.rawValue == 0 ? "any" : peer.description) \(proto)/\(ports)"
  }

  /// Whether this entry applies to a packet with these properties. `port` is the destination
  /// port, or the ICMP type of an ICMP or ICMPv6 packet. An entry of any protocol sees an
  /// ICMP packet as portless (port 0), as it did before ICMP rules existed: every-port
  /// entries (L3-only rules) cover ICMP, a port range such as `ANY 1-1024` does not take
  /// ICMP types for ports (in Cilium, `ANY` is TCP, UDP and SCTP).
  public func matches(
    peer: NumericIdentity, direction: TrafficDirection, proto: L4Protocol, port: UInt16
  ) -> Bool {
    guard self.direction == direction else { return false }
    guard self.peer == .unknown || self.peer == peer else { return false }
    guard self.proto == .any || self.proto == proto else { return false }
    return ports.contains(self.proto == .any && proto.isICMP ? 0 : port)
  }
}

/// The policy one endpoint should have, at one repository revision.
public struct EndpointPolicy: Hashable, Sendable, Codable {
  public var revision: UInt64
  /// When false the direction is default-allow; deny entries still apply.
  public var ingressEnforced: Bool
  public var egressEnforced: Bool
  /// Sorted and unique by key; a deny and an allow never share a key.
  public var entries: [PolicyEntry]
  /// Rows on named ports, sorted and unique; only the endpoint service can turn them into
  /// entries (``resolvingNamedPorts(own:declared:)``). The datapath never holds any.
  public var namedPortEntries: [NamedPortEntry]

  public init(
    revision: UInt64, ingressEnforced: Bool, egressEnforced: Bool, entries: [PolicyEntry],
    namedPortEntries: [NamedPortEntry] = []
  ) {
    self.revision = revision
    self.ingressEnforced = ingressEnforced
    self.egressEnforced = egressEnforced
    self.entries = entries
    self.namedPortEntries = namedPortEntries
  }

  private enum CodingKeys: String, CodingKey {
    case revision, ingressEnforced, egressEnforced, entries, namedPortEntries
  }

  /// Reads policies written before named ports as having none.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    self.init(
      revision: try container.decode(UInt64.self, forKey: .revision),
      ingressEnforced: try container.decode(Bool.self, forKey: .ingressEnforced),
      egressEnforced: try container.decode(Bool.self, forKey: .egressEnforced),
      entries: try container.decode([PolicyEntry].self, forKey: .entries),
      namedPortEntries: try container.decodeIfPresent(
        [NamedPortEntry].self, forKey: .namedPortEntries) ?? [])
  }

  public func isEnforced(_ direction: TrafficDirection) -> Bool {
    direction == .ingress ? ingressEnforced : egressEnforced
  }

  /// The reference verdict for one packet: deny entries win, then allow
  /// entries, then the direction's default. The datapath must agree with this.
  public func verdict(
    peer: NumericIdentity, direction: TrafficDirection, proto: L4Protocol, port: UInt16
  ) -> PolicyVerdict {
    let matching = entries.filter {
      $0.matches(peer: peer, direction: direction, proto: proto, port: port)
    }
    if matching.contains(where: { $0.verdict == .deny }) { return .deny }
    if matching.contains(where: { $0.verdict == .allow }) { return .allow }
    return isEnforced(direction) ? .deny : .allow
  }
}
