import Logging
import ServiceLifecycle
import Synchronization
import TesseraCore

/// Retires, then removes, the identities of CIDRs no rule names any more (docs/architecture.md
/// §4, CIDR peers). The retirement is an event of its own after the rule change that
/// stopped naming them: nodes unmap such a prefix only after realising that change, when
/// its identity and the next enclosing one's get the same verdicts. The identity leaves the
/// SelectorCache only `removalGrace` later, so every policy a node computes before it has
/// unmapped the prefix still holds the identity's entries.
public final class CIDRIdentityCollector: Service, Sendable {
  private let engine: PolicyEngine
  private let events: PolicyEvents
  private let interval: Duration
  private let removalGrace: Duration
  private let logger: Logger
  /// When each identity was retired (only the collector's own task touches it).
  private let retiredAt = Mutex<[NumericIdentity: ContinuousClock.Instant]>([:])

  public init(
    engine: PolicyEngine, events: PolicyEvents, interval: Duration = .seconds(1),
    removalGrace: Duration = .seconds(600), logger: Logger
  ) {
    self.engine = engine
    self.events = events
    self.interval = interval
    self.removalGrace = removalGrace
    self.logger = logger
  }

  /// One round: removes the identities retired at least `removalGrace` ago in an earlier
  /// round, then retires the ones no rule names any more, each with its event.
  public func collect() {
    let now = ContinuousClock.now
    let due = retiredAt.withLock { retired in
      let due = retired.filter { now - $0.value >= removalGrace }.keys
      for id in due { retired[id] = nil }
      return Set(due)
    }
    if !due.isEmpty {
      events.serialized {
        let result = engine.removeRetiredCIDRIdentities(due)
        guard !result.identities.deleted.isEmpty else { return }
        events.publish(
          revision: engine.revision, affected: result.affected,
          deleted: result.identities.deleted)
        logger.info(
          "retired CIDR identities removed",
          metadata: ["identities": "\(result.identities.deleted.map(\.rawValue))"])
      }
    }
    guard engine.hasUnnamedCIDRIdentities else { return }
    let retired = events.serialized {
      let retired = engine.retireUnnamedCIDRIdentities()
      if !retired.isEmpty {
        events.publish(
          .with {
            $0.revision = engine.revision
            $0.affectedIdentities = []
            $0.retiredCidrIdentities = retired.map(\.rawValue)
          })
      }
      return retired
    }
    guard !retired.isEmpty else { return }
    retiredAt.withLock { for id in retired { $0[id] = now } }
    logger.info(
      "identities of CIDRs no rule names retired",
      metadata: ["identities": "\(retired.map(\.rawValue))"])
  }

  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown {
        while true {
          try await Task.sleep(for: self.interval)
          self.collect()
        }
      }
    } catch is CancellationError {
      // A graceful shutdown, not a failure.
    }
  }
}
