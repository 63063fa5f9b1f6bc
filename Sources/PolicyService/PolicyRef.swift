public import TesseraCore

/// Names one imported policy. Policies are keyed by namespace and name; importing a
/// policy with the namespace and name of an existing one replaces it, whatever its kind.
public struct PolicyRef: Hashable, Sendable, Comparable, CustomStringConvertible {
  /// The policy's namespace; empty for a `CiliumClusterwideNetworkPolicy`.
  public var namespace: String
  public var name: String
  /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy` or `NetworkPolicy`.
  public var kind: String

  public init(namespace: String, name: String, kind: String) {
    self.namespace = namespace
    self.name = name
    self.kind = kind
  }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    (lhs.namespace, lhs.name, lhs.kind) < (rhs.namespace, rhs.name, rhs.kind)
  }

  /// `namespace/name`, or `name` for a cluster-wide policy.
  public var description: String { namespace.isEmpty ? name : "\(namespace)/\(name)" }
}

/// A policy as the repository holds it.
public struct StoredPolicy: Sendable, Hashable {
  public var ref: PolicyRef
  /// The repository revision at which the policy was last imported.
  public var revision: UInt64
  /// The policy document as imported, normalised to JSON (sorted keys, defaults such as
  /// `metadata.namespace` filled in). Re-importing it yields the same rules.
  public var sourceJSON: String
  /// The number of rules the policy holds (`spec` plus `specs` for Cilium policies, 1 for a
  /// NetworkPolicy).
  public var ruleCount: Int

  public init(ref: PolicyRef, revision: UInt64, sourceJSON: String, ruleCount: Int) {
    self.ref = ref
    self.revision = revision
    self.sourceJSON = sourceJSON
    self.ruleCount = ruleCount
  }
}

/// The subject identities whose computed policy may have changed.
public enum AffectedIdentities: Sendable, Equatable {
  /// Every identity may be affected.
  case all
  /// Only these identities may be affected (possibly none).
  case some(Set<NumericIdentity>)

  public static let none = AffectedIdentities.some([])

  /// Whether an endpoint with `identity` must recompute its policy.
  public func contains(_ identity: NumericIdentity) -> Bool {
    switch self {
    case .all: true
    case .some(let set): set.contains(identity)
    }
  }
}

/// One selector of the SelectorCache, for `tessera selectors`.
public struct SelectorSnapshot: Sendable, Hashable {
  /// The selector written the Kubernetes way, e.g.
  /// `k8s:app=frontend,k8s:io.kubernetes.pod.namespace=default`; `{}` selects everything.
  public var selector: String
  /// The identities it selects, sorted.
  public var identities: [NumericIdentity]
  /// How many rule references use it.
  public var users: Int

  public init(selector: String, identities: [NumericIdentity], users: Int) {
    self.selector = selector
    self.identities = identities
    self.users = users
  }
}
