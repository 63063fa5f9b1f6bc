import GRPCCore
import Logging
import ServiceLifecycle
import TesseraRuntime

/// Brings a (re)started endpoint service into service: restores the endpoints
/// saved before the restart, retrying with backoff until the other services
/// answer; only then marks the node serving, so the CNI plugin never sees a
/// half-restored node (nor an endpoint whose DEL it queued meanwhile); then follows the policy service's changes for as long
/// as it runs.
public struct EndpointRestorer<Transport: ClientTransport>: Service {
  private let manager: EndpointManager
  private let health: HealthService
  private let policy: PolicyServiceClient<Transport>
  private let deletionQueue: DeletionQueue?
  private let logger: Logger

  /// - Parameter deletionQueue: DELs queued by the CNI plugin while the
  ///   service was down, run after the restore and before serving.
  public init(
    manager: EndpointManager, health: HealthService, policy: PolicyServiceClient<Transport>,
    deletionQueue: DeletionQueue? = nil, logger: Logger
  ) {
    self.manager = manager
    self.health = health
    self.policy = policy
    self.deletionQueue = deletionQueue
    self.logger = logger
  }

  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown {
        var backoff = Backoff(initial: .milliseconds(50), maximum: .seconds(2))
        while true {
          do {
            _ = try await manager.restore()
            break
          } catch {
            logger.warning("restore waits for the other services", metadata: ["error": "\(error)"])
            try await backoff.sleep()
          }
        }
        // A queued deletion that cannot finish yet (an upstream down) stays for
        // the drainer; it must not keep the node from serving.
        if let deletionQueue { await deletionQueue.drain(manager, logger: logger) }
        // Serving once the ipcache maps every CIDR the rules name: a pod created before
        // would have a CIDR's entries while its addresses still carry `world`.
        try await withThrowingDiscardingTaskGroup { group in
          group.addTask {
            await policy.watchPolicy(logger: logger) { change in
              await manager.policyChanged(change)
            }
          }
          group.addTask { await manager.retryCIDRMappings() }
          await manager.waitUntilCIDRsMapped()
          try Task.checkCancellation()
          health.setServing(true)
        }
      }
    } catch is CancellationError {
      // A graceful shutdown, not a failure.
    }
  }
}
