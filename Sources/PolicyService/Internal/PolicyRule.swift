import TesseraCore

/// A peer of a rule section: every peer (the wildcard, identity 0 in the policy map) or the
/// identities a selector selects.
enum PeerSelector: Hashable, Sendable {
  case all
  case selector(EndpointSelector)
}

/// A protocol and destination port range, or a named port; `.any` is every protocol on every
/// port.
struct PortProtocol: Hashable, Sendable {
  var proto: L4Protocol
  /// Unused (`.any`) for a named port.
  var ports: PortRange
  /// A port named in the manifest (`port: http`): each node resolves it through its
  /// endpoints' named ports (``NamedPortEntry``).
  var name: String?

  init(proto: L4Protocol, ports: PortRange) {
    self.proto = proto
    self.ports = ports
  }

  init(proto: L4Protocol, name: String) {
    self.proto = proto
    self.ports = .any
    self.name = name
  }

  static let any = PortProtocol(proto: .any, ports: .any)
}

/// One ingress/egress (allow or deny) entry of a rule, after parsing: traffic with any of
/// `peers` on any of `ports` gets `verdict`.
struct PolicySection: Hashable, Sendable {
  var direction: TrafficDirection
  var verdict: PolicyVerdict
  /// Never empty (a section that selects no peer is dropped when parsed).
  var peers: [PeerSelector]
  /// Never empty; `[.any]` when the manifest names no ports.
  var ports: [PortProtocol]
}

/// One rule: the endpoints it applies to (its subject), whether it puts them into
/// default-deny per direction, and its sections.
///
/// Selectors here are final: namespace scoping has been applied while parsing.
struct PolicyRule: Hashable, Sendable {
  var subject: EndpointSelector
  var enforcesIngress: Bool
  var enforcesEgress: Bool
  var sections: [PolicySection]

  func enforces(_ direction: TrafficDirection) -> Bool {
    direction == .ingress ? enforcesIngress : enforcesEgress
  }

  /// Every selector the rule uses as a peer.
  var peerSelectors: [EndpointSelector] {
    sections.flatMap(\.peers).compactMap {
      if case .selector(let selector) = $0 { return selector }
      return nil
    }
  }

  /// The CIDRs its peers name (`toCIDR`, `ipBlock`, their exceptions): each needs its
  /// identity in the SelectorCache and its ipcache entry.
  var namedPrefixes: Set<IPPrefix> {
    var prefixes = Set<IPPrefix>()
    for selector in peerSelectors {
      // A key of any source matches the cidr: labels too (Cilium's `any:`).
      for requirement in selector.requirements
      where requirement.key.source == CIDRIdentity.labelSource || requirement.key.matchesAnySource {
        if let prefix = CIDRIdentity.prefix(labelKey: requirement.key.key) {
          prefixes.insert(prefix)
        }
      }
    }
    return prefixes
  }
}
