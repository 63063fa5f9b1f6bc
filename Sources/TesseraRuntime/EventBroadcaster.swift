import Synchronization

/// Fans events out to any number of subscribers, each an `AsyncStream` that
/// ends its subscription when its consumer stops.
///
/// A subscriber sees every event published after it subscribed, in order,
/// up to the buffering policy.
public final class EventBroadcaster<Event: Sendable>: Sendable {
  private struct State {
    var subscribers: [Int: AsyncStream<Event>.Continuation] = [:]
    var next = 0
  }

  private let state = Mutex(State())
  private let bufferingPolicy: AsyncStream<Event>.Continuation.BufferingPolicy

  public init(bufferingPolicy: AsyncStream<Event>.Continuation.BufferingPolicy = .bufferingNewest(10_000)) {
    self.bufferingPolicy = bufferingPolicy
  }

  public func publish(_ event: Event) {
    for subscriber in state.withLock({ Array($0.subscribers.values) }) { subscriber.yield(event) }
  }

  public func subscribe() -> AsyncStream<Event> {
    let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: bufferingPolicy)
    let id = state.withLock { state in
      defer { state.next += 1 }
      state.subscribers[state.next] = continuation
      return state.next
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
    }
    return stream
  }
}
