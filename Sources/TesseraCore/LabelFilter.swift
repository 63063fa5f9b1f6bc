/// Decides which labels are identity-relevant.
///
/// Pods carry labels that change per instance (`pod-template-hash`,
/// `controller-uid`); letting them into the identity would give every pod its
/// own identity. The filter is an ordered list of rules; the first rule whose
/// pattern matches a label's key decides, and keys no rule matches are kept.
public struct LabelFilter: Sendable, Hashable {
  public struct Rule: Sendable, Hashable, CustomStringConvertible {
    public enum Action: Sendable, Hashable { case keep, drop }
    public var action: Action
    /// A key, or a key prefix ending in `*`.
    public var pattern: String

    public init(_ action: Action, _ pattern: String) {
      self.action = action
      self.pattern = pattern
    }

    /// `+pattern` keeps, `-pattern` drops.
    public init(parsing text: String) throws(LabelError) {
      guard let first = text.first, first == "+" || first == "-", text.count > 1 else {
        throw LabelError(
          label: text, problem: "a filter rule is +PATTERN (keep) or -PATTERN (drop)")
      }
      self.init(first == "+" ? .keep : .drop, String(text.dropFirst()))
    }

    public func matches(_ key: String) -> Bool {
      if pattern.hasSuffix("*") { return key.hasPrefix(pattern.dropLast()) }
      return key == pattern
    }

    public var description: String { (action == .keep ? "+" : "-") + pattern }
  }

  public var rules: [Rule]

  public init(rules: [Rule]) { self.rules = rules }

  /// docs/architecture.md §3: keep the namespace, Cilium policy labels and `app.kubernetes.io/*`;
  /// drop per-instance and infrastructure labels.
  public static let defaults = LabelFilter(rules: [
    Rule(.keep, "io.kubernetes.pod.namespace"),
    Rule(.keep, "io.cilium.k8s.policy.*"),
    Rule(.keep, "io.cilium.k8s.namespace.labels.*"),
    Rule(.keep, "app.kubernetes.io/*"),
    Rule(.drop, "pod-template-hash"),
    Rule(.drop, "pod-template-generation"),
    Rule(.drop, "controller-revision-hash"),
    Rule(.drop, "controller-uid"),
    Rule(.drop, "batch.kubernetes.io/controller-uid"),
    Rule(.drop, "statefulset.kubernetes.io/pod-name"),
    Rule(.drop, "io.kubernetes.*"),
    Rule(.drop, "kubernetes.io/*"),
    Rule(.drop, "*.kubernetes.io/*"),
  ])

  /// Whether a label with this key is identity-relevant. Reserved labels always are.
  public func isRelevant(_ label: Label) -> Bool {
    if label.source == Label.Source.reserved { return true }
    for rule in rules where rule.matches(label.key) { return rule.action == .keep }
    return true
  }

  public func filter(_ labels: LabelSet) -> LabelSet {
    LabelSet(validated: labels.labels.filter(isRelevant))
  }
}
