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
