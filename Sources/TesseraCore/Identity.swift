/// A numeric security identity.
///
/// Numbers follow Cilium's so operators' knowledge carries over: 0–255 reserved,
/// 256–65535 allocated in cluster 0, cluster `c` uses `c<<16 … (c<<16)+65535`,
/// and node-local (CIDR) identities live in the `1<<24` scope.
public struct NumericIdentity: RawRepresentable, Hashable, Comparable, Sendable, Codable,
  CustomStringConvertible
{
  public var rawValue: UInt32
  public init(rawValue: UInt32) { self.rawValue = rawValue }
  public init(_ rawValue: UInt32) { self.rawValue = rawValue }

  public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
  public var description: String { String(rawValue) }

  public static let unknown = NumericIdentity(0)
  public static let host = NumericIdentity(1)
  public static let world = NumericIdentity(2)
  public static let unmanaged = NumericIdentity(3)
  public static let health = NumericIdentity(4)
  public static let initializing = NumericIdentity(5)
  public static let remoteNode = NumericIdentity(6)
  public static let kubeAPIServer = NumericIdentity(7)
  public static let ingress = NumericIdentity(8)
  public static let worldIPv4 = NumericIdentity(9)
  public static let worldIPv6 = NumericIdentity(10)

  /// First identity handed out by the allocator.
  public static let minimumAllocated: UInt32 = 256
  /// Start of the node-local (CIDR) identity scope.
  public static let localScope: UInt32 = 1 << 24

  public var isReserved: Bool { rawValue < Self.minimumAllocated }
  /// Whether the identity service hands this identity out (to a workload's label set):
  /// neither reserved nor of the node-local (CIDR) scope.
  public var isAllocated: Bool { !isReserved && rawValue < Self.localScope }
  /// The cluster this identity was allocated in (0 for reserved and cluster-0 identities).
  public var clusterID: UInt32 { rawValue < Self.localScope ? rawValue >> 16 : 0 }

  /// The range the allocator draws from in `clusterID`.
  public static func allocationRange(clusterID: UInt32) -> ClosedRange<UInt32> {
    precondition(clusterID <= 255, "cluster id must be 0...255")
    let base = clusterID << 16
    return (clusterID == 0 ? minimumAllocated : base)...(base + 0xFFFF)
  }
}

/// The reserved identities with their names and `reserved:` labels.
public enum ReservedIdentity: UInt32, CaseIterable, Sendable {
  case host = 1
  case world, unmanaged, health, initializing, remoteNode, kubeAPIServer, ingress, worldIPv4,
    worldIPv6

  public var identity: NumericIdentity { NumericIdentity(rawValue) }

  /// Cilium's name for it, also the `reserved:` label key.
  public var name: String {
    switch self {
    case .host: "host"
    case .world: "world"
    case .unmanaged: "unmanaged"
    case .health: "health"
    case .initializing: "init"
    case .remoteNode: "remote-node"
    case .kubeAPIServer: "kube-apiserver"
    case .ingress: "ingress"
    case .worldIPv4: "world-ipv4"
    case .worldIPv6: "world-ipv6"
    }
  }

  public var labels: LabelSet {
    LabelSet(validated: [Label(source: Label.Source.reserved, key: name, value: "")])
  }

  /// The reserved identity whose label set is exactly `labels`, if any.
  public static func matching(_ labels: LabelSet) -> ReservedIdentity? {
    allCases.first { $0.labels == labels }
  }
}

/// An identity and the labels it stands for.
public struct SecurityIdentity: Hashable, Sendable, Codable {
  public var id: NumericIdentity
  public var labels: LabelSet

  public init(id: NumericIdentity, labels: LabelSet) {
    self.id = id
    self.labels = labels
  }
}

/// An identity as a few bytes name it across processes: its number and the digest
/// of its labels (``LabelSet/canonicalDigest``). Numbers are reused for other labels
/// after garbage collection, so the number alone does not say which identity is meant.
public struct IdentityFingerprint: Hashable, Sendable {
  public var id: NumericIdentity
  /// nil when the one who named the identity did not say (a node from before
  /// digests were published): such an identity matches no labels.
  public var labelsDigest: UInt64?

  public init(id: NumericIdentity, labelsDigest: UInt64?) {
    self.id = id
    self.labelsDigest = labelsDigest
  }

  public init(_ identity: SecurityIdentity) {
    self.init(id: identity.id, labelsDigest: identity.labels.canonicalDigest)
  }
}
