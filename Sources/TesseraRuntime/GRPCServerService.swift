import GRPCCore
import GRPCNIOTransportCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle

#if canImport(Glibc)
  import Glibc
#endif

/// Serves gRPC services as a swift-service-lifecycle `Service`, on this node's
/// Unix domain socket or on TCP with mutual TLS (``Listener``).
///
/// Graceful shutdown stops accepting new RPCs and lets in-flight ones finish.
/// A Unix socket is made mode 0660 once bound, so only root and the group can
/// talk to the daemon; on TCP only peers with a certificate the trust roots
/// vouch for get through the handshake.
public struct GRPCServerService: Service {
  /// Where the server listens.
  public enum Listener: Sendable, Hashable, CustomStringConvertible {
    case unixSocket(String)
    /// TCP is never plaintext: every peer presents a certificate.
    case tcp(host: String, port: Int, tls: MutualTLS)

    public var description: String {
      switch self {
      case .unixSocket(let path): "unix:\(path)"
      case .tcp(let host, let port, _): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
      }
    }
  }

  private let server: GRPCServer<HTTP2ServerTransport.Posix>
  private let transport: HTTP2ServerTransport.Posix
  private let listener: Listener
  private let logger: Logger
  private let onListening: @Sendable () -> Void

  public init(
    socketPath: String,
    services: [any RegistrableRPCService],
    logger: Logger,
    onListening: @escaping @Sendable () -> Void = {}
  ) {
    self.init(
      listener: .unixSocket(socketPath), services: services, logger: logger,
      onListening: onListening)
  }

  public init(
    listener: Listener,
    services: [any RegistrableRPCService],
    logger: Logger,
    onListening: @escaping @Sendable () -> Void = {}
  ) {
    self.listener = listener
    self.logger = logger
    self.onListening = onListening
    let address: GRPCNIOTransportCore.SocketAddress
    let security: HTTP2ServerTransport.Posix.TransportSecurity
    switch listener {
    case .unixSocket(let path):
      address = .unixDomainSocket(path: path)
      security = .plaintext
    case .tcp(let host, let port, let tls):
      address = host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port)
      security = tls.serverSecurity
    }
    self.transport = HTTP2ServerTransport.Posix(
      address: address,
      transportSecurity: security,
      config: .defaults { config in
        // Generous enough for bulk policy imports, small enough to reject garbage early.
        config.rpc.maxRequestPayloadSize = 8 * 1024 * 1024
      }
    )
    self.server = GRPCServer(
      transport: transport, services: services, interceptors: [ServerMetricsInterceptor()])
  }

  /// How long a graceful shutdown waits for in-flight RPCs before cancelling
  /// them: watch streams never end by themselves.
  public static let drainTimeout: Duration = .seconds(2)

  public func run() async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await server.serve() }
      if (try? await transport.listeningAddress) != nil {
        if case .unixSocket(let path) = listener { chmod(path, 0o660) }
        logger.info("serving", metadata: ["address": "\(listener)"])
        onListening()
      }
      group.addTask {
        // Returns when a graceful shutdown begins (or throws when the task is cancelled).
        try await gracefulShutdown()
        logger.info("graceful shutdown: draining RPCs")
        server.beginGracefulShutdown()
        try await Task.sleep(for: Self.drainTimeout)
        throw DrainTimeout()
      }
      do {
        // The first to finish: serve() after draining, or the drain timeout.
        try await group.next()
      } catch is DrainTimeout {
        logger.info("cancelling RPCs still open after the drain timeout")
      }
      group.cancelAll()
    }
  }

  private struct DrainTimeout: Error {}
}

/// A gRPC client of another Tessera service, run as a `Service`: this node's
/// daemon on its Unix socket, or replicas on TCP with mutual TLS, balanced
/// round-robin. A call that meets UNAVAILABLE is retried (up to 3 attempts in
/// all, on another replica when there is one).
public struct GRPCClientService: Service {
  public let client: GRPCClient<HTTP2ClientTransport.Posix>
  public let address: ServiceAddress

  public init(socketPath: String) throws {
    try self.init(address: .unixSocket(socketPath), tls: nil)
  }

  /// - Throws: ``ServiceAddressError`` for a TCP address without `tls`: Tessera never
  ///   speaks plaintext over the network.
  public init(address: ServiceAddress, tls: MutualTLS?) throws {
    self.address = address
    let security: HTTP2ClientTransport.Posix.TransportSecurity
    if address.isLocal {
      security = .plaintext
    } else if let tls {
      security = tls.clientSecurity
    } else {
      throw ServiceAddressError(
        text: "\(address)",
        problem: "a TCP address needs --tls-cert-file, --tls-key-file and --tls-ca-file")
    }
    let retry = RetryPolicy(
      maxAttempts: 3, initialBackoff: .milliseconds(20), maxBackoff: .milliseconds(200),
      backoffMultiplier: 2,
      retryableStatusCodes: [.unavailable])
    self.client = GRPCClient(
      transport: try .http2NIOPosix(
        target: address.target,
        transportSecurity: security,
        config: .defaults { config in
          // A restarted peer should be reconnected to quickly.
          config.backoff.initial = .milliseconds(20)
          config.backoff.max = .milliseconds(500)
        },
        serviceConfig: ServiceConfig(
          methodConfig: address.isLocal
            ? []
            : [
              MethodConfig(names: [MethodConfig.Name(service: "")], executionPolicy: .retry(retry))
            ],
          loadBalancingConfig: [.roundRobin])
      )
    )
  }

  public func run() async throws {
    try await withGracefulShutdownHandler {
      try await client.runConnections()
    } onGracefulShutdown: {
      client.beginGracefulShutdown()
    }
  }
}

extension CallOptions {
  /// Fails fast when the peer is down (UNAVAILABLE) instead of queueing the RPC.
  public static func failFast(timeout: Duration) -> CallOptions {
    var options = CallOptions.defaults
    options.timeout = timeout
    options.waitForReady = false
    return options
  }
}
