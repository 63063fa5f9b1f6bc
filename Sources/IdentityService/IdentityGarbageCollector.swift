import Logging
import ServiceLifecycle
import TesseraCore
import TesseraRuntime

/// Deletes identities that nobody has referenced for the allocator's grace
/// period, one round every `interval`, for as long as the daemon runs.
///
/// A failed round (the store unreachable) is logged and the next round tries
/// again: an identity kept a little longer costs nothing, one deleted while
/// still held would change a workload's identity.
public struct IdentityGarbageCollector: Service {
  public let allocator: IdentityAllocator
  /// Time between rounds; the first round runs one interval after start.
  public let interval: Duration
  /// The name its rounds are recorded under in `tessera status`.
  public static let controllerName = "identity-gc"
  private let registry: ControllerRegistry
  private let logger: Logger

  public init(
    allocator: IdentityAllocator, interval: Duration, registry: ControllerRegistry = .shared,
    logger: Logger = Logger(label: "tessera.identity.gc")
  ) {
    self.allocator = allocator
    self.interval = interval
    self.registry = registry
    self.logger = logger
  }

  public func run() async throws {
    // Listed from the start (no runs yet), not only after the first round.
    _ = Controller(Self.controllerName, registry: registry)
    do {
      try await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
          try await Task.sleep(for: interval)
          await collectOnce()
        }
      }
    } catch is CancellationError {
      // A graceful shutdown ends the loop: a normal end, not a failure of the daemon.
    }
  }

  /// Runs one round now; returns the identities it deleted (none when the round failed).
  @discardableResult
  public func collectOnce() async -> [SecurityIdentity] {
    let controller = Controller(Self.controllerName, registry: registry)
    do {
      let deleted = try await allocator.collectGarbage()
      controller.succeeded()
      return deleted
    } catch {
      controller.failed(error)
      logger.warning("identity garbage collection failed", metadata: ["error": "\(error)"])
      return []
    }
  }
}
