import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// Prometheus metrics of one daemon: every swift-metrics metric the process
/// records, served as text on `GET /metrics` by a small HTTP/1.1 listener.
public enum DaemonMetrics {
  /// The process-wide registry; ``bootstrap()`` makes swift-metrics record into it.
  public static let registry = PrometheusCollectorRegistry()

  /// Routes swift-metrics into ``registry``. Call once, early in `main`.
  public static func bootstrap() {
    MetricsSystem.bootstrap(
      HelpfulPrometheusFactory(base: PrometheusMetricsFactory(registry: registry)))
  }
}

/// Serves ``DaemonMetrics/registry`` on `GET /metrics` until a graceful shutdown.
public struct MetricsServer: Service {
  public let host: String
  public let port: Int
  private let logger: Logger
  private let portMayBeTaken: Bool

  /// - Parameters:
  ///   - address: `HOST:PORT`, e.g. `127.0.0.1:9101`.
  ///   - portMayBeTaken: a default address: when another process (another node
  ///     on this machine) holds the port, log a warning and serve no metrics
  ///     instead of failing the daemon.
  public init(address: String, logger: Logger, portMayBeTaken: Bool = false) throws {
    self.portMayBeTaken = portMayBeTaken
    guard let colon = address.lastIndex(of: ":"),
      let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port)
    else {
      throw MetricsAddressError(address: address)
    }
    var host = String(address[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    self.host = host.isEmpty ? "127.0.0.1" : host
    self.port = port
    self.logger = logger
  }

  public func run() async throws {
    let channel: any Channel
    do {
      channel = try await bind()
    } catch  where portMayBeTaken {
      logger.warning(
        "metrics not served: \(host):\(port) is taken (give --metrics-address)",
        metadata: ["error": "\(error)"])
      try? await gracefulShutdown()
      return
    }
    logger.info(
      "serving metrics",
      metadata: ["address": "http://\(host):\(channel.localAddress?.port ?? port)/metrics"])
    await withGracefulShutdownHandler {
      try? await channel.closeFuture.get()
    } onGracefulShutdown: {
      channel.close(promise: nil)
    }
  }

  private func bind() async throws -> any Channel {
    try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.pipeline.configureHTTPServerPipeline().flatMap {
          channel.pipeline.addHandler(MetricsHTTPHandler())
        }
      }
      .bind(host: host, port: port).get()
  }
}

public struct MetricsAddressError: Error, CustomStringConvertible {
  public let address: String
  public var description: String { "metrics address \(address) is not HOST:PORT" }
}

/// Answers `GET /metrics` with the registry's text format; anything else is 404 or 405.
private final class MetricsHTTPHandler: ChannelInboundHandler, @unchecked Sendable {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private var request: HTTPRequestHead?

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      request = head
    case .body:
      break
    case .end:
      guard let head = request else { return }
      request = nil
      let (status, body): (HTTPResponseStatus, [UInt8]) =
        switch (head.method, head.uri.split(separator: "?").first) {
        case (.GET, "/metrics"): (.ok, DaemonMetrics.registry.emitToBuffer())
        case (_, "/metrics"): (.methodNotAllowed, Array("only GET\n".utf8))
        default: (.notFound, Array("metrics are at /metrics\n".utf8))
        }
      var headers = HTTPHeaders()
      headers.add(
        name: "Content-Type",
        value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
      headers.add(name: "Content-Length", value: String(body.count))
      headers.add(name: "Connection", value: head.isKeepAlive ? "keep-alive" : "close")
      context.write(
        wrapOutboundOut(
          .head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
        promise: nil)
      context.write(
        wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))),
        promise: nil)
      let keepAlive = head.isKeepAlive
      let channel = context.channel
      context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
        if !keepAlive { channel.close(promise: nil) }
      }
    }
  }
}

extension LoopService {
  /// Runs `sample` now and then every `interval`: for gauges read from state
  /// that has no change events (sizes, revisions, kernel counters).
  public static func sampling(
    every interval: Duration = .seconds(5), _ sample: @escaping @Sendable () async -> Void
  ) -> LoopService {
    LoopService {
      while true {
        await sample()
        try await Task.sleep(for: interval)
      }
    }
  }
}
