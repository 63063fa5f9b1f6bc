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

  /// The most named ports one workload may declare (the CNI plugin's and other nodes' limit).
  public static let maximumPerWorkload = 64

  /// Why these ports cannot be one workload's, or nil: at most ``maximumPerWorkload``, every
  /// name valid and used once, every port 1-65535 of TCP, UDP or SCTP.
  public static func problem(with ports: [NamedPort]) -> String? {
    guard ports.count <= maximumPerWorkload else {
      return "\(ports.count) named ports; a workload may declare at most \(maximumPerWorkload)"
    }
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
    "\(direction) \(verdict) peer=\(peer == .unknown ? "any" : peer.description) \(proto)/\(portName)"
  }

  /// The port entries this row stands for, given the named ports it may resolve to.
  /// A name no port carries (or only with another protocol) yields none: the row allows
  /// or denies nothing, as in Cilium.
  ///
  /// - Parameter peer: the peer of the entries, the row's own unless given.
  public func entries(
    resolvingWith ports: some Sequence<NamedPort>, towards peer: NumericIdentity? = nil
  ) -> [PolicyEntry] {
    ports.filter { $0.name == portName && (proto == .any || proto == $0.proto) }.map {
      PolicyEntry(
        peer: peer ?? self.peer, direction: direction, proto: $0.proto,
        ports: PortRange(single: $0.port), verdict: verdict)
    }
  }
}

extension EndpointPolicy {
  /// This policy with its named-port rows turned into port entries, the way Kubernetes
  /// resolves a name on the pod the traffic goes to:
  ///
  /// - an ingress row through the endpoint's own ports (`own`);
  /// - an egress row towards a peer through the ports its endpoints declare;
  /// - an egress allow towards every peer into one entry per identity that declares the
  ///   name, towards that identity only (so one pod's ports never open another's); an
  ///   egress deny towards every peer into the union of everyone's, towards every peer.
  ///
  /// `declared` maps each identity to the ports its endpoints declare; it is read once,
  /// and only when there is an egress row. As in the policy service, a deny wins a key both
  /// allow and deny, and the result has no named rows left.
  public func resolvingNamedPorts(
    own: [NamedPort], declared: () -> [NumericIdentity: Set<NamedPort>]
  ) -> EndpointPolicy {
    guard !namedPortEntries.isEmpty else { return self }
    var egressPorts: [NumericIdentity: Set<NamedPort>]?
    var entries: [PolicyEntry] = []
    for row in namedPortEntries {
      var resolved: [PolicyEntry]
      if row.direction == .ingress {
        resolved = row.entries(resolvingWith: own)
      } else {
        let byPeer = egressPorts ?? declared()
        egressPorts = byPeer
        if row.peer != .unknown {
          resolved = row.entries(resolvingWith: byPeer[row.peer] ?? [])
        } else if row.verdict == .deny {
          resolved = row.entries(resolvingWith: Set(byPeer.values.joined()))
        } else {
          resolved = []
          for (peer, ports) in byPeer where peer != .unknown {
            resolved += row.entries(resolvingWith: ports, towards: peer)
          }
        }
      }
      entries += resolved
    }
    return replacingNamedRows(with: entries)
  }

  /// This policy for a node that cannot resolve named ports (an endpoint service older
  /// than them): no named rows; an allow on a name admits nothing, and a deny on a name
  /// denies every port of its protocol towards its peer (TCP, UDP and SCTP for Cilium's
  /// `ANY`, the protocols a named port can have), so a deny such a node cannot resolve
  /// closes more, never less.
  public func withoutNamedPorts() -> EndpointPolicy {
    guard !namedPortEntries.isEmpty else { return self }
    return replacingNamedRows(
      with: namedPortEntries.filter { $0.verdict == .deny }.flatMap { row in
        (row.proto == .any ? [L4Protocol.tcp, .udp, .sctp] : [row.proto]).map {
          PolicyEntry(
            peer: row.peer, direction: row.direction, proto: $0, ports: .any, verdict: .deny)
        }
      })
  }

  /// The port entries with `resolved` added in place of the named rows; a deny wins a key
  /// both allow and deny.
  private func replacingNamedRows(with resolved: [PolicyEntry]) -> EndpointPolicy {
    var verdicts: [PolicyEntry.Key: PolicyVerdict] = [:]
    for entry in entries { verdicts[entry.key] = entry.verdict }
    for entry in resolved { verdicts.record(entry.verdict, for: entry.key) }
    let merged = verdicts.map { key, verdict in
      PolicyEntry(
        peer: key.peer, direction: key.direction, proto: key.proto, ports: key.ports,
        verdict: verdict)
    }
    return EndpointPolicy(
      revision: revision, ingressEnforced: ingressEnforced, egressEnforced: egressEnforced,
      entries: merged.sorted())
  }
}
