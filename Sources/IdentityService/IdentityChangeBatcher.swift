import Synchronization
import TesseraCore

/// Something that must learn about identity changes before they are used:
/// the policy service's SelectorCache.
public protocol IdentityChangeSink: Sendable {
  /// Delivers the changes; returns the receiver's instance ID so a restart of
  /// the receiver can be noticed.
  func identitiesChanged(added: [SecurityIdentity], deleted: [NumericIdentity]) async throws
    -> String
}

/// Coalesces concurrent announcements into one call, the way Cilium's
/// `identityWatcher` drains pending events before `UpdateIdentities`.
///
/// `announce` returns only once a call that included the caller's changes has
/// succeeded, so a new identity is in the SelectorCache before anyone uses it.
/// It also remembers what the current receiver instance has seen, so cached
/// allocations cost nothing and a restarted receiver is brought up to date.
public final class IdentityChangeBatcher: Sendable {
  private struct Pending {
    var added: [NumericIdentity: SecurityIdentity] = [:]
    var deleted: Set<NumericIdentity> = []
    var waiters: [CheckedContinuation<Void, any Error>] = []
  }

  private struct State {
    var pending = Pending()
    var flushing = false
    var announced: Set<NumericIdentity> = []
    var receiverInstance: String?
  }

  private let sink: any IdentityChangeSink
  private let state = Mutex(State())

  public init(sink: any IdentityChangeSink) { self.sink = sink }

  /// Whether the current receiver instance already has this identity.
  public func isAnnounced(_ id: NumericIdentity) -> Bool {
    state.withLock { $0.announced.contains(id) }
  }

  /// Delivers the changes, batched with any others waiting.
  public func announce(added: [SecurityIdentity] = [], deleted: [NumericIdentity] = []) async throws
  {
    try await withCheckedThrowingContinuation {
      (continuation: CheckedContinuation<Void, any Error>) in
      let startFlush = state.withLock { state in
        for identity in added {
          state.pending.added[identity.id] = identity
          state.pending.deleted.remove(identity.id)
        }
        for id in deleted {
          state.pending.deleted.insert(id)
          state.pending.added[id] = nil
        }
        state.pending.waiters.append(continuation)
        guard !state.flushing else { return false }
        state.flushing = true
        return true
      }
      if startFlush {
        Task { await self.flushLoop() }
      }
    }
  }

  private func flushLoop() async {
    while true {
      let batch: Pending? = state.withLock { state in
        guard !state.pending.waiters.isEmpty else {
          state.flushing = false
          return nil
        }
        defer { state.pending = Pending() }
        return state.pending
      }
      guard let batch else { return }
      do {
        let instance = try await sink.identitiesChanged(
          added: Array(batch.added.values).sorted { $0.id < $1.id }, deleted: batch.deleted.sorted()
        )
        state.withLock { state in
          if state.receiverInstance != instance {
            state.receiverInstance = instance
            state.announced = []
          }
          state.announced.formUnion(batch.added.keys)
          state.announced.subtract(batch.deleted)
        }
        for waiter in batch.waiters { waiter.resume() }
      } catch {
        for waiter in batch.waiters { waiter.resume(throwing: error) }
      }
    }
  }
}
