import GRPCCore
import TesseraCore

// Conversions between the wire types and TesseraCore's domain types, in one place; written by
// hand (scripts/generate-proto.sh replaces only the *.pb.swift and *.grpc.swift files here).
// Each service's own messages are converted in its `Proto+<Service>.swift`.

extension Tessera_Common_V1_Label {
  public init(_ label: Label) {
    self.init()
    source = label.source
    key = label.key
    value = label.value
  }
}

extension Label {
  /// An empty source on the wire means the default source.
  public init(_ proto: Tessera_Common_V1_Label) {
    self.init(
      source: proto.source.isEmpty ? Label.defaultSource : proto.source, key: proto.key,
      value: proto.value)
  }
}

extension LabelSet {
  /// - Throws: ``RPCError`` `invalidArgument` naming the bad label.
  public init(protoLabels: [Tessera_Common_V1_Label]) throws(RPCError) {
    do {
      try self.init(protoLabels.map(Label.init))
    } catch {
      throw RPCError(code: .invalidArgument, message: error.description)
    }
  }

  public var proto: [Tessera_Common_V1_Label] { labels.map(Tessera_Common_V1_Label.init) }
}

extension Tessera_Common_V1_Identity {
  public init(_ identity: SecurityIdentity) {
    self.init()
    id = identity.id.rawValue
    labels = identity.labels.proto
  }
}

extension SecurityIdentity {
  public init(proto: Tessera_Common_V1_Identity) throws(RPCError) {
    self.init(id: NumericIdentity(proto.id), labels: try LabelSet(protoLabels: proto.labels))
  }
}

extension Tessera_Common_V1_Direction {
  public init(_ direction: TrafficDirection) {
    self = direction == .ingress ? .ingress : .egress
  }
}

extension TrafficDirection {
  /// Nil for an unspecified (or unknown) direction.
  public init?(proto: Tessera_Common_V1_Direction) {
    switch proto {
    case .ingress: self = .ingress
    case .egress: self = .egress
    default: return nil
    }
  }
}

extension Tessera_Common_V1_Verdict {
  public init(_ verdict: PolicyVerdict) {
    self = verdict == .allow ? .allow : .deny
  }
}

extension PolicyVerdict {
  /// Nil for an unspecified (or unknown) verdict.
  public init?(proto: Tessera_Common_V1_Verdict) {
    switch proto {
    case .allow: self = .allow
    case .deny: self = .deny
    default: return nil
    }
  }
}

extension Tessera_Common_V1_PolicyEntry {
  public init(_ entry: PolicyEntry) {
    self.init()
    peerIdentity = entry.peer.rawValue
    direction = Tessera_Common_V1_Direction(entry.direction)
    `protocol` = Tessera_Common_V1_Protocol(entry.proto)
    // ICMP entries name types, 0 (echo reply) included: port 0 is type 0, never "any".
    let ports = entry.proto.isICMP && entry.ports.isAny ? PortRange(0, 255) : entry.ports
    if !ports.isAny {
      port = UInt32(ports.first)
      endPort = ports.last == ports.first ? 0 : UInt32(ports.last)
    }
    verdict = Tessera_Common_V1_Verdict(entry.verdict)
  }
}

extension PolicyEntry {
  /// - Throws: ``RPCError`` `invalidArgument` for out-of-range values.
  public init(proto: Tessera_Common_V1_PolicyEntry) throws(RPCError) {
    guard let direction = TrafficDirection(proto: proto.direction) else {
      throw RPCError(code: .invalidArgument, message: "policy entry without a direction")
    }
    let l4 = try L4Protocol(proto: proto.protocol)
    guard proto.port <= 65535, proto.endPort <= 65535 else {
      throw RPCError(code: .invalidArgument, message: "port out of range")
    }
    let ports: PortRange
    if proto.port == 0 && proto.endPort == 0 && !l4.isICMP {
      ports = .any
    } else if proto.endPort == 0 {
      ports = PortRange(single: UInt16(proto.port))
    } else {
      guard proto.endPort >= proto.port else {
        throw RPCError(
          code: .invalidArgument, message: "port range \(proto.port)-\(proto.endPort) is descending"
        )
      }
      ports = PortRange(UInt16(proto.port), UInt16(proto.endPort))
    }
    guard let verdict = PolicyVerdict(proto: proto.verdict) else {
      throw RPCError(code: .invalidArgument, message: "policy entry without a verdict")
    }
    self.init(
      peer: NumericIdentity(proto.peerIdentity), direction: direction, proto: l4, ports: ports,
      verdict: verdict)
  }
}

extension Tessera_Common_V1_EndpointPolicy {
  public init(_ policy: EndpointPolicy) {
    self.init()
    revision = policy.revision
    ingressEnforced = policy.ingressEnforced
    egressEnforced = policy.egressEnforced
    entries = policy.entries.map(Tessera_Common_V1_PolicyEntry.init)
    namedPortEntries = policy.namedPortEntries.map(Tessera_Common_V1_NamedPortEntry.init)
  }
}

extension Tessera_Common_V1_Protocol {
  public init(_ proto: L4Protocol) {
    self = Tessera_Common_V1_Protocol(rawValue: Int(proto.rawValue)) ?? .any
  }
}

extension L4Protocol {
  /// - Throws: ``RPCError`` `invalidArgument` for a protocol Tessera does not know.
  public init(proto: Tessera_Common_V1_Protocol) throws(RPCError) {
    guard proto.rawValue <= 255, let l4 = L4Protocol(rawValue: UInt8(clamping: proto.rawValue))
    else {
      throw RPCError(code: .invalidArgument, message: "unknown protocol \(proto.rawValue)")
    }
    self = l4
  }
}

extension Tessera_Common_V1_NamedPort {
  public init(_ port: NamedPort) {
    self.init()
    name = port.name
    `protocol` = Tessera_Common_V1_Protocol(port.proto)
    self.port = UInt32(port.port)
  }
}

extension NamedPort {
  /// Reads one port; ``NamedPort/problem(with:)`` judges a workload's list.
  /// - Throws: ``RPCError`` `invalidArgument` for a port above 65535 or an unknown protocol.
  public init(proto: Tessera_Common_V1_NamedPort) throws(RPCError) {
    guard proto.port <= 65535 else {
      throw RPCError(
        code: .invalidArgument, message: "port \"\(proto.name)\": \(proto.port) is above 65535")
    }
    self.init(
      name: proto.name, proto: try L4Protocol(proto: proto.protocol), port: UInt16(proto.port))
  }
}

extension Tessera_Common_V1_NamedPortEntry {
  public init(_ entry: NamedPortEntry) {
    self.init()
    peerIdentity = entry.peer.rawValue
    direction = Tessera_Common_V1_Direction(entry.direction)
    `protocol` = Tessera_Common_V1_Protocol(entry.proto)
    portName = entry.portName
    verdict = Tessera_Common_V1_Verdict(entry.verdict)
  }
}

extension NamedPortEntry {
  /// - Throws: ``RPCError`` `invalidArgument` for a missing direction or verdict, an unknown
  ///   protocol or a name that is not a port name.
  public init(proto: Tessera_Common_V1_NamedPortEntry) throws(RPCError) {
    guard let direction = TrafficDirection(proto: proto.direction) else {
      throw RPCError(code: .invalidArgument, message: "named-port entry without a direction")
    }
    guard let verdict = PolicyVerdict(proto: proto.verdict) else {
      throw RPCError(code: .invalidArgument, message: "named-port entry without a verdict")
    }
    if let problem = NamedPort.problem(withName: proto.portName) {
      throw RPCError(code: .invalidArgument, message: problem)
    }
    self.init(
      peer: NumericIdentity(proto.peerIdentity), direction: direction,
      proto: try L4Protocol(proto: proto.protocol), portName: proto.portName, verdict: verdict)
  }
}

extension EndpointPolicy {
  public init(proto: Tessera_Common_V1_EndpointPolicy) throws(RPCError) {
    var entries: [PolicyEntry] = []
    for entry in proto.entries { entries.append(try PolicyEntry(proto: entry)) }
    var named: [NamedPortEntry] = []
    for entry in proto.namedPortEntries { named.append(try NamedPortEntry(proto: entry)) }
    self.init(
      revision: proto.revision, ingressEnforced: proto.ingressEnforced,
      egressEnforced: proto.egressEnforced, entries: entries.sorted(),
      namedPortEntries: named.sorted())
  }
}

extension IPPrefix {
  /// - Throws: ``RPCError`` `invalidArgument` for text that is not an address or prefix.
  public init(parsing text: String) throws(RPCError) {
    guard let prefix = IPPrefix(text) else {
      throw RPCError(code: .invalidArgument, message: "'\(text)' is not an IP address or prefix")
    }
    self = prefix
  }
}
