import Logging
import ServiceLifecycle

/// Removes the identities of CIDRs no rule names any more, each time in an event of its
/// own after the rule change that stopped naming them (docs/architecture.md §4, CIDR
/// peers): nodes unmap such a prefix only after realising that change, when its identity
/// and the next enclosing one's get the same verdicts.
public struct CIDRIdentityCollector: Service {
  private let engine: PolicyEngine
  private let events: PolicyEvents
  private let interval: Duration
  private let logger: Logger

  public init(
    engine: PolicyEngine, events: PolicyEvents, interval: Duration = .seconds(1),
    logger: Logger
  ) {
    self.engine = engine
    self.events = events
    self.interval = interval
    self.logger = logger
  }

  /// One collection: the removal and its event, if any identity is due.
  @discardableResult
  public func collect() -> IdentityChanges {
    guard engine.hasUnnamedCIDRIdentities else { return .none }
    return events.serialized {
      let result = engine.collectUnnamedCIDRIdentities()
      if !result.identities.deleted.isEmpty {
        events.publish(
          revision: engine.revision, affected: result.affected,
          deleted: result.identities.deleted)
        logger.info(
          "identities of CIDRs no rule names removed",
          metadata: ["identities": "\(result.identities.deleted.map(\.rawValue))"])
      }
      return result.identities
    }
  }

  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown {
        while true {
          try await Task.sleep(for: interval)
          collect()
        }
      }
    } catch is CancellationError {
      // A graceful shutdown, not a failure.
    }
  }
}
