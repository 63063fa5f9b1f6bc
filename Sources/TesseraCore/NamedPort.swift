/// A port a workload declares under a name (a Kubernetes container port), which policies
/// can name instead of a number (`toPorts: [{ports: [{port: http}]}]`).
public struct NamedPort: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  public var name: String
  /// TCP, UDP or SCTP.
  public var proto: L4Protocol
  public var port: UInt16

  public init(name: String, proto: L4Protocol = .tcp, port: UInt16) {
    self.name = name
    self.proto = proto
    self.port = port
  }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    (lhs.name, lhs.proto.rawValue, lhs.port) < (rhs.name, rhs.proto.rawValue, rhs.port)
  }

  public var description: String { "\(name)=\(port)/\(proto)" }

  /// Why `name` is not an IANA service name as Kubernetes validates a port name
  /// (`IsValidPortName`), or nil when it is one.
  public static func problem(withName name: String) -> String? {
    let bytes = Array(name.utf8)
    let rule =
      "must be an IANA service name: 1-15 characters of a-z, 0-9 and '-', with at least one letter, not beginning or ending with '-' and without \"--\""
    guard (1...15).contains(bytes.count),
      bytes.allSatisfy({ isLowercaseLetter($0) || isDigit($0) || $0 == UInt8(ascii: "-") }),
      bytes.contains(where: isLowercaseLetter),
      bytes.first != UInt8(ascii: "-"), bytes.last != UInt8(ascii: "-"),
      !name.contains("--")
    else { return "port name \"\(name)\" \(rule)" }
    return nil
  }

  /// Why these ports cannot be one workload's, or nil: every name valid and used once, every
  /// port 1-65535 of TCP, UDP or SCTP.
  public static func problem(with ports: [NamedPort]) -> String? {
    var seen = Set<String>()
    for port in ports {
      if let problem = problem(withName: port.name) { return problem }
      guard port.port != 0 else { return "port \"\(port.name)\" must be 1-65535" }
      guard [.tcp, .udp, .sctp].contains(port.proto) else {
        return "port \"\(port.name)\": protocol \(port.proto) is not TCP, UDP or SCTP"
      }
      guard seen.insert(port.name).inserted else {
        return "port name \"\(port.name)\" is declared twice"
      }
    }
    return nil
  }

  private static func isLowercaseLetter(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
  }
  private static func isDigit(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
  }
}

/// A policy row whose port is a name. It becomes port entries only on a node, where the
/// names are known: ingress from the endpoint's own named ports, egress from those the
/// peer's endpoints declare (docs/architecture.md §4, "Named ports").
public struct NamedPortEntry: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  public var peer: NumericIdentity
  public var direction: TrafficDirection
  /// `.any` takes the named port's own protocol; another protocol matches only a named port
  /// of that protocol.
  public var proto: L4Protocol
  public var portName: String
  public var verdict: PolicyVerdict

  public init(
    peer: NumericIdentity, direction: TrafficDirection, proto: L4Protocol = .any,
    portName: String, verdict: PolicyVerdict = .allow
  ) {
    self.peer = peer
    self.direction = direction
    self.proto = proto
    self.portName = portName
    self.verdict = verdict
  }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    (
      lhs.direction.rawValue, lhs.peer.rawValue, lhs.proto.rawValue, lhs.portName,
      lhs.verdict.rawValue
    )
      < (
        rhs.direction.rawValue, rhs.peer.rawValue, rhs.proto.rawValue, rhs.portName,
        rhs.verdict.rawValue
      )
  }

  public var description: String {
    "\(direction) \(verdict) peer=\(peer.rawValue == 0 ? "any" : peer.description) \(proto)/\(portName)"
  }

  /// The port entries this row stands for, given the named ports it may resolve to.
  /// A name no port carries (or only with another protocol) yields none: the row allows
  /// or denies nothing, as in Cilium.
  public func entries(resolvingWith ports: [NamedPort]) -> [PolicyEntry] {
    ports.filter { $0.name == portName && (proto == .any || proto == $0.proto) }.map {
      PolicyEntry(
        peer: peer, direction: direction, proto: $0.proto, ports: PortRange(single: $0.port),
        verdict: verdict)
    }
  }
}

extension EndpointPolicy {
  /// This policy with its named-port rows turned into port entries: ingress rows through
  /// the endpoint's own ports (`own`), egress rows through `egress(peer)`, the ports the
  /// row's peer declares (for the every-peer row, `.unknown`, every port it may reach).
  /// As in the policy service, a deny wins a key both allow and deny, and the result has
  /// no named rows left.
  public func resolvingNamedPorts(
    own: [NamedPort], egress: (NumericIdentity) -> [NamedPort]
  ) -> EndpointPolicy {
    guard !namedPortEntries.isEmpty else { return self }
    var verdicts: [PolicyEntry.Key: PolicyVerdict] = [:]
    for entry in entries { verdicts[entry.key] = entry.verdict }
    var peerPorts: [NumericIdentity: [NamedPort]] = [:]
    for row in namedPortEntries {
      let ports: [NamedPort]
      if row.direction == .ingress {
        ports = own
      } else if let known = peerPorts[row.peer] {
        ports = known
      } else {
        ports = egress(row.peer)
        peerPorts[row.peer] = ports
      }
      for entry in row.entries(resolvingWith: ports) {
        if entry.verdict == .deny {
          verdicts[entry.key] = .deny
        } else if verdicts[entry.key] == nil {
          verdicts[entry.key] = .allow
        }
      }
    }
    let resolved = verdicts.map { key, verdict in
      PolicyEntry(
        peer: key.peer, direction: key.direction, proto: key.proto, ports: key.ports,
        verdict: verdict)
    }
    return EndpointPolicy(
      revision: revision, ingressEnforced: ingressEnforced, egressEnforced: egressEnforced,
      entries: resolved.sorted())
  }
}
