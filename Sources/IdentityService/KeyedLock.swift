import Synchronization

/// Serialises async work per key: two allocations of one label set on one
/// node must not both see "no reference yet".
final class KeyedLock<Key: Hashable & Sendable>: Sendable {
  private let waiters = Mutex<[Key: [CheckedContinuation<Void, Never>]]>([:])

  func withLock<T: Sendable, E: Error>(_ key: Key, _ body: () async throws(E) -> T) async throws(E)
    -> T
  {
    await acquire(key)
    defer { release(key) }
    return try await body()
  }

  private func acquire(_ key: Key) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let mustWait = waiters.withLock { waiters in
        if waiters[key] == nil {
          waiters[key] = []
          return false
        }
        waiters[key]!.append(continuation)
        return true
      }
      if !mustWait { continuation.resume() }
    }
  }

  private func release(_ key: Key) {
    let next = waiters.withLock { waiters -> CheckedContinuation<Void, Never>? in
      guard var queue = waiters[key], !queue.isEmpty else {
        waiters[key] = nil
        return nil
      }
      let next = queue.removeFirst()
      waiters[key] = queue
      return next
    }
    next?.resume()
  }
}
