import TesseraCore

/// A Cilium entity (`fromEntities`/`toEntities`): a named group of peers that need no labels.
public enum Entity: String, Sendable, CaseIterable, Hashable {
  case all
  case world
  case worldIPv4 = "world-ipv4"
  case worldIPv6 = "world-ipv6"
  case cluster
  case host
  case remoteNode = "remote-node"
  case kubeAPIServer = "kube-apiserver"
  case ingress
  case initializing = "init"
  case health
  case unmanaged
  case none

  /// The peers the entity stands for.
  ///
  /// `all` is the peer wildcard. `world` is the reserved world identities (2, 9, 10).
  /// `cluster` is what Cilium's `InitEntities` makes it: host, remote-node, init, ingress,
  /// health and unmanaged, plus every endpoint of the cluster (every allocated identity, none
  /// of which carries a `reserved:` label); not world and not kube-apiserver, which stands for
  /// an API server outside the cluster. `none` selects nothing. The others are their reserved
  /// identity.
  var peers: [PeerSelector] {
    switch self {
    case .all: return [.all]
    case .none: return []
    case .world: return [.world, .worldIPv4, .worldIPv6].map { Self.reserved($0) }
    case .worldIPv4: return [Self.reserved(.worldIPv4)]
    case .worldIPv6: return [Self.reserved(.worldIPv6)]
    case .cluster:
      let endpoints = ReservedIdentity.allCases.map {
        LabelRequirement(key: .reserved($0.name), op: .doesNotExist)
      }
      let inCluster: [ReservedIdentity] = [
        .host, .remoteNode, .initializing, .ingress, .health, .unmanaged,
      ]
      return inCluster.map { Self.reserved($0) } + [.selector(EndpointSelector(endpoints))]
    case .host: return [Self.reserved(.host)]
    case .remoteNode: return [Self.reserved(.remoteNode)]
    case .kubeAPIServer: return [Self.reserved(.kubeAPIServer)]
    case .ingress: return [Self.reserved(.ingress)]
    case .initializing: return [Self.reserved(.initializing)]
    case .health: return [Self.reserved(.health)]
    case .unmanaged: return [Self.reserved(.unmanaged)]
    }
  }

  private static func reserved(_ identity: ReservedIdentity) -> PeerSelector {
    .selector(EndpointSelector(matchLabels: [.reserved(identity.name): ""]))
  }
}
