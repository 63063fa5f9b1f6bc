import Synchronization
import TesseraCore

/// Orders ipcache writes after policy map updates, the way Cilium updates
/// endpoints' policy maps from the SelectorCache before the ipcache upsert that
/// makes a new identity visible.
///
/// A packet carries identity I once an ipcache entry maps its source address
/// to I; the datapath writes that entry when it realises the endpoint that
/// owns the address. So before an endpoint is realised with an identity the
/// datapath does not hold for it yet (a create, a relabel), every other local
/// endpoint whose policy the change involving I affects must have realised a
/// regeneration that reflects it. The policy service numbers its events; this
/// tracker knows how far the WatchPolicy consumer got (`consumed`) and which
/// endpoint regenerations each consumed event is still waiting for (`pending`).
///
/// Not waited for: endpoints never realised (nothing of theirs is enforced
/// yet), endpoints in their own ordering wait (they compute their policy after
/// it, and two concurrent creates or relabels must not wait for each other),
/// and endpoints whose last regeneration failed (a pod whose device vanished
/// must not stop every create on the node; it keeps retrying).
final class PolicyOrdering: Sendable {
  /// A regeneration an event triggered: `endpointID` must realise `generation`.
  private struct Pending {
    var sequence: UInt64
    var endpointID: UInt64
    var generation: UInt64
  }

  private struct State {
    var instanceID: String?
    var consumed: UInt64 = 0
    var pending: [Pending] = []
    /// Identity and generation each endpoint last realised in the datapath.
    var realized: [UInt64: (identity: NumericIdentity, generation: UInt64)] = [:]
    /// Endpoints in their own ordering wait.
    var ordering: Set<UInt64> = []
    /// Endpoints whose last regeneration failed.
    var failing: Set<UInt64> = []
    /// Identities the followed instance's SelectorCache holds, as far as this node
    /// knows: seen entering on the watch (and not leaving since), or answered by
    /// GetEventSequence; each with the digest of its labels (a number reused for
    /// other labels is another identity) and the sequence through which that was known.
    var held: [NumericIdentity: (digest: UInt64, sequence: UInt64)] = [:]
    /// Identities just allocated as new (by labels digest): the policy service
    /// announced them before the allocation returned, so their arrival is on its way
    /// down the watch.
    var expected: [NumericIdentity: UInt64] = [:]
    /// The followed instance's events name identity changes (a policy service from
    /// before they did never does, nor names removals): only then is what this node
    /// learnt about held identities kept and used.
    var streamNamesIdentities = false
    var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    var nextToken = 0
    /// Bumped on every change, so a check and the wait after it cannot miss a signal.
    var version: UInt64 = 0
  }

  private let state = Mutex(State())

  /// The policy service instance the watch follows (nil before its first event).
  var instanceID: String? { state.withLock { $0.instanceID } }

  /// Whether realising this identity for the endpoint makes addresses carry a
  /// new identity (its first realisation, or a relabel).
  func changesIdentity(endpointID: UInt64, to identity: NumericIdentity) -> Bool {
    state.withLock { $0.realized[endpointID]?.identity != identity }
  }

  /// Whether another endpoint of this node has realised `identity`: packets already
  /// carry it, and the peers' maps were ordered behind it when it first appeared, so
  /// one more address with it opens no window (the datapath judges by identity).
  func isRealized(_ identity: NumericIdentity, byOtherThan endpointID: UInt64) -> Bool {
    state.withLock { state in
      state.realized.contains { $0.key != endpointID && $0.value.identity == identity }
    }
  }

  /// The WatchPolicy consumer applied an event: `triggered` are the
  /// regenerations (endpoint, generation) it caused. `instanceID` is set on a
  /// stream's first event; regenerations still owed from an earlier instance's
  /// events stay owed.
  ///
  /// - Parameters:
  ///   - resync: events may have been missed, so what this node knew the
  ///     SelectorCache to hold is forgotten.
  ///   - added: identities the event brought into the SelectorCache (number → labels digest).
  ///   - deleted: identities it removed.
  ///   - namesIdentityChanges: on a stream's first event, whether the policy service
  ///     says its events name identity changes (nil: not said; a stream that names
  ///     one is known to).
  func consumed(
    sequence: UInt64, instanceID: String?, triggered: [(endpointID: UInt64, generation: UInt64)],
    resync: Bool = false, added: [NumericIdentity: UInt64] = [:],
    deleted: Set<NumericIdentity> = [], namesIdentityChanges: Bool? = nil
  ) {
    update { state in
      if let instanceID, instanceID != state.instanceID {
        state.instanceID = instanceID
        state.held.removeAll()
        state.streamNamesIdentities = false
        for index in state.pending.indices { state.pending[index].sequence = 0 }
      }
      if let namesIdentityChanges { state.streamNamesIdentities = namesIdentityChanges }
      if !added.isEmpty || !deleted.isEmpty { state.streamNamesIdentities = true }
      if resync {
        state.held.removeAll()
        state.expected.removeAll()
      }
      for identity in deleted { state.held[identity] = nil }
      for (identity, digest) in added where !deleted.contains(identity) {
        state.held[identity] = (digest, sequence)
        if state.expected[identity] == digest { state.expected[identity] = nil }
      }
      state.consumed = max(state.consumed, sequence)
      if instanceID != nil { state.consumed = sequence }
      for (endpointID, generation) in triggered
      where (state.realized[endpointID]?.generation ?? 0) < generation {
        state.pending.append(
          Pending(sequence: sequence, endpointID: endpointID, generation: generation))
      }
    }
  }

  /// GetEventSequence answered that the instance `target` names held `identity`
  /// through `target`. Kept only when the watch follows that instance, names
  /// identity changes (so a later removal clears it) and has not applied events
  /// past `target` (so a removal the watch applied before the answer arrived cannot
  /// be undone by it).
  func learnt(_ identity: SecurityIdentity, heldAt target: PolicyEventSequence) {
    state.withLock { state in
      guard state.streamNamesIdentities, state.instanceID == target.instanceID,
        state.consumed <= target.sequence, state.held[identity.id] == nil
      else { return }
      state.held[identity.id] = (identity.labels.canonicalDigest, target.sequence)
    }
  }

  /// The event sequence through which peers must have caught up before
  /// addresses carry `identity`, when this node knows the followed instance holds
  /// it with these labels: what the watch has applied (or the answer that told, if
  /// later). Nil when it must be asked about.
  func localTarget(for identity: SecurityIdentity) -> PolicyEventSequence? {
    let digest = identity.labels.canonicalDigest
    return state.withLock { Self.localTarget(for: identity.id, digest: digest, in: $0) }
  }

  /// ``localTarget(for:)`` for several identities named by fingerprint (other nodes'
  /// ipcache entries): the latest sequence any of the known ones needs, and those
  /// that must be asked about (not held with those labels, or named without a digest).
  func localTarget(covering identities: Set<IdentityFingerprint>) -> (
    target: PolicyEventSequence?, unknown: Set<IdentityFingerprint>
  ) {
    state.withLock { state in
      var target: PolicyEventSequence?
      var unknown: Set<IdentityFingerprint> = []
      for identity in identities {
        guard let digest = identity.labelsDigest,
          let known = Self.localTarget(for: identity.id, digest: digest, in: state)
        else {
          unknown.insert(identity)
          continue
        }
        if target.map({ known.sequence > $0.sequence }) ?? true { target = known }
      }
      return (target, unknown)
    }
  }

  private static func localTarget(for id: NumericIdentity, digest: UInt64, in state: State)
    -> PolicyEventSequence?
  {
    guard state.streamNamesIdentities, let instanceID = state.instanceID,
      let known = state.held[id], known.digest == digest
    else { return nil }
    return PolicyEventSequence(
      sequence: max(state.consumed, known.sequence), instanceID: instanceID)
  }

  /// The identity service allocated `identity` as new: its arrival in the
  /// SelectorCache is on its way down the watch (``awaitArrival(of:within:)``).
  /// What is held under its number for other labels is an earlier identity whose
  /// removal the watch has not shown yet: forgotten. (Held with these labels, its
  /// arrival came down the watch before the allocation's answer.)
  func expectArrival(of identity: SecurityIdentity) {
    update { state in
      let digest = identity.labels.canonicalDigest
      if let known = state.held[identity.id] {
        guard known.digest != digest else { return }
        state.held[identity.id] = nil
      }
      if state.streamNamesIdentities { state.expected[identity.id] = digest }
    }
  }

  /// ``localTarget(for:)``; for an identity allocated as new whose arrival the
  /// watch has not shown yet, waits for it up to `within`. Nil when it must be
  /// asked about (not expected, or not seen in time: a policy replica that learns
  /// identities late, or a resync).
  func awaitArrival(of identity: SecurityIdentity, within: Duration) async -> PolicyEventSequence? {
    let giveUp = ContinuousClock.now + within
    let digest = identity.labels.canonicalDigest
    while !Task.isCancelled {
      let (target, expected, version) = state.withLock { state in
        (
          Self.localTarget(for: identity.id, digest: digest, in: state),
          state.expected[identity.id] == digest,
          state.version
        )
      }
      if let target { return target }
      guard expected, ContinuousClock.now < giveUp else { break }
      await waitForChange(after: version, deadline: giveUp)
    }
    state.withLock { state in
      if state.expected[identity.id] == digest { state.expected[identity.id] = nil }
    }
    return nil
  }

  /// The endpoint realised `generation` with `identity` in the datapath.
  func realized(endpointID: UInt64, identity: NumericIdentity, generation: UInt64) {
    update { state in
      let previous = state.realized[endpointID]?.generation ?? 0
      state.realized[endpointID] = (identity, max(previous, generation))
      state.failing.remove(endpointID)
      state.pending.removeAll { $0.endpointID == endpointID && $0.generation <= generation }
    }
  }

  /// The endpoint's regeneration failed; it is not waited for until one succeeds.
  func failed(endpointID: UInt64) {
    update { $0.failing.insert(endpointID) }
  }

  /// The endpoint is gone: nothing is owed by it any more.
  func forget(endpointID: UInt64) {
    update { state in
      state.realized[endpointID] = nil
      state.failing.remove(endpointID)
      state.pending.removeAll { $0.endpointID == endpointID }
    }
  }

  /// Regenerations still owed (for status and tests).
  var pendingCount: Int { state.withLock { $0.pending.count } }

  /// Returns once the WatchPolicy consumer has applied `target` and every
  /// regeneration owed for events up to it by another realised endpoint has
  /// been realised.
  ///
  /// - Parameter endpointID: the endpoint about to be realised; nil to wait for every endpoint.
  /// - Returns: false when the watch follows another policy-service instance
  ///   than `target`'s: it moved to another one (a restart, or a failover to
  ///   another replica), or `target` came from another replica behind the same
  ///   address (sequences mean nothing across instances). Read a new target
  ///   (``pauseBeforeAskingAgain(attempt:deadline:)``) and wait again.
  /// - Throws: ``EndpointError`` `.deadlineExceeded` at the deadline.
  func waitForPeers(
    of endpointID: UInt64?, through target: PolicyEventSequence, deadline: ContinuousClock.Instant
  ) async throws(EndpointError) -> Bool {
    if let endpointID { update { $0.ordering.insert(endpointID) } }
    defer { if let endpointID { update { $0.ordering.remove(endpointID) } } }
    var moved = false
    try await wait(deadline: deadline) { state in
      if let current = state.instanceID, current != target.instanceID {
        moved = true
        return nil
      }
      guard state.instanceID == target.instanceID, state.consumed >= target.sequence else {
        return
          "policy events through \(target) not applied yet (at \(state.instanceID ?? "none")#\(state.consumed))"
      }
      let owed = state.pending.filter {
        $0.sequence <= target.sequence && $0.endpointID != endpointID
          && !state.ordering.contains($0.endpointID)
          && !state.failing.contains($0.endpointID) && state.realized[$0.endpointID] != nil
      }
      return owed.isEmpty
        ? nil : "endpoints \(Set(owed.map(\.endpointID)).sorted()) have not realised the change yet"
    }
    return !moved
  }

  /// Sleeps a little longer on each attempt (1 ms doubling, at most 10 ms) before the
  /// caller reads a new target after ``waitForPeers(of:through:deadline:)`` returned false.
  /// With several replicas behind one address the next read usually reaches the one the
  /// watch follows; after a restart, the watch reconnects to the new instance.
  ///
  /// - Throws: ``EndpointError`` `.deadlineExceeded` once the deadline has passed.
  static func pauseBeforeAskingAgain(attempt: inout Int, deadline: ContinuousClock.Instant)
    async throws(EndpointError)
  {
    guard ContinuousClock.now < deadline else {
      throw EndpointError(
        code: .deadlineExceeded,
        message:
          "peers' policy did not catch up before the deadline: the policy service's answers kept coming from another instance than the one this node's watch follows"
      )
    }
    try? await Task.sleep(for: .milliseconds(min(1 << min(attempt, 4), 10)))
    attempt += 1
  }

  /// Returns once the endpoint owes no regeneration for events applied so far.
  func waitForOwnChanges(of endpointID: UInt64, deadline: ContinuousClock.Instant)
    async throws(EndpointError)
  {
    let through = state.withLock { $0.consumed }
    try await wait(deadline: deadline) { state in
      state.pending.contains { $0.endpointID == endpointID && $0.sequence <= through }
        ? "endpoint \(endpointID) has not realised policy events through #\(through) yet" : nil
    }
  }

  /// Waits until `blocker` returns nil (nothing blocks) or the deadline.
  private func wait(deadline: ContinuousClock.Instant, blocker: (State) -> String?)
    async throws(EndpointError)
  {
    while true {
      let (reason, version) = state.withLock { (blocker($0), $0.version) }
      guard let reason else { return }
      guard ContinuousClock.now < deadline else {
        throw EndpointError(
          code: .deadlineExceeded,
          message: "peers' policy did not catch up before the deadline: \(reason)")
      }
      await waitForChange(after: version, deadline: deadline)
    }
  }

  private func waitForChange(after version: UInt64, deadline: ContinuousClock.Instant) async {
    let token = state.withLock { state -> Int in
      state.nextToken += 1
      return state.nextToken
    }
    await withTaskGroup(of: Void.self) { group in
      group.addTask { try? await Task.sleep(until: deadline, clock: .continuous) }
      group.addTask {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
          let changed = self.state.withLock { state -> Bool in
            // Cancelled before parking: the sleeper won and will not look for this waiter.
            if state.version != version || Task.isCancelled { return true }
            state.waiters[token] = continuation
            return false
          }
          if changed { continuation.resume() }
        }
      }
      await group.next()
      group.cancelAll()
      // The sleeper won: take the parked continuation back and resume it.
      let parked = state.withLock { $0.waiters.removeValue(forKey: token) }
      parked?.resume()
    }
  }

  private func update(_ body: (inout State) -> Void) {
    let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      body(&state)
      state.version += 1
      defer { state.waiters.removeAll() }
      return Array(state.waiters.values)
    }
    for continuation in woken { continuation.resume() }
  }
}
