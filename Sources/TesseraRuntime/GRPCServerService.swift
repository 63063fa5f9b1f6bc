#if canImport(Glibc)
import Glibc
#endif
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle

/// Serves gRPC services on a Unix domain socket as a swift-service-lifecycle `Service`.
///
/// Graceful shutdown stops accepting new RPCs and lets in-flight ones finish.
/// The socket is made mode 0660 once bound, so only root and the group can talk
/// to the daemon.
public struct GRPCServerService: Service {
  private let server: GRPCServer<HTTP2ServerTransport.Posix>
  private let transport: HTTP2ServerTransport.Posix
  private let socketPath: String
  private let logger: Logger
  private let onListening: @Sendable () -> Void

  public init(
    socketPath: String,
    services: [any RegistrableRPCService],
    logger: Logger,
    onListening: @escaping @Sendable () -> Void = {}
  ) {
    self.socketPath = socketPath
    self.logger = logger
    self.onListening = onListening
    self.transport = HTTP2ServerTransport.Posix(
      address: .unixDomainSocket(path: socketPath),
      transportSecurity: .plaintext,
      config: .defaults { config in
        // Generous enough for bulk policy imports, small enough to reject garbage early.
        config.rpc.maxRequestPayloadSize = 8 * 1024 * 1024
      }
    )
    self.server = GRPCServer(transport: transport, services: services)
  }

  /// How long a graceful shutdown waits for in-flight RPCs before cancelling
  /// them: watch streams never end by themselves.
  public static let drainTimeout: Duration = .seconds(2)

  public func run() async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await server.serve() }
      if (try? await transport.listeningAddress) != nil {
        chmod(socketPath, 0o660)
        logger.info("serving", metadata: ["socket": "\(socketPath)"])
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

/// A gRPC client connection to another daemon's socket, run as a `Service`.
public struct GRPCClientService: Service {
  public let client: GRPCClient<HTTP2ClientTransport.Posix>
  public let socketPath: String

  public init(socketPath: String) throws {
    self.socketPath = socketPath
    self.client = GRPCClient(
      transport: try .http2NIOPosix(
        target: .unixDomainSocket(path: socketPath),
        transportSecurity: .plaintext,
        config: .defaults { config in
          // A restarted peer should be reconnected to quickly.
          config.backoff.initial = .milliseconds(20)
          config.backoff.max = .milliseconds(500)
        }
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
