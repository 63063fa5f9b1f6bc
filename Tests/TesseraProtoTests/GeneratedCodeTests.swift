import Foundation
import SwiftProtobuf
import Testing

/// The committed output of `scripts/generate-proto.sh` must match `proto/`.
@Suite("Generated code is current")
struct GeneratedCodeTests {
  static let staleMessage = "generated code is stale: run scripts/generate-proto.sh"

  @Test(
    "proto/generated.binpb equals what protoc makes of proto/ now",
    .enabled(if: Protoc.isInstalled, Protoc.skipReason)
  )
  func descriptorSetIsCurrent() throws {
    let current = try Protoc.currentDescriptorSet()
    let committed = try Repo.descriptorSet(at: Repo.committedDescriptorSet)
    if current != committed {
      Issue.record(
        "\(Self.staleMessage)\n\(Self.describeDifference(committed: committed, current: current))")
    }
  }

  /// The check above would catch an edit: the same comparison on an edited copy of proto/ fails.
  /// Comment-only edits count too: the generated Swift carries the comments, and the
  /// descriptor set is built with `--include_source_info`.
  @Test(
    "an edited .proto no longer matches proto/generated.binpb",
    .enabled(if: Protoc.isInstalled, Protoc.skipReason),
    arguments: [
      (
        "tessera/common/v1/common.proto", "  string value = 3;\n",
        "  string value = 3;\n  string note = 4;\n"
      ),
      ("tessera/endpoint/v1/endpoint.proto", "  string netns = 13;", "  string net_ns = 13;"),
      (
        "grpc/health/v1/health.proto", "    SERVICE_UNKNOWN = 3;",
        "    SERVICE_UNKNOWN = 3;\n    DRAINING = 4;"
      ),
      (
        "tessera/endpoint/v1/endpoint.proto", "  // Host side of the veth; empty",
        "  // The host side of the veth; empty"
      ),
    ]
  )
  func editedProtoIsDetected(file: String, old: String, new: String) throws {
    let committed = try Repo.descriptorSet(at: Repo.committedDescriptorSet)
    let unedited = try withProtoCopy(edit: { _ in }) { try Protoc.currentDescriptorSet(root: $0) }
    #expect(unedited == committed, "a verbatim copy of proto/ compiles to proto/generated.binpb")
    let edited = try withProtoCopy(edit: { try replaceInProto($0, file, old, new) }) {
      try Protoc.currentDescriptorSet(root: $0)
    }
    #expect(edited != committed)
  }

  @Test("every .proto has its generated Swift files and every generated file has its .proto")
  func generatedFilesMatchProtoFiles() throws {
    let protos = try Repo.protoFiles()
    #expect(!protos.isEmpty, "no .proto files found under \(Repo.protoDir.path)")

    let generated = Set(
      try FileManager.default.contentsOfDirectory(atPath: Repo.generatedSwiftDir.path)
        .filter { $0.hasSuffix(".pb.swift") || $0.hasSuffix(".grpc.swift") })

    var expected: Set<String> = []
    for proto in protos {
      let stem = Self.swiftFileStem(forProto: proto)
      for suffix in [".pb.swift", ".grpc.swift"] {
        let file = stem + suffix
        expected.insert(file)
        guard generated.contains(file) else {
          Issue.record("\(proto) has no Sources/TesseraProto/\(file): \(Self.staleMessage)")
          continue
        }
        // The generator records its input; a file left over from a renamed proto would not match.
        let text = try String(
          contentsOf: Repo.generatedSwiftDir.appendingPathComponent(file), encoding: .utf8)
        #expect(
          text.contains("// Source: \(proto)\n"),
          "Sources/TesseraProto/\(file) does not say it was generated from \(proto): \(Self.staleMessage)"
        )
      }
    }
    for orphan in generated.subtracting(expected).sorted() {
      Issue.record(
        "Sources/TesseraProto/\(orphan) has no .proto under proto/: \(Self.staleMessage)")
    }
  }

  /// Catches Swift code left behind when only the descriptor set was regenerated: every message
  /// of every file in `proto/generated.binpb` is a Swift type in that file's `.pb.swift`, and
  /// the `.pb.swift` declares no message the descriptor set lacks.
  @Test("the generated Swift declares exactly the messages of proto/generated.binpb")
  func swiftMessagesMatchDescriptorSet() throws {
    let committed = try Repo.descriptorSet(at: Repo.committedDescriptorSet)
    let protos = Set(try Repo.protoFiles())
    for file in committed.file where protos.contains(file.name) {
      let swiftFile = Self.swiftFileStem(forProto: file.name) + ".pb.swift"
      let url = Repo.generatedSwiftDir.appendingPathComponent(swiftFile)
      let text = try String(contentsOf: url, encoding: .utf8)

      if !file.package.isEmpty {
        #expect(
          text.contains("_protobuf_package = \"\(file.package)\""),
          "\(swiftFile) is not for package \(file.package): \(Self.staleMessage)")
      }
      var topLevel: Set<String> = []
      var nested: [String] = []
      for message in file.messageType {
        topLevel.insert(message.name)
        Self.collectNestedNames(message, into: &nested)
      }
      let swiftTopLevel = Self.matches(
        of: #"protoMessageName: String = _protobuf_package \+ "\.([A-Za-z0-9_]+)""#, in: text)
      let swiftNested = Self.matches(
        of: #"protoMessageName: String = [A-Za-z0-9_.]+\.protoMessageName \+ "\.([A-Za-z0-9_]+)""#,
        in: text)
      #expect(
        Set(swiftTopLevel) == topLevel,
        "messages of \(file.name) vs \(swiftFile): \(Self.staleMessage)")
      #expect(
        swiftNested.sorted() == nested.sorted(),
        "nested messages of \(file.name) vs \(swiftFile): \(Self.staleMessage)")
    }
  }

  // MARK: - Helpers

  /// `tessera/common/v1/common.proto` -> `tessera_common_v1_common` (`FileNaming=PathToUnderscores`).
  static func swiftFileStem(forProto path: String) -> String {
    String(path.dropLast(".proto".count)).replacingOccurrences(of: "/", with: "_")
  }

  /// Nested messages, without the synthetic `map<,>` entries that have no Swift type.
  static func collectNestedNames(
    _ message: Google_Protobuf_DescriptorProto, into names: inout [String]
  ) {
    for child in message.nestedType where !child.options.mapEntry {
      names.append(child.name)
      collectNestedNames(child, into: &names)
    }
  }

  static func matches(of pattern: String, in text: String) -> [String] {
    let regex = try! NSRegularExpression(pattern: pattern)
    let range = NSRange(text.startIndex..., in: text)
    return regex.matches(in: text, range: range).compactMap { match in
      Range(match.range(at: 1), in: text).map { String(text[$0]) }
    }
  }

  static func describeDifference(
    committed: Google_Protobuf_FileDescriptorSet, current: Google_Protobuf_FileDescriptorSet
  ) -> String {
    let old = Dictionary(
      committed.file.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    let new = Dictionary(
      current.file.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    var lines: [String] = []
    for name in Set(old.keys).union(new.keys).sorted() {
      switch (old[name], new[name]) {
      case (nil, _): lines.append("  \(name): not in proto/generated.binpb")
      case (_, nil): lines.append("  \(name): in proto/generated.binpb but no longer under proto/")
      case (let a?, let b?) where a != b: lines.append("  \(name): changed")
      default: break
      }
    }
    if lines.isEmpty {
      lines.append("  same files, different order: \(current.file.map(\.name))")
    }
    return lines.joined(separator: "\n")
  }
}
