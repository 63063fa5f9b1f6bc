/// Exponential backoff between retries: the delay doubles from `initial` up to `maximum`.
public struct Backoff: Sendable {
  /// The delay the next ``sleep()`` waits.
  public private(set) var delay: Duration
  public let initial: Duration
  public let maximum: Duration

  public init(initial: Duration, maximum: Duration) {
    self.delay = initial
    self.initial = initial
    self.maximum = maximum
  }

  /// Waits for the current delay, then doubles it. Throws `CancellationError` when cancelled.
  public mutating func sleep() async throws {
    try await Task.sleep(for: delay)
    delay = min(delay * 2, maximum)
  }

  /// Starts again from the initial delay (after a success).
  public mutating func reset() { delay = initial }
}
