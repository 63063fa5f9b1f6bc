import ArgumentParser
import Foundation
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

  @Option(
    name: .long,
    help:
      "Serve Prometheus metrics on HOST:PORT at /metrics, or 'off'. Default: 127.0.0.1 with port 9970 (identity), 9971 (policy), 9972 (datapath) or 9973 (endpoint); a default port already taken only logs a warning."
  )
  public var metricsAddress: String?

  @Option(
    name: .long,
    help:
      "Also serve on HOST:PORT over TCP with mutual TLS (needs the --tls-* files); the Unix socket stays."
  )
  public var listen: String?

  @Option(
    name: .long,
    help:
      "PEM certificate this process presents on TCP, as server and as client; its SAN DNS name is its node (or service) name."
  )
  public var tlsCertFile: String?

  @Option(name: .long, help: "PEM private key of --tls-cert-file.")
  public var tlsKeyFile: String?

  @Option(
    name: .long,
    help: "PEM bundle of the certificate authorities peers' certificates must chain to.")
  public var tlsCaFile: String?

  public init() {}

  public static var defaultNodeName: String {
    var buffer = [CChar](repeating: 0, count: 256)
    gethostname(&buffer, buffer.count)
    let name = String(
      decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return name.isEmpty ? "node" : name
  }

  public mutating func validate() throws {
    guard LogFormat(rawValue: logFormat) != nil else {
      throw ValidationError("--log-format must be plain or json, not '\(logFormat)'")
    }
    guard Logger.Level(rawValue: logLevel) != nil else {
      throw ValidationError(
        "--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))"
      )
    }
    guard !nodeName.isEmpty, nodeName.utf8.count <= 253 else {
      throw ValidationError("--node-name must be 1 to 253 bytes")
    }
    let tlsFiles = [tlsCertFile, tlsKeyFile, tlsCaFile]
    guard tlsFiles.allSatisfy({ $0 == nil }) || tlsFiles.allSatisfy({ $0 != nil }) else {
      throw ValidationError("--tls-cert-file, --tls-key-file and --tls-ca-file go together")
    }
    for file in tlsFiles.compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: file)
    {
      throw ValidationError("cannot read TLS file \(file)")
    }
    if listen != nil {
      guard mutualTLS != nil else {
        throw ValidationError(
          "--listen needs --tls-cert-file, --tls-key-file and --tls-ca-file: TCP is never plaintext"
        )
      }
      do { _ = try tcpListener() } catch { throw ValidationError("--listen \(error)") }
    }
    if let metricsAddress, metricsAddress != "off" {
      do { _ = try MetricsServer(address: metricsAddress, logger: Logger(label: "validate")) } catch
      { throw ValidationError("--metrics-address: \(error)") }
    }
  }

  public var runDirectory: RunDirectory { RunDirectory(path: runDir) }

  /// The TLS identity and trust roots from the `--tls-*` flags, when given.
  public var mutualTLS: MutualTLS? {
    guard let tlsCertFile, let tlsKeyFile, let tlsCaFile else { return nil }
    return MutualTLS(certificateFile: tlsCertFile, keyFile: tlsKeyFile, trustRootsFile: tlsCaFile)
  }

  /// The TCP listener of `--listen`, next to the Unix socket.
  public func tcpListener() throws(ServiceAddressError) -> GRPCServerService.Listener? {
    guard let listen else { return nil }
    guard case .addresses(let pairs) = try ServiceAddress(parsing: listen), pairs.count == 1,
      let tls = mutualTLS
    else {
      throw ServiceAddressError(text: listen, problem: "not one HOST:PORT with the --tls-* files")
    }
    return .tcp(host: pairs[0].host, port: pairs[0].port, tls: tls)
  }

  /// Where each daemon serves metrics when `--metrics-address` is not given.
  public static func defaultMetricsPort(_ service: TesseraService) -> Int {
    switch service {
    case .identity: 9970
    case .policy: 9971
    case .datapath: 9972
    case .endpoint: 9973
    }
  }

  /// The metrics listener (on by default, see `--metrics-address`), and then a
  /// loop that samples the gauges read from whole tables: every endpoint's
  /// kernel counters, every identity. With `--metrics-address off` the node
  /// does not pay for those reads (counters and histograms are recorded either way).
  public func metricsServices(
    for service: TesseraService, logger: Logger, sampleEvery interval: Duration = .seconds(5),
    sample: (@Sendable () async -> Void)? = nil
  ) throws -> [any Service] {
    let server: MetricsServer
    switch metricsAddress {
    case "off": return []
    case let address?: server = try MetricsServer(address: address, logger: logger)
    case nil:
      server = try MetricsServer(
        address: "127.0.0.1:\(Self.defaultMetricsPort(service))", logger: logger,
        portMayBeTaken: true)
    }
    guard let sample else { return [server] }
    return [server, LoopService.sampling(every: interval, sample)]
  }

  /// Sets up logging and metrics from the flags.
  public func bootstrapLogging() {
    LoggingSystem.bootstrapTessera(
      format: LogFormat(rawValue: logFormat) ?? .plain,
      level: Logger.Level(rawValue: logLevel) ?? .info)
    DaemonMetrics.bootstrap()
  }
}

#if canImport(Glibc)
  import Glibc
#endif
