import Synchronization
import TesseraRuntime

/// The datapath's recent events, kept in a bounded buffer for `ObserveFlows`
/// (`tessera observe`) and fanned out live to followers (`tessera monitor`).
///
/// Bounded everywhere: the buffer keeps the newest `capacity` events and a
/// follower that falls behind loses its oldest unread events, never the
/// datapath's.
public final class FlowLog: Sendable {
  public struct Statistics: Sendable, Hashable {
    public var supported: Bool
    public var received: UInt64
    public var lostInKernel: UInt64
    public var buffered: Int
    public var capacity: Int
  }

  /// An event with its place in the order of recording, so a follower that
  /// first reads the buffer skips the live events it already saw there.
  struct Recorded: Sendable {
    var sequence: UInt64
    var event: FlowEvent
  }

  private struct State {
    var ring: [Recorded] = []
    /// Index of the oldest event once the ring is full.
    var head = 0
    var received: UInt64 = 0
    var supported = false
  }

  public let capacity: Int
  private let state = Mutex(State())
  private let followers: EventBroadcaster<Recorded>
  private let lostInKernel: @Sendable () -> UInt64

  public init(
    capacity: Int = 4096, followerBuffer: Int = 4096,
    lostInKernel: @escaping @Sendable () -> UInt64 = { 0 }
  ) {
    self.capacity = max(1, capacity)
    self.followers = EventBroadcaster(bufferingPolicy: .bufferingNewest(followerBuffer))
    self.lostInKernel = lostInKernel
  }

  /// Marks the log as fed by a datapath that emits events.
  public func markSupported() { state.withLock { $0.supported = true } }

  public func record(_ events: [FlowEvent]) {
    guard !events.isEmpty else { return }
    let recorded = state.withLock { state in
      events.map { event in
        state.received += 1
        let entry = Recorded(sequence: state.received, event: event)
        if state.ring.count < capacity {
          state.ring.append(entry)
        } else {
          state.ring[state.head] = entry
          state.head = (state.head + 1) % capacity
        }
        return entry
      }
    }
    // Published outside the lock, in order: record is called from one thread.
    for entry in recorded { followers.publish(entry) }
  }

  /// The newest `last` events that match `filter`, oldest first.
  public func recent(last: Int, matching filter: FlowFilter) -> [FlowEvent] {
    snapshot(last: last, matching: filter).events
  }

  private func snapshot(last: Int, matching filter: FlowFilter) -> (
    events: [FlowEvent], sequence: UInt64
  ) {
    let (ordered, sequence) = state.withLock { state in
      (Array(state.ring[state.head...] + state.ring[..<state.head]), state.received)
    }
    guard last > 0 else { return ([], sequence) }
    return (Array(ordered.lazy.map(\.event).filter(filter.matches).suffix(last)), sequence)
  }

  /// Sends the newest `last` matching events, then, when `follow`, live
  /// matching events until the RPC ends (each event once).
  public func observe(
    last: Int, matching filter: FlowFilter, follow: Bool,
    send: (FlowEvent) async throws -> Void
  ) async throws {
    guard follow else {
      for event in recent(last: last, matching: filter) { try await send(event) }
      return
    }
    try await followers.withSubscriptionForRPC { live in
      let (buffered, seen) = snapshot(last: last, matching: filter)
      for event in buffered { try await send(event) }
      for await entry in live where entry.sequence > seen && filter.matches(entry.event) {
        try await send(entry.event)
      }
    }
  }

  public var statistics: Statistics {
    let lost = lostInKernel()
    return state.withLock {
      Statistics(
        supported: $0.supported, received: $0.received, lostInKernel: lost,
        buffered: $0.ring.count, capacity: capacity)
    }
  }

  /// Live events as a plain stream (tests).
  public func subscribe() -> AsyncStream<FlowEvent> {
    let live = followers.subscribe()
    return AsyncStream { continuation in
      let task = Task {
        for await entry in live { continuation.yield(entry.event) }
        continuation.finish()
      }
      continuation.onTermination = { _ in task.cancel() }
    }
  }
}
