/// A small strict JSON reader that keeps object member order and tells integers from
/// other numbers (Foundation's `JSONSerialization` does neither), for manifests written
/// as JSON and for policies read back from the database.
struct JSONReader {
  struct Failure: Error {
    var problem: String
    var line: Int
    var column: Int
  }

  private let bytes: [UInt8]
  private var position = 0

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  /// A failure in the value at `index` (0-based) of a stream.
  struct StreamFailure: Error {
    var index: Int
    var failure: Failure
  }

  /// Reads every top-level value; JSON values may follow one another (a JSON stream).
  /// - Returns: the values, or the number of values read before the failure and the failure.
  mutating func readAll() -> Result<[ManifestValue], StreamFailure> {
    var values: [ManifestValue] = []
    skipWhitespace()
    while position < bytes.count {
      do {
        values.append(try readValue(depth: 0))
      } catch {
        return .failure(StreamFailure(index: values.count, failure: error))
      }
      skipWhitespace()
    }
    return .success(values)
  }

  private func failure(_ problem: String) -> Failure {
    var line = 1
    var column = 1
    for byte in bytes[..<min(position, bytes.count)] {
      if byte == UInt8(ascii: "\n") {
        line += 1
        column = 1
      } else if byte & 0xC0 != 0x80 {
        column += 1
      }
    }
    return Failure(problem: problem, line: line, column: column)
  }

  private mutating func skipWhitespace() {
    while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) {
      position += 1
    }
  }

  private mutating func readValue(depth: Int) throws(Failure) -> ManifestValue {
    guard depth < 128 else { throw failure("nesting too deep") }
    skipWhitespace()
    guard position < bytes.count else { throw failure("unexpected end of input") }
    switch bytes[position] {
    case UInt8(ascii: "{"): return try readObject(depth: depth)
    case UInt8(ascii: "["): return try readArray(depth: depth)
    case UInt8(ascii: "\""): return .string(try readString())
    case UInt8(ascii: "t"):
      try expectWord("true")
      return .bool(true)
    case UInt8(ascii: "f"):
      try expectWord("false")
      return .bool(false)
    case UInt8(ascii: "n"):
      try expectWord("null")
      return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try readNumber()
    default: throw failure("unexpected character '\(Character(Unicode.Scalar(bytes[position])))'")
    }
  }

  private mutating func expectWord(_ word: String) throws(Failure) {
    let utf8 = Array(word.utf8)
    guard position + utf8.count <= bytes.count,
      Array(bytes[position..<position + utf8.count]) == utf8
    else {
      throw failure("invalid literal")
    }
    position += utf8.count
  }

  private mutating func readObject(depth: Int) throws(Failure) -> ManifestValue {
    position += 1
    var members: [ManifestValue.Member] = []
    var keys = Set<String>()
    skipWhitespace()
    if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
      position += 1
      return .object(members)
    }
    while true {
      skipWhitespace()
      guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
        throw failure("expected a string key")
      }
      let key = try readString()
      guard keys.insert(key).inserted else { throw failure("duplicate key \"\(key)\"") }
      skipWhitespace()
      guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else {
        throw failure("expected ':'")
      }
      position += 1
      members.append(.init(key: key, value: try readValue(depth: depth + 1)))
      skipWhitespace()
      guard position < bytes.count else { throw failure("unexpected end of input") }
      if bytes[position] == UInt8(ascii: ",") {
        position += 1
      } else if bytes[position] == UInt8(ascii: "}") {
        position += 1
        return .object(members)
      } else {
        throw failure("expected ',' or '}'")
      }
    }
  }

  private mutating func readArray(depth: Int) throws(Failure) -> ManifestValue {
    position += 1
    var values: [ManifestValue] = []
    skipWhitespace()
    if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
      position += 1
      return .list(values)
    }
    while true {
      values.append(try readValue(depth: depth + 1))
      skipWhitespace()
      guard position < bytes.count else { throw failure("unexpected end of input") }
      if bytes[position] == UInt8(ascii: ",") {
        position += 1
      } else if bytes[position] == UInt8(ascii: "]") {
        position += 1
        return .list(values)
      } else {
        throw failure("expected ',' or ']'")
      }
    }
  }

  private mutating func readString() throws(Failure) -> String {
    position += 1
    var scalars = String.UnicodeScalarView()
    var raw: [UInt8] = []
    func flush() {
      scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
      raw.removeAll(keepingCapacity: true)
    }
    while true {
      guard position < bytes.count else { throw failure("unterminated string") }
      let byte = bytes[position]
      position += 1
      switch byte {
      case UInt8(ascii: "\""):
        flush()
        return String(scalars)
      case UInt8(ascii: "\\"):
        flush()
        guard position < bytes.count else { throw failure("unterminated string") }
        let escape = bytes[position]
        position += 1
        switch escape {
        case UInt8(ascii: "\""): scalars.append("\"")
        case UInt8(ascii: "\\"): scalars.append("\\")
        case UInt8(ascii: "/"): scalars.append("/")
        case UInt8(ascii: "b"): scalars.append("\u{08}")
        case UInt8(ascii: "f"): scalars.append("\u{0C}")
        case UInt8(ascii: "n"): scalars.append("\n")
        case UInt8(ascii: "r"): scalars.append("\r")
        case UInt8(ascii: "t"): scalars.append("\t")
        case UInt8(ascii: "u"):
          var code = try readHex4()
          if (0xD800..<0xDC00).contains(code) {
            guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
              bytes[position + 1] == UInt8(ascii: "u")
            else {
              throw failure("unpaired surrogate")
            }
            position += 2
            let low = try readHex4()
            guard (0xDC00..<0xE000).contains(low) else { throw failure("unpaired surrogate") }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
          }
          guard let scalar = Unicode.Scalar(code) else { throw failure("invalid \\u escape") }
          scalars.append(scalar)
        default: throw failure("invalid escape")
        }
      case 0..<0x20:
        throw failure("control character in string")
      default:
        raw.append(byte)
      }
    }
  }

  private mutating func readHex4() throws(Failure) -> UInt32 {
    guard position + 4 <= bytes.count,
      let code = UInt32(String(decoding: bytes[position..<position + 4], as: UTF8.self), radix: 16)
    else { throw failure("invalid \\u escape") }
    position += 4
    return code
  }

  private mutating func readNumber() throws(Failure) -> ManifestValue {
    let start = position
    var isInteger = true
    if bytes[position] == UInt8(ascii: "-") { position += 1 }
    func digits() -> Int {
      let begin = position
      while position < bytes.count,
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position])
      { position += 1 }
      return position - begin
    }
    guard digits() > 0 else { throw failure("invalid number") }
    if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
      isInteger = false
      position += 1
      guard digits() > 0 else { throw failure("invalid number") }
    }
    if position < bytes.count,
      bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E")
    {
      isInteger = false
      position += 1
      if position < bytes.count,
        bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-")
      {
        position += 1
      }
      guard digits() > 0 else { throw failure("invalid number") }
    }
    let text = String(decoding: bytes[start..<position], as: UTF8.self)
    if isInteger, let value = Int(text) { return .integer(value) }
    guard let value = Double(text) else { throw failure("invalid number") }
    return .number(value)
  }
}
