import Synchronization
import TesseraCore

/// The desired policy per identity, as last computed by the policy service.
///
/// Endpoints with one identity share one policy, so a pod joining an existing
/// identity needs no policy computation. Entries are dropped when a policy
/// change may affect their identity; a computation that started before such
/// a change is not stored (the epoch moved on), so the cache never holds a
/// policy older than the last change it was told about.
final class PolicyCache: Sendable {
  private struct Key: Hashable {
    var identity: NumericIdentity
    /// Identity numbers are reused after garbage collection; the labels tell them apart.
    var labels: LabelSet
  }

  private struct State {
    var entries: [Key: EndpointPolicy] = [:]
    var epoch: UInt64 = 0
  }

  private let state = Mutex(State())

  /// The cached policy, or the policy computed by `compute` (then cached).
  func policy(
    for identity: SecurityIdentity,
    compute: (SecurityIdentity) async throws(EndpointError) -> EndpointPolicy
  ) async throws(EndpointError) -> EndpointPolicy {
    let key = Key(identity: identity.id, labels: identity.labels)
    let (cached, epoch) = state.withLock { ($0.entries[key], $0.epoch) }
    if let cached { return cached }
    let computed = try await compute(identity)
    state.withLock { state in
      if state.epoch == epoch { state.entries[key] = computed }
    }
    return computed
  }

  /// The cached policy of `identity`, if any (nothing is computed).
  func cached(_ identity: SecurityIdentity) -> EndpointPolicy? {
    state.withLock { $0.entries[Key(identity: identity.id, labels: identity.labels)] }
  }

  /// Drops the entries of these identities (nil: every entry). No identity: nothing
  /// changes, and computations in flight may still be stored.
  func invalidate(_ identities: Set<NumericIdentity>?) {
    if identities?.isEmpty == true { return }
    state.withLock { state in
      state.epoch += 1
      if let identities {
        state.entries = state.entries.filter { !identities.contains($0.key.identity) }
      } else {
        state.entries.removeAll()
      }
    }
  }
}
