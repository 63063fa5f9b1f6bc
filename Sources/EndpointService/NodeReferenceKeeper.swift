import Logging
import ServiceLifecycle
import Synchronization
import TesseraCore
import TesseraRuntime

/// What the identity service said of this node's lease.
public struct NodeLease: Sendable, Hashable {
  /// How long the node's references outlive it without another keepalive; nil when
  /// they are bound to no lease of the node's own (a replica on this node, or a
  /// store of one machine): there is nothing to keep alive.
  public var timeToLive: Duration?
  /// The lease had expired with the node's references (the node could reach no
  /// replica for longer than the TTL); the node restores them.
  public var referencesLost: Bool

  public init(timeToLive: Duration?, referencesLost: Bool) {
    self.timeToLive = timeToLive
    self.referencesLost = referencesLost
  }

  public static let notLeased = NodeLease(timeToLive: nil, referencesLost: false)
}

/// This node's identity references, kept alive where the identity service binds them to
/// a lease of the node's own (replicas on other machines; docs/architecture.md §3, §7),
/// and restored when that lease expired while no replica was reachable.
///
/// It wraps the identity client and counts the references the node's endpoints take
/// (allocations minus releases). Like the allocator of a Cilium agent, the node holds
/// one reference per identity in the identity service however many of its endpoints
/// use it: a pod whose label set another pod of the node already holds resolves here,
/// without a call, and only the last release on the node goes to the identity
/// service. A restore tells the identity service that one reference per identity
/// held; calls to the identity service wait while a restore runs, so none falls
/// between the count and the sync, and restores run one after another.
///
/// Where the references are bound to the node's lease (replicas on other machines,
/// each call a mutual-TLS round trip and an etcd transaction), the node keeps its
/// reference for ``Configuration/releaseDelay`` after its last endpoint of an identity
/// went: a pod of that label set created meanwhile (a restart, a rollout, a job's next
/// run) resolves here without a call, and churn on a node's label sets costs the
/// identity service nothing. An identity unused cluster-wide is garbage-collected that
/// much later (docs/architecture.md §7).
///
/// While no identity replica answers, a label set the node already holds an identity
/// for still resolves (docs/architecture.md §7), as it always does. The mapping cannot
/// go stale: an identity is never handed to other labels, and the node's own
/// reference keeps it from garbage collection. A label set the node does not hold
/// fails (UNAVAILABLE, CNI code 11).
public final class NodeReferenceKeeper: IdentityAllocating, Service {
  public struct Configuration: Sendable {
    /// Keepalives per TTL.
    public var renewalsPerTTL: Int
    /// How often a node without a lease asks again (a replica may move off the node).
    public var unleasedInterval: Duration
    /// Wait after a failed keepalive or restore.
    public var retryInterval: Duration
    /// How long a node keeps its reference to an identity after its last endpoint of
    /// it went, where its references are bound to its lease. Zero gives it back at once.
    public var releaseDelay: Duration

    public init(
      renewalsPerTTL: Int = 3, unleasedInterval: Duration = .seconds(30),
      retryInterval: Duration = .seconds(1), releaseDelay: Duration = .seconds(30)
    ) {
      self.renewalsPerTTL = renewalsPerTTL
      self.unleasedInterval = unleasedInterval
      self.retryInterval = retryInterval
      self.releaseDelay = releaseDelay
    }

    public static let defaults = Configuration()
  }

  private struct State {
    /// References the node's endpoints hold, per identity.
    var held: [NumericIdentity: Int] = [:]
    /// References the identity service holds for this node, as far as it answered:
    /// one per identity held, more only while first allocations of one label set
    /// raced (the releases give the extra back).
    var upstream: [NumericIdentity: Int] = [:]
    /// The identity each label set the node holds resolved to (by canonical key).
    var resolved: [String: SecurityIdentity] = [:]
    /// Identities no endpoint of the node holds any more whose node reference is kept
    /// until the instant (``Configuration/releaseDelay``); still in `upstream` and `resolved`.
    var lingering: [NumericIdentity: ContinuousClock.Instant] = [:]
    /// The identity service binds the node's references to a lease of the node's own.
    var leased = false
    var callsInFlight = 0
    var restoring = false
    var restoreNeeded = false
    var idleWaiters: [CheckedContinuation<Void, Never>] = []
    var blockedCalls: [CheckedContinuation<Void, Never>] = []
    /// Restores that wait for the one running: two at once would each set the node's
    /// references from their own reading of them and could undo each other's writes.
    var queuedRestores: [CheckedContinuation<Void, Never>] = []
  }

  private let upstream: any IdentityAllocating
  private let configuration: Configuration
  private let state = Mutex(State())
  /// Signalled when a reference was counted here only: the keepalive loop tries at once.
  private let restoreWanted = Wakeup()
  /// Signalled when a reference starts lingering: the release loop looks at its deadline.
  private let lingerStarted = Wakeup()
  private let logger: Logger

  public init(
    wrapping upstream: any IdentityAllocating, configuration: Configuration = .defaults,
    logger: Logger
  ) {
    self.upstream = upstream
    self.configuration = configuration
    self.logger = logger
  }

  /// References the node's endpoints hold, per identity.
  public var heldReferences: [NumericIdentity: Int] { state.withLock { $0.held } }

  /// References the identity service holds for this node, as far as it answered.
  public var upstreamReferences: [NumericIdentity: Int] { state.withLock { $0.upstream } }

  /// Identities whose node reference is kept after the node's last endpoint of them went.
  public var lingeringIdentities: Set<NumericIdentity> {
    state.withLock { Set($0.lingering.keys) }
  }

  // MARK: - IdentityAllocating

  public func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    if let known = takeLocalReference(labels) { return (known, false) }
    await beginCall()
    defer { endCall() }
    let result: (identity: SecurityIdentity, isNew: Bool)
    do {
      result = try await upstream.allocateIdentity(labels: labels)
    } catch  where error.code == .upstreamUnavailable {
      // The identity service may have taken the reference and lost the answer (a
      // replica killed mid-call): the next restore sets the node's references to
      // exactly what its endpoints hold.
      state.withLock { $0.restoreNeeded = true }
      restoreWanted.signal()
      throw error
    }
    if !result.identity.id.isReserved {
      state.withLock {
        $0.held[result.identity.id, default: 0] += 1
        $0.upstream[result.identity.id, default: 0] += 1
        $0.resolved[labels.canonicalKey] = result.identity
      }
    }
    return result
  }

  /// One more reference to the identity `labels` resolved to, when the node already
  /// holds it or keeps its reference after the last endpoint of it went: counted here
  /// only, the node's reference in the identity service covers it. Nil when the node
  /// holds none.
  private func takeLocalReference(_ labels: LabelSet) -> SecurityIdentity? {
    state.withLock { state in
      guard let known = state.resolved[labels.canonicalKey],
        state.held[known.id, default: 0] > 0 || state.lingering.removeValue(forKey: known.id) != nil
      else { return nil }
      state.held[known.id, default: 0] += 1
      return known
    }
  }

  public func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError) {
    // How many of the node's references in the identity service go: all of them with
    // the node's last endpoint of the identity, else those beyond one.
    let outcome = state.withLock { state -> (releases: Int, lingers: Bool)? in
      guard let count = state.held[id] else { return nil }
      let upstream = state.upstream[id, default: 0]
      if count > 1 {
        state.held[id] = count - 1
        guard upstream > 1 else { return (0, false) }
        state.upstream[id] = 1
        return (upstream - 1, false)
      }
      state.held[id] = nil
      if state.leased, configuration.releaseDelay > .zero, upstream > 0 {
        // Kept for a while; references of first allocations that raced go now.
        state.lingering[id] = .now + configuration.releaseDelay
        state.upstream[id] = 1
        return (upstream - 1, true)
      }
      state.upstream[id] = nil
      state.resolved = state.resolved.filter { $0.value.id != id }
      return (upstream, false)
    }
    guard let (releases, lingers) = outcome else {
      // Not counted here (a release the node's count has no record of): passed on.
      await beginCall()
      defer { endCall() }
      try await upstream.releaseIdentity(id)
      return
    }
    if lingers { lingerStarted.signal() }
    guard releases > 0 else { return }
    try await giveBack([id: releases])
  }

  /// Releases references in the identity service that the count here has already let go.
  private func giveBack(_ releases: [NumericIdentity: Int]) async throws(EndpointError) {
    await beginCall()
    defer { endCall() }
    for (id, count) in releases {
      do {
        for _ in 0..<count { try await upstream.releaseIdentity(id) }
      } catch {
        // The count here already says what the identity service should hold; the
        // next restore tells it so.
        state.withLock { $0.restoreNeeded = true }
        restoreWanted.signal()
        guard error.code == .upstreamUnavailable else { throw error }
        logger.warning(
          "identity service unreachable: the release is counted here and restored later",
          metadata: ["identity": "\(id)", "error": "\(error)"])
      }
    }
  }

  /// Gives back the references whose ``Configuration/releaseDelay`` has run out (all of
  /// them once the node's references are no longer bound to its lease).
  private func releaseExpired() async {
    let expired = state.withLock { state -> [NumericIdentity: Int] in
      let now = ContinuousClock.now
      var expired: [NumericIdentity: Int] = [:]
      for (id, deadline) in state.lingering where deadline <= now || !state.leased {
        state.lingering[id] = nil
        expired[id] = state.upstream.removeValue(forKey: id) ?? 0
      }
      if !expired.isEmpty {
        state.resolved = state.resolved.filter { expired[$0.value.id] == nil }
      }
      return expired.filter { $0.value > 0 }
    }
    guard !expired.isEmpty else { return }
    do { try await giveBack(expired) } catch {
      logger.warning(
        "the identity service refused a delayed release; the next restore sets the node's references",
        metadata: ["identities": "\(expired.keys.sorted())", "error": "\(error)"])
    }
  }

  private func releaseWhenDelayed() async throws {
    while true {
      let next = state.withLock { $0.lingering.values.min() }
      let wait = next.map { max($0 - .now, .milliseconds(1)) } ?? .seconds(3600)
      await lingerStarted.wait(timeout: wait)
      try Task.checkCancellation()
      await releaseExpired()
    }
  }

  /// The endpoint service's own sync (after restoring its endpoints): `held` becomes the count.
  public func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError) {
    try await syncReferences(held: held, resolved: [:])
  }

  public func syncReferences(held: [NumericIdentity: Int], resolved: [String: SecurityIdentity])
    async throws(EndpointError)
  {
    await beginRestore()
    defer { endRestore() }
    let held = held.filter { $0.value > 0 && !$0.key.isReserved }
    let references = Self.nodeReferences(held)
    try await upstream.syncReferences(held: references)
    state.withLock {
      $0.held = held
      $0.upstream = references
      $0.lingering = [:]
      $0.resolved = resolved.filter {
        $0.value.id.isReserved == false && held[$0.value.id, default: 0] > 0
      }
      $0.restoreNeeded = false
    }
  }

  /// What the identity service holds for a node whose endpoints hold `held`: one
  /// reference per identity.
  private static func nodeReferences(_ held: [NumericIdentity: Int]) -> [NumericIdentity: Int] {
    held.mapValues { _ in 1 }
  }

  /// What the identity service holds for this node now: one reference per identity its
  /// endpoints hold or whose reference it keeps.
  private func currentNodeReferences(_ state: State) -> [NumericIdentity: Int] {
    Self.nodeReferences(state.held).merging(state.lingering.mapValues { _ in 1 }) { one, _ in one }
  }

  public func keepAliveNode() async throws(EndpointError) -> NodeLease {
    try await upstream.keepAliveNode()
  }

  // MARK: - Service

  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown {
        try await withThrowingDiscardingTaskGroup { group in
          group.addTask { try await self.keepAlive() }
          group.addTask { try await self.releaseWhenDelayed() }
        }
      }
    } catch is CancellationError {
      // A graceful shutdown.
    }
  }

  private func keepAlive() async throws {
    let controller = Controller("identity-node-lease")
    var failing = false
    while true {
      var wait = configuration.retryInterval
      do {
        let lease = try await upstream.keepAliveNode()
        let leaseEnded = state.withLock { state in
          if lease.referencesLost { state.restoreNeeded = true }
          defer { state.leased = lease.timeToLive != nil }
          return state.leased && lease.timeToLive == nil && !state.lingering.isEmpty
        }
        if leaseEnded { lingerStarted.signal() }
        try await restoreIfNeeded()
        controller.succeeded()
        if failing {
          logger.info("the node's identity lease is renewed again")
          failing = false
        }
        wait =
          lease.timeToLive.map { $0 / max(configuration.renewalsPerTTL, 1) }
          ?? configuration.unleasedInterval
      } catch {
        controller.failed(error)
        if !failing {
          logger.warning(
            "cannot renew the node's identity lease; its references expire after the TTL",
            metadata: ["error": "\(error)"])
          failing = true
        }
      }
      if state.withLock({ $0.restoreNeeded }) { wait = min(wait, configuration.retryInterval) }
      await restoreWanted.wait(timeout: wait)
      try Task.checkCancellation()
    }
  }

  /// After the lease expired or a release failed: the identity service gets the
  /// node's references back, one per identity its endpoints hold or it keeps.
  private func restoreIfNeeded() async throws(EndpointError) {
    guard state.withLock({ $0.restoreNeeded }) else { return }
    await beginRestore()
    defer { endRestore() }
    let references = state.withLock { currentNodeReferences($0) }
    try await upstream.syncReferences(held: references)
    state.withLock { state in
      // A release of a node's last reference may have been counted meanwhile (its
      // call waits for this restore and then releases the synced reference).
      state.upstream = references.filter {
        state.held[$0.key] != nil || state.lingering[$0.key] != nil
      }
      state.restoreNeeded = false
    }
    logger.warning(
      "restored the node's identity references",
      metadata: ["identities": "\(references.count)"])
  }

  // MARK: - Calls wait for a restore

  private func beginCall() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let admitted = state.withLock { state in
        guard !state.restoring else {
          state.blockedCalls.append(continuation)
          return false
        }
        state.callsInFlight += 1
        return true
      }
      if admitted { continuation.resume() }
    }
  }

  private func endCall() {
    let idle = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.callsInFlight -= 1
      guard state.callsInFlight == 0 else { return [] }
      defer { state.idleWaiters = [] }
      return state.idleWaiters
    }
    for waiter in idle { waiter.resume() }
  }

  /// Waits until this restore runs alone: after any restore before it, with no call in flight.
  private func beginRestore() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let runsNow = state.withLock { state in
        guard !state.restoring else {
          state.queuedRestores.append(continuation)
          return false
        }
        state.restoring = true
        guard state.callsInFlight == 0 else {
          state.idleWaiters.append(continuation)
          return false
        }
        return true
      }
      if runsNow { continuation.resume() }
    }
  }

  /// Hands over to the next queued restore (no call has been admitted since this one
  /// began, so none is in flight), or else admits the calls held back.
  private func endRestore() {
    let next = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      if !state.queuedRestores.isEmpty { return [state.queuedRestores.removeFirst()] }
      state.restoring = false
      state.callsInFlight += state.blockedCalls.count
      defer { state.blockedCalls = [] }
      return state.blockedCalls
    }
    for waiter in next { waiter.resume() }
  }
}
