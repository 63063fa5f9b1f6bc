import Logging
import TesseraRuntime

/// A node's session with etcd, as every shared table needs it: take a lease,
/// load a prefix, then keep the lease alive and watch the prefix from the
/// revision the load read at, next to the caller's own loops. When any part
/// fails everything starts again: at once when the lease was lost or the
/// watch fell behind compaction (the load catches up), after a backoff when
/// etcd was unreachable.
public struct EtcdSession: Sendable {
  /// What the session keeps in sync: its prefix, its lease and its loops.
  public struct Participant: Sendable {
    /// Returns the lease the session keeps alive (new or reused); 0 for none.
    public var lease: @Sendable () async throws -> Int64
    /// Loads the prefix for a session on this lease; returns the revision it read at.
    public var load: @Sendable (_ lease: Int64) async throws -> Int64
    /// Applies watched events, in order.
    public var apply: @Sendable (_ events: [EtcdEvent]) async -> Void
    /// Loops that run as long as the session does (publishing, reconciling).
    public var loops: [@Sendable () async throws -> Void]
    /// Called when etcd says the lease is gone, before the session restarts.
    public var leaseLost: @Sendable () -> Void

    public init(
      lease: @escaping @Sendable () async throws -> Int64,
      load: @escaping @Sendable (Int64) async throws -> Int64,
      apply: @escaping @Sendable ([EtcdEvent]) async -> Void,
      loops: [@Sendable () async throws -> Void] = [],
      leaseLost: @escaping @Sendable () -> Void = {}
    ) {
      self.lease = lease
      self.load = load
      self.apply = apply
      self.loops = loops
      self.leaseLost = leaseLost
    }
  }

  public let client: EtcdClient
  /// Key prefix watched (everything under it).
  public let prefix: String
  public let leaseTTLSeconds: Int64
  public let logger: Logger

  public init(client: EtcdClient, prefix: String, leaseTTLSeconds: Int64, logger: Logger) {
    self.client = client
    self.prefix = prefix
    self.leaseTTLSeconds = leaseTTLSeconds
    self.logger = logger
  }

  /// Runs sessions until cancelled.
  public func run(_ participant: Participant) async throws {
    let controller = Controller("etcd-sync \(prefix)")
    var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(2))
    while true {
      try Task.checkCancellation()
      do {
        let lease = try await participant.lease()
        let revision = try await participant.load(lease)
        controller.succeeded()
        backoff.reset()
        try await withThrowingTaskGroup(of: Void.self) { group in
          // Lease 0: the participant's keys are not leased (they outlive any one process).
          if lease != 0 {
            group.addTask {
              try await client.keepAlive(
                lease: lease, interval: .seconds(max(1, leaseTTLSeconds / 3)))
            }
          }
          group.addTask {
            let start = Etcd.key(prefix)
            try await client.watch(
              key: start, rangeEnd: Etcd.prefixEnd(start), fromRevision: revision + 1
            ) { events, _ in
              await participant.apply(events)
            }
          }
          for loop in participant.loops { group.addTask { try await loop() } }
          try await group.next()
          group.cancelAll()
        }
      } catch let error as EtcdError where error.code == .leaseLost {
        logger.warning(
          "etcd lease lost: starting a new session",
          metadata: ["prefix": "\(prefix)", "error": "\(error)"])
        participant.leaseLost()
        controller.failed(error)
      } catch let error as EtcdError where error.code == .compacted {
        logger.info(
          "etcd watch fell behind compaction: reloading",
          metadata: ["prefix": "\(prefix)", "error": "\(error)"])
      } catch is CancellationError where Task.isCancelled {
        throw CancellationError()
      } catch {
        controller.failed(error)
        logger.warning(
          "etcd unreachable, retrying", metadata: ["prefix": "\(prefix)", "error": "\(error)"])
        try await backoff.sleep()
      }
    }
  }
}
