/// A decoded YAML or JSON value, with mapping order kept.
indirect enum ManifestValue: Hashable, Sendable {
  struct Member: Hashable, Sendable {
    var key: String
    var value: ManifestValue
  }

  case null
  case bool(Bool)
  case integer(Int)
  case number(Double)
  case string(String)
  case list([ManifestValue])
  case object([Member])

  /// For messages: "a string", "an integer", …
  var typeDescription: String {
    switch self {
    case .null: "null"
    case .bool: "a boolean"
    case .integer: "an integer"
    case .number: "a number"
    case .string: "a string"
    case .list: "a list"
    case .object: "a mapping"
    }
  }

  subscript(key: String) -> ManifestValue? {
    guard case .object(let members) = self else { return nil }
    return members.last { $0.key == key }?.value
  }

  /// This object with `key` set to `value` (replacing or appending).
  func setting(_ key: String, to value: ManifestValue) -> ManifestValue {
    guard case .object(var members) = self else { return self }
    if let index = members.firstIndex(where: { $0.key == key }) {
      members[index].value = value
    } else {
      members.append(Member(key: key, value: value))
    }
    return .object(members)
  }

  /// Compact JSON with object keys sorted, so equal documents give equal text.
  var normalizedJSON: String {
    var out = ""
    write(to: &out)
    return out
  }

  private func write(to out: inout String) {
    switch self {
    case .null: out += "null"
    case .bool(let value): out += value ? "true" : "false"
    case .integer(let value): out += String(value)
    case .number(let value):
      if value.isFinite {
        out += value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
      } else {
        Self.writeString(String(value), to: &out)
      }
    case .string(let value): Self.writeString(value, to: &out)
    case .list(let values):
      out += "["
      for (index, value) in values.enumerated() {
        if index > 0 { out += "," }
        value.write(to: &out)
      }
      out += "]"
    case .object(let members):
      out += "{"
      var seen = Set<String>()
      var sorted: [Member] = []
      for member in members.reversed() where seen.insert(member.key).inserted {
        sorted.append(member)
      }
      sorted.sort { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
      for (index, member) in sorted.enumerated() {
        if index > 0 { out += "," }
        Self.writeString(member.key, to: &out)
        out += ":"
        member.value.write(to: &out)
      }
      out += "}"
    }
  }

  private static func writeString(_ string: String, to out: inout String) {
    out += "\""
    for scalar in string.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20:
        let hex = String(scalar.value, radix: 16)
        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
      default: out.unicodeScalars.append(scalar)
      }
    }
    out += "\""
  }
}
