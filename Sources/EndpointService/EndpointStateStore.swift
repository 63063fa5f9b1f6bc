import Foundation

/// Persists endpoints as one JSON file each under the state directory, so a
/// restarted endpoint service restores them with the same IDs and identities.
public struct EndpointStateStore: Sendable {
  public let directory: String

  public init(directory: String) throws {
    self.directory = directory
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
  }

  private func path(_ id: UInt64) -> String { "\(directory)/\(id).json" }

  /// Writes atomically: a crash leaves the old or the new file, never half of one.
  public func save(_ endpoint: Endpoint) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    try encoder.encode(endpoint).write(to: URL(fileURLWithPath: path(endpoint.id)), options: .atomic)
  }

  public func delete(id: UInt64) {
    try? FileManager.default.removeItem(atPath: path(id))
  }

  public func loadAll() throws -> [Endpoint] {
    let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }
    let decoder = JSONDecoder()
    return try names.map { name in
      try decoder.decode(Endpoint.self, from: Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)")))
    }.sorted { $0.id < $1.id }
  }
}
