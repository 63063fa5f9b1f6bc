import GRPCCore
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

  public init(
    bufferingPolicy: AsyncStream<Event>.Continuation.BufferingPolicy = .bufferingNewest(10_000)
  ) {
    self.bufferingPolicy = bufferingPolicy
  }

  public func publish(_ event: Event) {
    for subscriber in state.withLock({ Array($0.subscribers.values) }) { subscriber.yield(event) }
  }

  public func subscribe() -> AsyncStream<Event> {
    subscription().stream
  }

  /// Runs `body` with a subscription that ends when gRPC cancels the current
  /// server RPC (the client went away, its deadline passed, or the server is
  /// shutting down). gRPC signals that through the RPC's cancellation handle,
  /// not by cancelling the handler's task, so a plain `for await` would outlive
  /// its client and hold up a graceful shutdown.
  public func withSubscriptionForRPC<T: Sendable>(_ body: (AsyncStream<Event>) async throws -> T)
    async throws -> T
  {
    let (stream, continuation) = subscription()
    return try await withRPCCancellationHandler {
      try await body(stream)
    } onCancelRPC: {
      continuation.finish()
    }
  }

  private func subscription() -> (
    stream: AsyncStream<Event>, continuation: AsyncStream<Event>.Continuation
  ) {
    let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: bufferingPolicy)
    let id = state.withLock { state in
      defer { state.next += 1 }
      state.subscribers[state.next] = continuation
      return state.next
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
    }
    return (stream, continuation)
  }
}
