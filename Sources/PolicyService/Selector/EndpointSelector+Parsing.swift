public import TesseraCore

extension EndpointSelector {
  /// Parses the Kubernetes label-selector syntax (`kubectl -l`): requirements separated by
  /// commas, each `key=value` (or `==`), `key!=value`, `key in (a,b)`, `key notin (a,b)`,
  /// `key` (exists) or `!key` (does not exist). A key may carry a source (`k8s:app`); without
  /// one it matches a label of any source.
  ///
  /// - Throws: ``PolicyError`` (`invalidRequest`) naming the requirement that is malformed.
  public init(parsing text: String) throws(PolicyError) {
    guard !text.allSatisfy(\.isWhitespace) else {
      throw PolicyError(code: .invalidRequest, message: "empty label selector")
    }
    var requirements: [LabelRequirement] = []
    for part in try Self.splitRequirements(text) {
      requirements.append(try Self.requirement(part))
    }
    self.init(requirements)
  }

  /// Splits at commas outside parentheses.
  private static func splitRequirements(_ text: String) throws(PolicyError) -> [Substring] {
    var parts: [Substring] = []
    var depth = 0
    var start = text.startIndex
    for index in text.indices {
      switch text[index] {
      case "(": depth += 1
      case ")":
        depth -= 1
        guard depth >= 0 else {
          throw PolicyError(code: .invalidRequest, message: "selector \"\(text)\": unbalanced ')'")
        }
      case "," where depth == 0:
        parts.append(text[start..<index])
        start = text.index(after: index)
      default: break
      }
    }
    guard depth == 0 else {
      throw PolicyError(code: .invalidRequest, message: "selector \"\(text)\": unclosed '('")
    }
    parts.append(text[start...])
    return parts
  }

  private static func requirement(_ raw: Substring) throws(PolicyError) -> LabelRequirement {
    let text = raw.trimmingWhitespace
    func invalid(_ problem: String) -> PolicyError {
      PolicyError(code: .invalidRequest, message: "selector requirement \"\(text)\": \(problem)")
    }
    func key(_ part: Substring) throws(PolicyError) -> SelectorKey {
      let name = part.trimmingWhitespace
      guard !name.isEmpty else { throw invalid("no label key") }
      guard !name.contains(where: { $0.isWhitespace || "=!(),".contains($0) }) else {
        throw invalid("\"\(name)\" is not a label key")
      }
      return SelectorKey(parsing: String(name))
    }
    func value(_ part: Substring) throws(PolicyError) -> String {
      let value = part.trimmingWhitespace
      guard !value.contains(where: { $0.isWhitespace || "=!(),".contains($0) }) else {
        throw invalid("\"\(value)\" is not a label value")
      }
      return String(value)
    }
    guard !text.isEmpty else { throw invalid("empty requirement") }
    if text.hasPrefix("!") {
      return LabelRequirement(key: try key(text.dropFirst()), op: .doesNotExist)
    }
    if let range = text.range(of: "!=") {
      return LabelRequirement(
        key: try key(text[..<range.lowerBound]), op: .notIn,
        values: [try value(text[range.upperBound...])])
    }
    if let range = text.range(of: "==") ?? text.range(of: "=") {
      return LabelRequirement(
        key: try key(text[..<range.lowerBound]), op: .in,
        values: [try value(text[range.upperBound...])])
    }
    if let open = text.firstIndex(of: "(") {
      guard text.hasSuffix(")") else { throw invalid("text after ')'") }
      let head = text[..<open].split(whereSeparator: \.isWhitespace)
      guard head.count == 2, head[1] == "in" || head[1] == "notin" else {
        throw invalid("expected \"key in (…)\" or \"key notin (…)\"")
      }
      let values = try text[text.index(after: open)..<text.index(before: text.endIndex)]
        .split(separator: ",", omittingEmptySubsequences: false)
        .map { part throws(PolicyError) -> String in
          let parsed = try value(part)
          guard !parsed.isEmpty else { throw invalid("empty value in the set") }
          return parsed
        }
      return LabelRequirement(
        key: try key(head[0]), op: head[1] == "in" ? .in : .notIn, values: values)
    }
    return LabelRequirement(key: try key(text), op: .exists)
  }
}

extension Substring {
  fileprivate var trimmingWhitespace: Substring {
    let start = firstIndex { !$0.isWhitespace } ?? endIndex
    let end = lastIndex { !$0.isWhitespace }.map { index(after: $0) } ?? start
    return self[start..<Swift.max(start, end)]
  }
}
