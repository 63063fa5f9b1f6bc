import Foundation

/// A label `source:key=value` attached to a workload, e.g. `k8s:app=frontend`.
///
/// The source says where the label came from (`k8s`, `container`, `reserved`,
/// `cni`, …). Selectors may ignore it (`any`).
public struct Label: Hashable, Sendable, Codable, CustomStringConvertible {
  public var source: String
  public var key: String
  public var value: String

  public init(source: String, key: String, value: String) {
    self.source = source
    self.key = key
    self.value = value
  }

  /// Well-known label sources.
  public enum Source {
    public static let kubernetes = "k8s"
    public static let reserved = "reserved"
    public static let container = "container"
    public static let any = "any"
  }

  /// The source given to labels written without one.
  public static let defaultSource = Source.kubernetes

  /// Limits that keep a label set within what the store and the wire accept.
  public static let maxKeyLength = 317
  public static let maxValueLength = 253
  public static let maxSourceLength = 63

  /// `source:key=value`; `key=value` when written without a source.
  public var description: String { "\(source):\(key)=\(value)" }

  /// Parses `source:key=value`, `key=value` or `key` (empty value).
  ///
  /// - Throws: ``LabelError`` when a part is empty, too long or holds a forbidden character.
  public static func parse(_ text: String, defaultSource: String = Label.defaultSource)
    throws(LabelError) -> Label
  {
    // Delimiters are found in the UTF-8 bytes, never by Character: Swift's
    // Characters compare by canonical equivalence and group combining marks, so
    // U+037E (Greek question mark) is ";" to them and ";" after a prepended mark
    // is no ";" at all. An ASCII byte never occurs inside a multi-byte character.
    var rest = Substring(text).utf8[...]
    var source = defaultSource
    // A key may itself contain ':' only after a '/', e.g. `k8s:io.kubernetes.pod.namespace`;
    // the source is the part before the first ':' when that comes before any '=' or '/'.
    if let colon = rest.firstIndex(of: UInt8(ascii: ":")) {
      let head = rest[..<colon]
      if !head.contains(UInt8(ascii: "=")) && !head.contains(UInt8(ascii: "/")) {
        source = String(Substring(head))
        rest = rest[rest.index(after: colon)...]
      }
    }
    let key: Substring
    let value: Substring
    if let equals = rest.firstIndex(of: UInt8(ascii: "=")) {
      key = Substring(rest[..<equals])
      value = Substring(rest[rest.index(after: equals)...])
    } else {
      key = Substring(rest)
      value = ""
    }
    let label = Label(source: source, key: String(key), value: String(value))
    try label.validate()
    return label
  }

  /// Checks the label is well formed.
  public func validate() throws(LabelError) {
    if source.isEmpty { throw LabelError(label: description, problem: "empty source") }
    if source.utf8.count > Self.maxSourceLength {
      throw LabelError(
        label: description, problem: "source longer than \(Self.maxSourceLength) bytes")
    }
    if !source.unicodeScalars.allSatisfy(Self.isSourceCharacter) {
      throw LabelError(
        label: description, problem: "source may hold only a-z, 0-9, '-', '.' and '_'")
    }
    if key.isEmpty { throw LabelError(label: description, problem: "empty key") }
    if key.utf8.count > Self.maxKeyLength {
      throw LabelError(label: description, problem: "key longer than \(Self.maxKeyLength) bytes")
    }
    if value.utf8.count > Self.maxValueLength {
      throw LabelError(
        label: description, problem: "value longer than \(Self.maxValueLength) bytes")
    }
    // ';' and '=' delimit the canonical key; control characters break logs and tables.
    for scalar in key.unicodeScalars
    where scalar == ";" || scalar == "=" || Self.isControl(scalar) || scalar == " " {
      throw LabelError(
        label: description,
        problem: "key contains forbidden character \(scalar.escaped(asASCII: true))")
    }
    for scalar in value.unicodeScalars where scalar == ";" || Self.isControl(scalar) {
      throw LabelError(
        label: description,
        problem: "value contains forbidden character \(scalar.escaped(asASCII: true))")
    }
    // Swift compares strings by canonical equivalence, the identity stores by bytes:
    // two spellings of one text (K and the Kelvin sign U+212A) would be one label
    // set here and two in etcd. In NFC, canonically equal texts are equal bytes.
    for (part, text) in [("key", key), ("value", value)] where !Self.isNFC(text) {
      throw LabelError(
        label: description,
        problem:
          "\(part) is not in Unicode normalization form C (NFC); write it precomposed, as \"\(text.precomposedStringWithCanonicalMapping)\""
      )
    }
  }

  private static func isNFC(_ text: String) -> Bool {
    text.utf8.allSatisfy { $0 < 0x80 }
      || text.precomposedStringWithCanonicalMapping.utf8.elementsEqual(text.utf8)
  }

  private static func isSourceCharacter(_ s: Unicode.Scalar) -> Bool {
    switch s {
    case "a"..."z", "A"..."Z", "0"..."9", "-", ".", "_": true
    default: false
    }
  }

  private static func isControl(_ s: Unicode.Scalar) -> Bool {
    s.value < 0x20 || s.value == 0x7f
  }
}

/// A malformed label.
public struct LabelError: Error, Hashable, Sendable, CustomStringConvertible {
  public var label: String
  public var problem: String

  public init(label: String, problem: String) {
    self.label = label
    self.problem = problem
  }

  public var description: String { "invalid label \"\(label)\": \(problem)" }
}

/// A set of labels with at most one label per key, kept sorted by key.
///
/// Equal sets have equal ``canonicalKey``s; that string is what the identity
/// store keys on, so equal sets map to the same identity everywhere.
public struct LabelSet: Hashable, Sendable, Codable, Sequence, CustomStringConvertible {
  /// Sorted by key, then source; keys are unique.
  public private(set) var labels: [Label]

  public static let empty = LabelSet(validated: [])

  /// More labels than any workload has; a larger set is an attack on every
  /// selector evaluation and every identity key, not a workload.
  public static let maxLabels = 512

  /// - Throws: ``LabelError`` for a malformed label or two labels with one key and different values.
  public init(_ labels: some Sequence<Label>) throws(LabelError) {
    var byKey: [String: Label] = [:]
    for label in labels {
      if byKey.count >= Self.maxLabels {
        throw LabelError(
          label: label.description, problem: "a label set holds at most \(Self.maxLabels) labels")
      }
      try label.validate()
      if let existing = byKey[label.key], existing != label {
        throw LabelError(
          label: label.description, problem: "conflicts with \(existing) (one value per key)")
      }
      byKey[label.key] = label
    }
    self.labels = byKey.values.sorted { ($0.key, $0.source) < ($1.key, $1.source) }
  }

  /// For labels already validated (e.g. read back from the store).
  public init(validated labels: [Label]) {
    self.labels = labels.sorted { ($0.key, $0.source) < ($1.key, $1.source) }
  }

  /// Parses `source:key=value` strings.
  public init(parsing texts: [String], defaultSource: String = Label.defaultSource)
    throws(LabelError)
  {
    var parsed: [Label] = []
    for text in texts { parsed.append(try Label.parse(text, defaultSource: defaultSource)) }
    try self.init(parsed)
  }

  /// Labels sorted by key, each written `source:key=value;`.
  public var canonicalKey: String {
    labels.map { "\($0.source):\($0.key)=\($0.value);" }.joined()
  }

  /// FNV-1a (64 bits) of ``canonicalKey``: the same in every process (unlike
  /// `hashValue`), so services can tell in a few bytes whether two identities
  /// with one number had the same labels (numbers are reused after garbage collection).
  public var canonicalDigest: UInt64 {
    var digest: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in canonicalKey.utf8 {
      digest ^= UInt64(byte)
      digest = digest &* 0x0000_0100_0000_01b3
    }
    return digest
  }

  public var isEmpty: Bool { labels.isEmpty }
  public var count: Int { labels.count }
  public func makeIterator() -> IndexingIterator<[Label]> { labels.makeIterator() }
  public var description: String { labels.map(\.description).joined(separator: ",") }

  /// The label with this key, whatever its source.
  public subscript(key: String) -> Label? { labels.first { $0.key == key } }

  /// Whether any label has the `reserved` source.
  public var hasReservedLabel: Bool { labels.contains { $0.source == Label.Source.reserved } }

  /// The first label a workload may not carry: a `reserved:` one (reserved identities' own)
  /// or a `cidr:` one (``CIDRIdentity``'s).
  public var firstSystemLabel: Label? {
    labels.first { $0.source == Label.Source.reserved || $0.source == CIDRIdentity.labelSource }
  }

  /// This set with `other`'s labels added; `other` wins on a shared key.
  public func merging(_ other: LabelSet) -> LabelSet {
    var byKey = Dictionary(uniqueKeysWithValues: labels.map { ($0.key, $0) })
    for label in other.labels { byKey[label.key] = label }
    return LabelSet(validated: Array(byKey.values))
  }

  /// Parses a canonical key back into a set.
  public init(canonicalKey: String) throws(LabelError) {
    var parsed: [Label] = []
    // Split on the byte (see ``Label/parse(_:defaultSource:)``).
    for part in canonicalKey.utf8.split(separator: UInt8(ascii: ";")) {
      parsed.append(try Label.parse(String(Substring(part))))
    }
    try self.init(parsed)
  }
}
