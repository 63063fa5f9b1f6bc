internal import Yams

/// One document of a manifest file.
struct ManifestDocument {
  /// 1-based position in the file, counting empty documents.
  var number: Int
  var value: ManifestValue
}

/// Splits manifest bytes into documents: JSON values when the content starts with `{` or `[`,
/// otherwise a YAML stream (`---` separated).
enum ManifestReader {
  /// - Throws: ``PolicyError`` (`invalidManifest`) naming the source and document when the
  ///   bytes are not UTF-8 or not well-formed YAML/JSON.
  static func documents(sourceName: String, content: [UInt8]) throws(PolicyError)
    -> [ManifestDocument]
  {
    var bytes = content
    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
    guard let text = String(validating: bytes, as: UTF8.self) else {
      throw PolicyError(
        code: .invalidManifest, message: "\(sourceName): content is not valid UTF-8")
    }
    if let first = bytes.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }),
      first == UInt8(ascii: "{") || first == UInt8(ascii: "[")
    {
      var reader = JSONReader(bytes)
      switch reader.readAll() {
      case .success(let values):
        return values.enumerated().map {
          ManifestDocument(number: $0.offset + 1, value: $0.element)
        }
      case .failure(let streamFailure):
        // Content that starts like JSON is read as JSON only, so a JSON syntax error is
        // reported as one rather than as whatever YAML makes of it.
        let failure = streamFailure.failure
        throw PolicyError(
          code: .invalidManifest,
          message:
            "\(sourceName): document \(streamFailure.index + 1): invalid JSON at line \(failure.line), column \(failure.column): \(failure.problem)"
        )
      }
    }
    return try yamlDocuments(sourceName: sourceName, text: text)
  }

  /// Reads a policy stored as JSON by the repository.
  static func storedDocument(_ json: String) -> ManifestValue? {
    var reader = JSONReader(Array(json.utf8))
    guard case .success(let values) = reader.readAll(), values.count == 1 else { return nil }
    return values[0]
  }

  private static func yamlDocuments(sourceName: String, text: String) throws(PolicyError)
    -> [ManifestDocument]
  {
    var documents: [ManifestDocument] = []
    var number = 0
    do {
      let parser = try Parser(yaml: text)
      while true {
        number += 1
        guard let node = try parser.nextRoot() else { break }
        var budget = Self.maxNodesPerDocument
        let value = try convert(node, depth: 0, budget: &budget)
        if value != .null { documents.append(ManifestDocument(number: number, value: value)) }
      }
    } catch let error as YamlError {
      throw PolicyError(
        code: .invalidManifest,
        message: "\(sourceName): document \(max(number, 1)): invalid YAML \(describe(error))")
    } catch let error as FieldError {
      throw PolicyError(
        code: .invalidManifest, message: "\(sourceName): document \(number): \(error.problem)")
    } catch {
      throw PolicyError(
        code: .invalidManifest,
        message: "\(sourceName): document \(max(number, 1)): invalid YAML: \(error)")
    }
    return documents
  }

  /// Far beyond any real policy document; YAML aliases can make a small file
  /// expand without bound ("billion laughs"), so expansion is counted.
  static let maxNodesPerDocument = 1_000_000
  static let maxDepth = 256

  private static func convert(_ node: Node, depth: Int, budget: inout Int) throws(FieldError)
    -> ManifestValue
  {
    budget -= 1
    guard budget >= 0 else {
      throw FieldError(
        path: "",
        problem: "document expands to more than \(maxNodesPerDocument) values (YAML aliases?)")
    }
    guard depth < maxDepth else {
      throw FieldError(path: "", problem: "document nests deeper than \(maxDepth) levels")
    }
    switch node {
    case .scalar(let scalar):
      switch node.tag.rawValue {
      case Tag.Name.null.rawValue: return .null
      case Tag.Name.bool.rawValue: return node.bool.map { .bool($0) } ?? .string(scalar.string)
      case Tag.Name.int.rawValue:
        if let value = node.int { return .integer(value) }
        return .string(scalar.string)
      case Tag.Name.float.rawValue:
        if let value = node.float { return .number(value) }
        return .string(scalar.string)
      default: return .string(scalar.string)
      }
    case .mapping(let mapping):
      var members: [ManifestValue.Member] = []
      for (key, value) in mapping {
        guard case .scalar(let keyScalar) = key else {
          throw FieldError(
            path: "", problem: "mapping keys must be strings (line \(key.mark?.line ?? 0))")
        }
        members.append(
          .init(key: keyScalar.string, value: try convert(value, depth: depth + 1, budget: &budget))
        )
      }
      return .object(members)
    case .sequence(let sequence):
      var values: [ManifestValue] = []
      for element in sequence {
        values.append(try convert(element, depth: depth + 1, budget: &budget))
      }
      return .list(values)
    case .alias:
      throw FieldError(path: "", problem: "YAML aliases are not supported")
    }
  }

  private static func describe(_ error: YamlError) -> String {
    func at(_ mark: Mark) -> String { "at line \(mark.line), column \(mark.column)" }
    func context(_ context: YamlError.Context?) -> String {
      guard let context else { return "" }
      return " (\(context.text) \(at(context.mark)))"
    }
    switch error {
    case .scanner(let ctx, let problem, let mark, _), .parser(let ctx, let problem, let mark, _),
      .composer(let ctx, let problem, let mark, _):
      return "\(at(mark)): \(problem)\(context(ctx))"
    case .reader(let problem, _, _, _):
      return ": \(problem)"
    case .duplicatedKeysInMapping(let duplicates, let ctx):
      return
        "\(at(ctx.mark)): duplicate key \(duplicates.map { "\"\($0)\"" }.joined(separator: ", "))"
    default:
      return ": \(error)"
    }
  }
}
