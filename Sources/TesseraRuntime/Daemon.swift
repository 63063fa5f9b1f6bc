import Foundation
import GRPCCore
import Logging
import Metrics
import ServiceLifecycle

/// Runs one daemon: takes the run-directory lock, writes the pid file, serves
/// its gRPC services plus health and daemon info, and stops gracefully on
/// SIGTERM or SIGINT (reverse start order: the server stops taking RPCs first).
public struct Daemon: Sendable {
  public var service: TesseraService
  public var runDirectory: RunDirectory
  public var logger: Logger
  /// A TCP listener with mutual TLS next to the Unix socket, for callers on other machines.
  public var tcpListener: GRPCServerService.Listener?

  public init(
    service: TesseraService, runDirectory: RunDirectory, logger: Logger,
    tcpListener: GRPCServerService.Listener? = nil
  ) {
    self.service = service
    self.runDirectory = runDirectory
    self.logger = logger
    self.tcpListener = tcpListener
  }

  /// - Parameters:
  ///   - rpcServices: the daemon's own gRPC services.
  ///   - serviceNames: their fully qualified names, for health checks.
  ///   - backgroundServices: clients and loops that must run before the server starts.
  ///   - backend: what `tessera status` shows as the backend.
  ///   - health: the health service; marked serving once the socket is bound, unless `markServing` is false
  ///     (then the daemon sets it when ready).
  public func run(
    rpcServices: [any RegistrableRPCService],
    health: HealthService,
    backgroundServices: [any Service] = [],
    backend: @escaping @Sendable () -> String,
    details: @escaping @Sendable () -> [String: String] = { [:] },
    markServing: Bool = true
  ) async throws {
    try runDirectory.create()
    let lock = try RunDirectoryLock(path: runDirectory.lockPath(for: service))
    let pidPath = runDirectory.pidPath(for: service)
    try "\(ProcessInfo.processInfo.processIdentifier)\n".write(
      toFile: pidPath, atomically: true, encoding: .utf8)
    defer {
      unlink(pidPath)
      withExtendedLifetime(lock) {}
    }

    Gauge(
      label: "tessera_build_info",
      dimensions: [("service", service.rawValue), ("version", TesseraVersion.current)]
    ).record(1)
    let info = DaemonInfoService(
      service: service, runDirectory: runDirectory, backend: backend, details: details)
    let server = GRPCServerService(
      socketPath: runDirectory.socketPath(for: service),
      services: rpcServices + [health, info],
      logger: logger,
      onListening: { if markServing { health.setServing(true) } }
    )
    let remote = tcpListener.map {
      GRPCServerService(listener: $0, services: rpcServices + [health, info], logger: logger)
    }
    let group = ServiceGroup(
      configuration: .init(
        services: backgroundServices.map { .init(service: $0, successTerminationBehavior: .ignore) }
          + [.init(service: server)]
          + (remote.map { [.init(service: $0)] } ?? []),
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger
      )
    )
    logger.info(
      "starting",
      metadata: [
        "service": "\(service.rawValue)", "runDir": "\(runDirectory.path)",
        "version": "\(TesseraVersion.current)",
      ])
    try await group.run()
    logger.info("stopped")
  }
}

/// A `Service` made from a closure, for long-running loops.
public struct LoopService: Service {
  private let body: @Sendable () async throws -> Void
  public init(_ body: @escaping @Sendable () async throws -> Void) { self.body = body }
  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown { try await body() }
    } catch is CancellationError {
      // Cancelled by a graceful shutdown: a normal end, not a failure of the daemon.
    }
  }
}
