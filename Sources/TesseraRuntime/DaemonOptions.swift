import ArgumentParser
import Logging
import ServiceLifecycle

/// Flags every daemon takes.
public struct DaemonOptions: ParsableArguments, Sendable {
  @Option(name: .long, help: "Directory for sockets, locks and pid files (env TESSERA_RUN_DIR).")
  public var runDir: String = RunDirectory.fromEnvironment.path

  @Option(name: .long, help: "Directory for persistent state.")
  public var stateDir: String = "/var/lib/tessera"

  @Option(name: .long, help: "Log format: plain or json.")
  public var logFormat: String = "plain"

  @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
  public var logLevel: String = "info"

  @Option(name: .long, help: "This node's name (identity references are per node).")
  public var nodeName: String = DaemonOptions.defaultNodeName

  @Option(name: .long, help: "Serve Prometheus metrics on HOST:PORT at /metrics (off unless given).")
  public var metricsAddress: String?

  public init() {}

  public static var defaultNodeName: String {
    var buffer = [CChar](repeating: 0, count: 256)
    gethostname(&buffer, buffer.count)
    let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return name.isEmpty ? "node" : name
  }

  public mutating func validate() throws {
    guard LogFormat(rawValue: logFormat) != nil else {
      throw ValidationError("--log-format must be plain or json, not '\(logFormat)'")
    }
    guard Logger.Level(rawValue: logLevel) != nil else {
      throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    guard !nodeName.isEmpty, nodeName.utf8.count <= 253 else {
      throw ValidationError("--node-name must be 1 to 253 bytes")
    }
    if let metricsAddress {
      do { _ = try MetricsServer(address: metricsAddress, logger: Logger(label: "validate")) } catch { throw ValidationError("--metrics-address: \(error)") }
    }
  }

  public var runDirectory: RunDirectory { RunDirectory(path: runDir) }

  /// The metrics listener when `--metrics-address` is given (counters and
  /// histograms are recorded either way), and then a loop that samples the
  /// gauges read from whole tables: every endpoint's kernel counters, every
  /// identity. A node that serves no metrics does not pay for those reads,
  /// which would otherwise compete with creates for locks and CPU.
  public func metricsServices(
    logger: Logger, sampleEvery interval: Duration = .seconds(5), sample: (@Sendable () async -> Void)? = nil
  ) throws -> [any Service] {
    guard let metricsAddress else { return [] }
    let server: [any Service] = [try MetricsServer(address: metricsAddress, logger: logger)]
    guard let sample else { return server }
    return server + [LoopService.sampling(every: interval, sample)]
  }

  /// Sets up logging and metrics from the flags.
  public func bootstrapLogging() {
    LoggingSystem.bootstrapTessera(format: LogFormat(rawValue: logFormat) ?? .plain, level: Logger.Level(rawValue: logLevel) ?? .info)
    DaemonMetrics.bootstrap()
  }
}

#if canImport(Glibc)
import Glibc
#endif
