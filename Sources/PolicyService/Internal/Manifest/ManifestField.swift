/// A problem at one place in a manifest document: `path` is the field path the Kubernetes
/// way (`spec.ingress[0].toPorts[0].ports[0].port`), empty for the document itself.
struct FieldError: Error, Hashable {
  var path: String
  var problem: String
}

/// A value and where it sits in its document, with typed accessors that fail with the
/// field's path.
struct ManifestField {
  var path: String
  var value: ManifestValue

  func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

  func error(_ problem: String) -> FieldError { FieldError(path: path, problem: problem) }

  private func typeError(_ expected: String) -> FieldError {
    error("expected \(expected), got \(value.typeDescription)")
  }

  /// A mapping whose keys are all in `known`. A key in `unsupported` fails with its message,
  /// any other key fails as an unknown field.
  func object(known: Set<String>, unsupported: [String: String] = [:]) throws(FieldError)
    -> ManifestObject
  {
    guard case .object(let members) = value else { throw typeError("a mapping") }
    for member in members {
      if let message = unsupported[member.key] {
        throw FieldError(path: childPath(member.key), problem: message)
      }
      if !known.contains(member.key) {
        var problem = "unknown field"
        if let suggestion = Self.closest(to: member.key, in: known) {
          problem += " (did you mean \"\(suggestion)\"?)"
        }
        throw FieldError(path: childPath(member.key), problem: problem)
      }
    }
    return ManifestObject(path: path, members: members)
  }

  /// A mapping, whatever its keys.
  func anyObject() throws(FieldError) -> ManifestObject {
    guard case .object(let members) = value else { throw typeError("a mapping") }
    return ManifestObject(path: path, members: members)
  }

  /// The elements of a list; `null` reads as an empty list.
  func list() throws(FieldError) -> [ManifestField] {
    switch value {
    case .null: return []
    case .list(let values):
      return values.enumerated().map {
        ManifestField(path: "\(path)[\($0.offset)]", value: $0.element)
      }
    default: throw typeError("a list")
    }
  }

  func string() throws(FieldError) -> String {
    guard case .string(let text) = value else {
      switch value {
      case .integer, .number, .bool:
        throw error("expected a string, got \(value.typeDescription) (quote it)")
      default:
        throw typeError("a string")
      }
    }
    return text
  }

  func bool() throws(FieldError) -> Bool {
    guard case .bool(let flag) = value else { throw typeError("a boolean") }
    return flag
  }

  func integer() throws(FieldError) -> Int {
    switch value {
    case .integer(let number): return number
    case .number(let number) where number == number.rounded() && abs(number) < 1e15:
      return Int(number)
    default: throw typeError("an integer")
    }
  }

  /// The known key within edit distance 2 of `key`, if one is clearly closest.
  private static func closest(to key: String, in known: Set<String>) -> String? {
    let scored = known.map { ($0, editDistance(key.lowercased(), $0.lowercased())) }.filter {
      $0.1 <= 2
    }
    return scored.min { ($0.1, $0.0) < ($1.1, $1.0) }?.0
  }

  private static func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8)
    let b = Array(b.utf8)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous = Array(0...b.count)
    for i in 1...a.count {
      var current = [i] + Array(repeating: 0, count: b.count)
      for j in 1...b.count {
        current[j] = min(
          previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
      }
      previous = current
    }
    return previous[b.count]
  }
}

/// A mapping in a manifest document. A member whose value is `null` counts as absent, as it
/// does for the Kubernetes API.
struct ManifestObject {
  var path: String
  var members: [ManifestValue.Member]

  func has(_ key: String) -> Bool { self[key] != nil }

  subscript(key: String) -> ManifestField? {
    guard let member = members.last(where: { $0.key == key }), member.value != .null else {
      return nil
    }
    return ManifestField(path: path.isEmpty ? key : "\(path).\(key)", value: member.value)
  }

  func required(_ key: String) throws(FieldError) -> ManifestField {
    guard let field = self[key] else {
      throw FieldError(
        path: path.isEmpty ? key : "\(path).\(key)", problem: "required field is missing")
    }
    return field
  }

  /// The elements of the list at `key`; an absent key reads as an empty list.
  func list(_ key: String) throws(FieldError) -> [ManifestField] {
    try self[key]?.list() ?? []
  }
}
