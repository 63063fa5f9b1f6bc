public import TesseraCore

/// A label key as a selector names it: `source:key`, where the source `any` matches a label
/// of any source (Cilium writes a key without a source as `any:key`).
public struct SelectorKey: Hashable, Sendable, Comparable, CustomStringConvertible {
  public var source: String
  public var key: String

  public init(source: String, key: String) {
    self.source = source
    self.key = key
  }

  public static func any(_ key: String) -> SelectorKey {
    SelectorKey(source: Label.Source.any, key: key)
  }
  public static func k8s(_ key: String) -> SelectorKey {
    SelectorKey(source: Label.Source.kubernetes, key: key)
  }
  public static func reserved(_ key: String) -> SelectorKey {
    SelectorKey(source: Label.Source.reserved, key: key)
  }

  /// Parses `source:key` or `key` (source `any`). The source is the part before the first
  /// `:` when that part holds no `/` (so `k8s:io.cilium.k8s.namespace.labels.kubernetes.io/x`
  /// has source `k8s`).
  public init(parsing text: String) {
    if let colon = text.firstIndex(of: ":"), !text[..<colon].contains("/"), !text[..<colon].isEmpty
    {
      self.init(source: String(text[..<colon]), key: String(text[text.index(after: colon)...]))
    } else {
      self.init(source: Label.Source.any, key: text)
    }
  }

  public var matchesAnySource: Bool { source == Label.Source.any }

  /// The label with this key in `labels`, if its source matches.
  public func label(in labels: LabelSet) -> Label? {
    guard let label = labels[key] else { return nil }
    return matchesAnySource || label.source == source ? label : nil
  }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    (lhs.key, lhs.source) < (rhs.key, rhs.source)
  }
  public var description: String { "\(source):\(key)" }
}

/// One requirement of a label selector (Kubernetes `LabelSelectorRequirement`; a `matchLabels`
/// entry is `In` with one value).
public struct LabelRequirement: Hashable, Sendable, Comparable, CustomStringConvertible {
  public enum Operator: String, Hashable, Sendable, CaseIterable {
    case `in` = "In"
    case notIn = "NotIn"
    case exists = "Exists"
    case doesNotExist = "DoesNotExist"
  }

  public var key: SelectorKey
  public var op: Operator
  /// Sorted and unique; non-empty for `In`/`NotIn`, empty otherwise.
  public var values: [String]

  public init(key: SelectorKey, op: Operator, values: [String] = []) {
    self.key = key
    self.op = op
    self.values = Array(Set(values)).sorted()
  }

  /// Kubernetes semantics: `NotIn` and `DoesNotExist` match a label set without the key.
  public func matches(_ labels: LabelSet) -> Bool {
    let label = key.label(in: labels)
    switch op {
    case .in: return label.map { values.contains($0.value) } ?? false
    case .notIn: return label.map { !values.contains($0.value) } ?? true
    case .exists: return label != nil
    case .doesNotExist: return label == nil
    }
  }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    if lhs.key != rhs.key { return lhs.key < rhs.key }
    if lhs.op != rhs.op { return lhs.op.rawValue < rhs.op.rawValue }
    return lhs.values.lexicographicallyPrecedes(rhs.values)
  }

  /// The Kubernetes selector syntax: `k=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`.
  public var description: String {
    switch op {
    case .in:
      values.count == 1 ? "\(key)=\(values[0])" : "\(key) in (\(values.joined(separator: ",")))"
    case .notIn: "\(key) notin (\(values.joined(separator: ",")))"
    case .exists: "\(key)"
    case .doesNotExist: "!\(key)"
    }
  }
}

/// A label selector over identities: every requirement must hold. No requirements selects
/// every identity.
///
/// Requirements are kept sorted and unique, so two selectors that mean the same thing
/// written the same way are equal, and the SelectorCache holds them once.
public struct EndpointSelector: Hashable, Sendable, Comparable, CustomStringConvertible {
  public private(set) var requirements: [LabelRequirement]

  public init(_ requirements: [LabelRequirement] = []) {
    self.requirements = Array(Set(requirements)).sorted()
  }

  /// `matchLabels`-style selector: every key has exactly that value.
  public init(matchLabels: [SelectorKey: String]) {
    self.init(matchLabels.map { LabelRequirement(key: $0.key, op: .in, values: [$0.value]) })
  }

  /// The selector that selects every identity (peer wildcard).
  public static let all = EndpointSelector()

  public var isWildcard: Bool { requirements.isEmpty }

  public func matches(_ labels: LabelSet) -> Bool {
    requirements.allSatisfy { $0.matches(labels) }
  }

  /// Whether some requirement names exactly this key (source included).
  public func hasKey(_ key: SelectorKey) -> Bool { requirements.contains { $0.key == key } }

  /// Whether some requirement's key, written `source:key`, starts with `prefix`.
  public func hasKeyPrefix(source: String, keyPrefix: String) -> Bool {
    requirements.contains { $0.key.source == source && $0.key.key.hasPrefix(keyPrefix) }
  }

  public func adding(_ requirement: LabelRequirement) -> EndpointSelector {
    EndpointSelector(requirements + [requirement])
  }

  /// This selector with its `key=…` match (a one-value `In`) replaced by `key=value`, the way
  /// Cilium overwrites `matchLabels[key]`; other requirements on `key` stay.
  public func replacingMatch(_ key: SelectorKey, with value: String) -> EndpointSelector {
    EndpointSelector(
      requirements.filter { !($0.key == key && $0.op == .in && $0.values.count == 1) }
        + [LabelRequirement(key: key, op: .in, values: [value])])
  }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    lhs.requirements.lexicographicallyPrecedes(rhs.requirements)
  }

  /// Requirements joined with `,`, e.g. `k8s:app=frontend,k8s:io.kubernetes.pod.namespace=default`;
  /// `{}` for the wildcard.
  public var description: String {
    requirements.isEmpty ? "{}" : requirements.map(\.description).joined(separator: ",")
  }
}
