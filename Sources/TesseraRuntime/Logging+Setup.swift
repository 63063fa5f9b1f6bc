import Foundation
import Logging

/// How daemons write logs.
public enum LogFormat: String, Sendable, CaseIterable {
  case plain, json
}

extension LoggingSystem {
  /// Installs the process-wide log handler once, at startup.
  public static func bootstrapTessera(format: LogFormat, level: Logger.Level) {
    bootstrap { label in
      var handler: any LogHandler
      switch format {
      case .plain:
        handler = StreamLogHandler.standardError(label: label)
      case .json:
        handler = JSONLogHandler(label: label)
      }
      handler.logLevel = level
      return handler
    }
  }
}

/// One JSON object per line on stderr: `time`, `level`, `logger`, `message` and metadata.
public struct JSONLogHandler: LogHandler {
  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level = .info
  public let label: String

  public init(label: String) { self.label = label }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var object: [String: String] = [
      "time": Date().formatted(
        .iso8601.year().month().day().time(includingFractionalSeconds: true)),
      "level": event.level.rawValue,
      "logger": label,
      "message": event.message.description,
    ]
    for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
      object[key] = value.description
    }
    guard var line = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    else { return }
    line.append(0x0A)
    FileHandle.standardError.write(line)
  }
}
