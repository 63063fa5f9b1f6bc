import Foundation
import Glibc

/// Persists endpoints as one JSON file each under the state directory, so a
/// restarted endpoint service restores them with the same IDs and identities.
public struct EndpointStateStore: Sendable {
  public let directory: String

  public init(directory: String) throws {
    self.directory = directory
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
  }

  private func path(_ id: UInt64) -> String { "\(directory)/\(id).json" }

  /// Writes atomically: a crash leaves the old or the new file, never half of
  /// one. Not flushed to disk: the state exists so that a restarted endpoint
  /// service (a process crash; the page cache survives it) restores its
  /// endpoints; after a machine crash the runtime recreates every pod through
  /// CNI anyway. An fsync here cost a create up to several milliseconds.
  public func save(_ endpoint: Endpoint) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = try encoder.encode(endpoint)
    let target = path(endpoint.id)
    // Unique per write: a label update and a regeneration may save one endpoint at once.
    let temporary = "\(directory)/.\(endpoint.id).\(UInt64.random(in: 0...UInt64.max)).tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    var failure: Int32 = 0
    data.withUnsafeBytes { bytes in
      var offset = 0
      while offset < bytes.count {
        let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if written < 0 {
          if errno == EINTR { continue }
          failure = errno
          return
        }
        offset += written
      }
    }
    close(fd)
    if failure == 0, rename(temporary, target) != 0 { failure = errno }
    if failure != 0 {
      unlink(temporary)
      throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO)
    }
  }

  public func delete(id: UInt64) {
    try? FileManager.default.removeItem(atPath: path(id))
  }

  /// Every saved endpoint. A file that cannot be decoded (a write a power
  /// loss cut short: state is not flushed) is renamed `<name>.unreadable`
  /// and reported instead of stopping the restore of all the others.
  public func loadAll() throws -> (endpoints: [Endpoint], unreadable: [String]) {
    let all = try FileManager.default.contentsOfDirectory(atPath: directory)
    for leftover in all where leftover.hasPrefix(".") && leftover.hasSuffix(".tmp") {
      try? FileManager.default.removeItem(atPath: "\(directory)/\(leftover)")  // a write cut short by a crash
    }
    let decoder = JSONDecoder()
    var endpoints: [Endpoint] = []
    var unreadable: [String] = []
    for name in all where name.hasSuffix(".json") && !name.hasPrefix(".") {
      let path = "\(directory)/\(name)"
      if let endpoint = try? decoder.decode(
        Endpoint.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
      {
        endpoints.append(endpoint)
      } else {
        unreadable.append(name)
        _ = rename(path, path + ".unreadable")
      }
    }
    return (endpoints.sorted { $0.id < $1.id }, unreadable)
  }
}
