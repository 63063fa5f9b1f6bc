public import TesseraCore

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
