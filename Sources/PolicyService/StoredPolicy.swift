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
