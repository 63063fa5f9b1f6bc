import Foundation
import SwiftProtobuf
import Testing

/// Paths in the repository, found from this file's location (Tests/TesseraProtoTests/).
enum Repo {
  static let root = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // TesseraProtoTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()

  static let protoDir = root.appendingPathComponent("proto")
  static let generatedSwiftDir = root.appendingPathComponent("Sources/TesseraProto")
  static let vectorsDir = root.appendingPathComponent("Tests/ProtoVectors")
  static let committedDescriptorSet = protoDir.appendingPathComponent("generated.binpb")
  static let baselineDescriptorSet = protoDir.appendingPathComponent("baseline.binpb")

  /// Every `.proto` under `proto/`, relative to it and sorted, as `scripts/generate-proto.sh`
  /// passes them to protoc (`find . -name '*.proto' | sed 's|^\./||' | sort`).
  static func protoFiles(in dir: URL = protoDir) throws -> [String] {
    let base = dir.standardizedFileURL.path
    guard let walker = FileManager.default.enumerator(atPath: base) else {
      throw ProtoTestError("cannot list \(base)")
    }
    var files: [String] = []
    while let relative = walker.nextObject() as? String {
      if relative.hasSuffix(".proto") { files.append(relative) }
    }
    return files.sorted()
  }

  static func descriptorSet(at url: URL) throws -> Google_Protobuf_FileDescriptorSet {
    try Google_Protobuf_FileDescriptorSet(serializedBytes: Data(contentsOf: url))
  }
}

struct ProtoTestError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

/// The protobuf compiler, if installed. Tests that need it use `.enabled(if: Protoc.isInstalled)`
/// so that a machine without it reports them as skipped instead of silently passing.
enum Protoc {
  static let path: String? = {
    let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in searchPath.split(separator: ":") where !dir.isEmpty {
      let candidate = "\(dir)/protoc"
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
  }()

  static let skipReason: Comment = "protoc not installed (run scripts/install-deps.sh)"

  static var isInstalled: Bool {
    if path == nil { print("skipping: protoc not installed (run scripts/install-deps.sh)") }
    return path != nil
  }

  /// Runs `protoc -I proto --include_imports --include_source_info --descriptor_set_out=<tmp> <all .proto files>`
  /// from the repository root, exactly as `scripts/generate-proto.sh` does, and decodes the result.
  /// `root` is another directory with a `proto/` inside (for tests on edited copies).
  static func currentDescriptorSet(root: URL = Repo.root) throws
    -> Google_Protobuf_FileDescriptorSet
  {
    guard let path else {
      throw ProtoTestError("protoc not installed (run scripts/install-deps.sh)")
    }
    let out = FileManager.default.temporaryDirectory
      .appendingPathComponent("tessera-proto-\(UUID().uuidString).binpb")
    defer { try? FileManager.default.removeItem(at: out) }

    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.currentDirectoryURL = root
    process.arguments =
      [
        "-I", "proto", "--include_imports", "--include_source_info",
        "--descriptor_set_out=\(out.path)",
      ]
      + (try Repo.protoFiles(in: root.appendingPathComponent("proto")))
    let stderr = Pipe()
    process.standardError = stderr
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let message = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw ProtoTestError(
        "protoc exited with \(process.terminationStatus): \(String(decoding: message, as: UTF8.self))"
      )
    }
    return try Repo.descriptorSet(at: out)
  }
}

/// A copy of the repository's `proto/` in a temporary directory, to edit without touching the
/// real one. Removed when the closure returns.
func withProtoCopy<T>(
  edit: (URL) throws -> Void, _ body: (URL) throws -> T
) throws -> T {
  let root = FileManager.default.temporaryDirectory
    .appendingPathComponent("tessera-proto-copy-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(at: root) }
  try FileManager.default.copyItem(at: Repo.protoDir, to: root.appendingPathComponent("proto"))
  try edit(root.appendingPathComponent("proto"))
  return try body(root)
}

/// Replaces `old` (which must occur exactly once) by `new` in `proto/<path>`.
func replaceInProto(_ protoDir: URL, _ path: String, _ old: String, _ new: String) throws {
  let url = protoDir.appendingPathComponent(path)
  let text = try String(contentsOf: url, encoding: .utf8)
  guard text.components(separatedBy: old).count == 2 else {
    throw ProtoTestError("\(path): expected exactly one occurrence of \(old)")
  }
  try text.replacingOccurrences(of: old, with: new).write(
    to: url, atomically: true, encoding: .utf8)
}
