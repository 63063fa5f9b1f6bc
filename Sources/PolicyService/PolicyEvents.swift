import Foundation
public import GRPCCore
import Synchronization
public import TesseraCore
public import TesseraProto

/// The policy service's event log: fans policy changes out to `WatchPolicy`
/// streams, numbering every event so a subscriber can never miss one unnoticed.
///
/// Every published event gets the next sequence number. A subscription starts
/// at the current sequence and then sees every later event in order, with no
/// gaps. A subscriber whose buffer is full (it fell `bufferSize` events
/// behind) is not silently skipped ahead: its subscription ends marked
/// ``Subscription/lagged``, and the RPC ends with RESOURCE_EXHAUSTED so the
/// client resynchronises from a full snapshot.
public final class PolicyEvents: Sendable {
  public typealias Event = Tessera_Policy_V1_PolicyEvent

  /// How many undelivered events a subscriber may have before it is cut off.
  public static let defaultBufferSize = 10_000

  /// One subscriber's stream and what it started from.
  public final class Subscription: Sendable {
    /// Events after ``sequence``, in order; ends when the subscriber is cut off or cancelled.
    public let events: AsyncStream<Event>
    /// The sequence current when the subscription started.
    public let sequence: UInt64
    fileprivate let laggedFlag = Atomic<Bool>(false)

    /// Whether the stream ended because the subscriber fell too far behind.
    public var lagged: Bool { laggedFlag.load(ordering: .acquiring) }

    fileprivate init(events: AsyncStream<Event>, sequence: UInt64) {
      self.events = events
      self.sequence = sequence
    }
  }

  private struct Subscriber {
    var continuation: AsyncStream<Event>.Continuation
    var subscription: Subscription
  }

  private struct State {
    var sequence: UInt64 = 0
    var subscribers: [Int: Subscriber] = [:]
    var next = 0
  }

  /// Held while a change is applied and its event numbered (``serialized(_:)``).
  private let publication = Mutex(())

  /// Changes on every start, so subscribers and the identity service notice a restart.
  public let instanceID: String
  public let bufferSize: Int
  private let state = Mutex(State())

  public init(
    bufferSize: Int = PolicyEvents.defaultBufferSize, instanceID: String = UUID().uuidString
  ) {
    self.bufferSize = max(1, bufferSize)
    self.instanceID = instanceID
  }

  /// The sequence of the last published event (0 before the first).
  public var sequence: UInt64 { state.withLock { $0.sequence } }

  /// Number of live subscriptions.
  public var subscriberCount: Int { state.withLock { $0.subscribers.count } }

  /// Publishes a change unless it affects no identity and moves none in or out
  /// of the SelectorCache.
  ///
  /// Callers publish after the change is made, so a caller that reads
  /// ``sequence`` after the change's call returned gets a number at least as
  /// high as the change's event.
  ///
  /// - Parameters:
  ///   - added: identities the change brought into the SelectorCache.
  ///   - deleted: identities it removed from the SelectorCache.
  public func publish(
    revision: UInt64, affected: AffectedIdentities, added: [SecurityIdentity] = [],
    deleted: [NumericIdentity] = []
  ) {
    if case .some(let identities) = affected, identities.isEmpty, added.isEmpty, deleted.isEmpty {
      return
    }
    publish(
      .with {
        $0.revision = revision
        switch affected {
        case .all: $0.all = true
        case .some(let identities): $0.affectedIdentities = identities.map(\.rawValue).sorted()
        }
        $0.addedIdentities = added.sorted { $0.id < $1.id }.map(
          Tessera_Policy_V1_IdentityArrival.init)
        $0.deletedIdentities = deleted.map(\.rawValue).sorted()
      })
  }

  /// Runs `body`, which applies a change and publishes its event, while no other such body
  /// runs: events are numbered in the order of the changes they describe (a node applies a
  /// CIDR's arrival and removal in that order), and a reader of the sequence and the state
  /// (GetEventSequence) sees both at one point.
  public func serialized<Result: Sendable, Failure: Error>(
    _ body: () throws(Failure) -> Result
  ) throws(Failure) -> Result {
    try publication.withLock { (_) throws(Failure) -> Result in try body() }
  }

  /// Publishes an event with the next sequence number.
  public func publish(_ event: Event) {
    // Numbering and delivery under one lock keep every stream in sequence order.
    let cutOff: [AsyncStream<Event>.Continuation] = state.withLock { state in
      state.sequence += 1
      var numbered = event
      numbered.sequence = state.sequence
      var lagging: [Int] = []
      for (id, subscriber) in state.subscribers {
        switch subscriber.continuation.yield(numbered) {
        case .enqueued: break
        case .dropped, .terminated:
          subscriber.subscription.laggedFlag.store(true, ordering: .releasing)
          lagging.append(id)
        @unknown default:
          subscriber.subscription.laggedFlag.store(true, ordering: .releasing)
          lagging.append(id)
        }
      }
      return lagging.compactMap { state.subscribers.removeValue(forKey: $0)?.continuation }
    }
    // The buffered events before the gap are still delivered, then the stream ends.
    for continuation in cutOff { continuation.finish() }
  }

  /// Starts a subscription at the current sequence.
  public func subscribe() -> Subscription {
    subscribeWithContinuation().subscription
  }

  /// Runs `body` with a subscription that ends when gRPC cancels the current
  /// server RPC (gRPC signals that through the RPC's cancellation handle, not
  /// by cancelling the handler's task).
  public func withSubscriptionForRPC<T: Sendable>(_ body: (Subscription) async throws -> T)
    async throws -> T
  {
    try await withSubscriptionForRPC(reading: {}) { subscription, _ in try await body(subscription)
    }
  }

  /// ``withSubscriptionForRPC(_:)`` with `read` run at the subscription's sequence: under
  /// the publication lock, so what it reads is the state every later event starts from.
  public func withSubscriptionForRPC<Snapshot: Sendable, T: Sendable>(
    reading read: () -> Snapshot, _ body: (Subscription, Snapshot) async throws -> T
  ) async throws -> T {
    let (subscription, continuation, snapshot) = serialized {
      let (subscription, continuation) = subscribeWithContinuation()
      return (subscription, continuation, read())
    }
    return try await withRPCCancellationHandler {
      try await body(subscription, snapshot)
    } onCancelRPC: {
      continuation.finish()
    }
  }

  private func subscribeWithContinuation() -> (
    subscription: Subscription, continuation: AsyncStream<Event>.Continuation
  ) {
    // Oldest-first buffering: when full, the newest event is refused, so what
    // the subscriber still receives is a gap-free prefix.
    let (stream, continuation) = AsyncStream<Event>.makeStream(
      bufferingPolicy: .bufferingOldest(bufferSize))
    let (id, subscription) = state.withLock { state in
      defer { state.next += 1 }
      let subscription = Subscription(events: stream, sequence: state.sequence)
      state.subscribers[state.next] = Subscriber(
        continuation: continuation, subscription: subscription)
      return (state.next, subscription)
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
    }
    return (subscription, continuation)
  }
}

/// Whether the policy service's SelectorCache holds every identity yet: until
/// the first sync with the identity service, a computed policy could miss peers.
public final class PolicyReadiness: Sendable {
  private let synced: Atomic<Bool>

  public init(synced: Bool) { self.synced = Atomic(synced) }

  public var isSynced: Bool { synced.load(ordering: .acquiring) }

  public func markSynced() { synced.store(true, ordering: .releasing) }

  /// Throws UNAVAILABLE until the first identity sync finished.
  public func requireSynced() throws(RPCError) {
    guard isSynced else {
      throw RPCError(
        code: .unavailable,
        message:
          "identities not synchronised yet: the policy service has not finished its first sync with the identity service"
      )
    }
  }
}

extension Tessera_Policy_V1_IdentityArrival {
  /// The arrival of `identity`: its number, labels digest and, for a CIDR identity, prefix.
  public init(_ identity: SecurityIdentity) {
    self.init()
    id = identity.id.rawValue
    labelsDigest = identity.labels.canonicalDigest
    cidr = CIDRIdentity.prefix(of: identity)?.description ?? ""
  }
}
