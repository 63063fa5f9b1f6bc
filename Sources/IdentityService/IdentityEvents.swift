import Synchronization
import TesseraCore

/// A change to the set of identities, as watchers see it.
public enum IdentityEvent: Sendable, Equatable {
  case added([SecurityIdentity])
  case deleted([SecurityIdentity])
}

/// Fans identity changes out to `WatchIdentities` streams.
public final class IdentityEvents: Sendable {
  private struct State {
    var subscribers: [Int: AsyncStream<IdentityEvent>.Continuation] = [:]
    var next = 0
  }

  private let state = Mutex(State())

  public init() {}

  public func publish(_ event: IdentityEvent) {
    let subscribers = state.withLock { Array($0.subscribers.values) }
    for subscriber in subscribers { subscriber.yield(event) }
  }

  /// A stream of every event published after this call; ends when the consumer stops.
  public func subscribe() -> AsyncStream<IdentityEvent> {
    let (stream, continuation) = AsyncStream<IdentityEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
    let id = state.withLock { state in
      let id = state.next
      state.next += 1
      state.subscribers[id] = continuation
      return id
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
    }
    return stream
  }
}
