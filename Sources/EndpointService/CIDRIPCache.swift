import Logging
import Synchronization
import TesseraCore

/// The datapath's ipcache as the CIDR entries need it: written so that they yield to every
/// other kind of entry, and read back after a restart (entries of the CIDR identity scope
/// are this component's).
public protocol CIDRIPCacheWriting: Sendable {
  /// Maps each prefix where it holds no entry or another CIDR's.
  func upsertCIDREntries(_ entries: [IPPrefix: NumericIdentity]) async throws(EndpointError)
  /// Unmaps each prefix where it still maps to a CIDR identity.
  func deleteCIDREntries(_ prefixes: [IPPrefix]) async throws(EndpointError)
  func ipcacheEntries() async throws(EndpointError) -> [IPPrefix: NumericIdentity]
}

/// The ipcache entries of the CIDRs the policy service's rules name: each prefix maps to
/// its CIDR identity (``CIDRIdentity``), so an address inside it and outside every more
/// specific entry carries that identity (docs/architecture.md §4, CIDR peers).
///
/// Ordered like a new pod's identity (``PolicyOrdering``):
/// - a prefix is mapped only once every endpoint of the node has realised the event that
///   brought its identity into the SelectorCache, so no packet carries an identity a peer's
///   policy map has not seen yet;
/// - the policy service removes a CIDR identity in an event of its own, after the change
///   that stopped naming it, when it behaves exactly like the next enclosing prefix's; the
///   prefix is unmapped once every endpoint realised the events before that one, and before
///   that event's regenerations, so no address carries an identity the maps no longer hold.
///
/// The policy watch's consumer calls ``removeBeforeRegenerating(_:ordering:)`` and then,
/// once the event's regenerations are queued and the event consumed,
/// ``installAfterPeers(through:ordering:)``, which maps in the background. Every datapath
/// write goes through one gate and re-reads what is wanted under it, each prefix with the
/// event that added it, so neither a background mapping nor a retry can map a prefix an
/// event has removed since, or map one ahead of its own event.
final class CIDRIPCache: Sendable {
  private struct Wanted: Equatable {
    var identity: NumericIdentity
    /// The sequence of the event that brought it (the stream's first for a snapshot).
    var after: UInt64
  }

  private struct State {
    /// Each CIDR the followed policy service holds.
    var wanted: [IPPrefix: Wanted] = [:]
    /// What the datapath holds of the CIDR scope; nil until read, and after a failed write.
    var installed: [IPPrefix: NumericIdentity]?
    /// Bumped by every datapath write, so a read begun before one is not kept.
    var writes: UInt64 = 0
    /// Prefixes an event removed whose ordered unmapping is under way: a retry leaves them
    /// to it (unmapping them at once would run ahead of the earlier events).
    var draining: Set<IPPrefix> = []
    /// The newest event a background mapping must reach, and whether one runs.
    var mappingTarget: PolicyEventSequence?
    var mapping = false
    /// The newest event taken in, for a retry.
    var lastTarget: PolicyEventSequence?
    /// The datapath has held what the policy service held at the stream's first event.
    var synced = false
    var syncWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
    var nextWaiter = 0
    /// One writer at a time (see ``withGate(_:)``).
    var gateHeld = false
    var gateQueue: [CheckedContinuation<Void, Never>] = []

    var satisfied: Bool { installed == wanted.mapValues(\.identity) }
  }

  /// How long one wait for the node's regenerations lasts before it is logged and retried.
  static let orderingTimeout: Duration = .seconds(30)

  private let datapath: any CIDRIPCacheWriting
  private let state = Mutex(State())
  private let logger: Logger

  init(datapath: any CIDRIPCacheWriting, logger: Logger) {
    self.datapath = datapath
    self.logger = logger
  }

  /// Takes in the event's CIDR identities and unmaps the prefixes it removes, before the
  /// event's regenerations are queued (waiting first until the endpoints realised every
  /// earlier event; a stream's first event unmaps what the policy service no longer holds
  /// at once). Returns only once the datapath no longer maps them.
  func removeBeforeRegenerating(_ change: PolicyChange, ordering: PolicyOrdering) async {
    guard let sequence = change.sequence else { return }
    let instanceID = change.instanceID ?? ordering.instanceID ?? ""
    let removed = state.withLock { state -> [IPPrefix] in
      state.lastTarget = PolicyEventSequence(sequence: sequence, instanceID: instanceID)
      if let snapshot = change.cidrIdentities {
        state.wanted = snapshot.mapValues { Wanted(identity: $0, after: sequence) }
        state.synced = false
        return []
      }
      let deleted = change.deletedIdentities.filter(CIDRIdentity.isCIDR)
        .union(change.retiredCIDRs)
      let removed = state.wanted.filter { deleted.contains($0.value.identity) }.map(\.key)
      for prefix in removed { state.wanted[prefix] = nil }
      state.draining.formUnion(removed)
      for (prefix, identity) in change.addedCIDRs {
        state.wanted[prefix] = Wanted(identity: identity, after: sequence)
      }
      return removed.sorted()
    }
    if change.cidrIdentities != nil {
      await untilDone("unmapping stale CIDR prefixes") { () async -> Bool in
        await withGate { await removeStale() }
      }
      return
    }
    guard !removed.isEmpty else { return }
    if sequence > 1 {
      // An endpoint whose regeneration is stuck (not failing, never realising) must not hold
      // the node's policy watch forever: after the timeout the removal goes ahead, logged.
      let earlier = PolicyEventSequence(sequence: sequence - 1, instanceID: instanceID)
      do {
        _ = try await ordering.waitForPeers(
          of: nil, through: earlier, deadline: .now + Self.orderingTimeout)
      } catch {
        logger.error(
          "unmapping CIDR prefixes without every endpoint having realised the earlier events",
          metadata: ["prefixes": "\(removed.map(\.description))", "error": "\(error)"])
      }
    }
    await untilDone("unmapping \(removed)") { () async -> Bool in
      await withGate { await unmap(removed) }
    }
  }

  /// Maps, in the background, the wanted prefixes added through `target` (the event just
  /// consumed) that the datapath does not hold yet, once every endpoint realised that event.
  func installAfterPeers(through target: PolicyEventSequence, ordering: PolicyOrdering) {
    let start = state.withLock { state -> Bool in
      guard state.installed == nil || !state.satisfied else { return false }
      state.mappingTarget = target
      guard !state.mapping else { return false }
      state.mapping = true
      return true
    }
    guard start else {
      markSyncedIfSatisfied()
      return
    }
    // One background mapper, always behind the newest event taken in.
    Task {
      while let next = state.withLock({ state -> PolicyEventSequence? in
        defer { state.mappingTarget = nil }
        if state.mappingTarget == nil { state.mapping = false }
        return state.mappingTarget
      }) {
        await mapAfterPeers(through: next, ordering: ordering)
      }
    }
  }

  /// Retries what an event could not finish (the datapath unreachable, a slow
  /// regeneration): stale prefixes unmapped, missing ones mapped behind the newest event.
  func retry(ordering: PolicyOrdering, rereading: Bool = false) async {
    // An endpoint's or another node's pod's entry replaces a CIDR's on the same address, and
    // takes it along when it goes: now and then the datapath is read again (a walk of the
    // whole ipcache, so only while some CIDR is wanted).
    if rereading { state.withLock { if !$0.wanted.isEmpty { $0.installed = nil } } }
    let (target, done) = state.withLock { ($0.lastTarget, $0.installed != nil && $0.satisfied) }
    guard !done, let target else { return }
    _ = await withGate { await removeStale() }
    await mapAfterPeers(through: target, ordering: ordering)
  }

  /// Returns once the datapath has held every CIDR the followed policy service held at the
  /// first event of a stream (until then a pod's policy could name a CIDR whose addresses
  /// still carry `world`), or when the task is cancelled.
  func waitUntilSynced() async {
    let token = state.withLock { state -> Int in
      state.nextWaiter += 1
      return state.nextWaiter
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { continuation in
        let ready = state.withLock { state in
          if state.synced || Task.isCancelled { return true }
          state.syncWaiters[token] = continuation
          return false
        }
        if ready { continuation.resume() }
      }
    } onCancel: {
      state.withLock { $0.syncWaiters.removeValue(forKey: token) }?.resume()
    }
  }

  // MARK: - Writes

  /// Maps the wanted prefixes added through `target` that the datapath does not hold, once
  /// every endpoint realised `target` (what ``installAfterPeers(through:ordering:)`` runs in
  /// the background).
  func mapAfterPeers(through target: PolicyEventSequence, ordering: PolicyOrdering) async {
    guard let installed = await readInstalled() else { return }
    let missing = state.withLock { state in
      state.wanted.filter {
        $0.value.after <= target.sequence && installed[$0.key] != $0.value.identity
      }
    }
    if !missing.isEmpty {
      do {
        guard
          try await ordering.waitForPeers(
            of: nil, through: target, deadline: .now + Self.orderingTimeout)
        else { return }  // the watch moved to another instance: its first event reconciles
      } catch {
        // An endpoint whose regeneration is stuck (not failing, never realising) must not
        // keep the node from mapping, nor from serving after a restart: logged, and mapped.
        logger.error(
          "mapping CIDR prefixes without every endpoint having realised their event",
          metadata: [
            "prefixes": "\(missing.keys.sorted().map(\.description))", "error": "\(error)",
          ])
      }
      _ = await withGate { () async -> Bool in
        // Only what is still wanted as it was: an event taken in meanwhile may have
        // removed a prefix, or removed and added it again (a later `after`).
        let current = state.withLock { state in
          missing.filter { state.wanted[$0.key] == $0.value }.mapValues(\.identity)
        }
        do {
          try await datapath.upsertCIDREntries(current)
          state.withLock { state in
            state.writes += 1
            state.installed?.merge(current) { _, new in new }
          }
          if !current.isEmpty {
            logger.info(
              "CIDR prefixes mapped",
              metadata: ["prefixes": "\(current.keys.sorted().map(\.description))"])
          }
          return true
        } catch {
          forgetInstalled()
          logger.error(
            "cannot map CIDR prefixes; retrying",
            metadata: [
              "prefixes": "\(current.keys.sorted().map(\.description))", "error": "\(error)",
            ])
          return false
        }
      }
    }
    markSyncedIfSatisfied()
  }

  /// Wakes ``waitUntilSynced()`` once the datapath holds what is wanted.
  private func markSyncedIfSatisfied() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      guard !state.synced, state.installed != nil, state.satisfied else { return [] }
      state.synced = true
      defer { state.syncWaiters.removeAll() }
      return Array(state.syncWaiters.values)
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Unmaps the prefixes the datapath holds that are no longer wanted (under the gate).
  /// - Returns: whether the datapath was read and holds nothing stale.
  private func removeStale() async -> Bool {
    guard let installed = await readInstalled() else { return false }
    let stale = state.withLock { state in
      installed.filter { state.wanted[$0.key] == nil && !state.draining.contains($0.key) }
        .map(\.key).sorted()
    }
    guard !stale.isEmpty else { return true }
    return await unmap(stale)
  }

  /// Unmaps `prefixes` (under the gate): no longer installed, nor draining.
  private func unmap(_ prefixes: [IPPrefix]) async -> Bool {
    do {
      try await datapath.deleteCIDREntries(prefixes)
      state.withLock { state in
        state.writes += 1
        for prefix in prefixes { state.installed?[prefix] = nil }
        state.draining.subtract(prefixes)
      }
      logger.info(
        "CIDR prefixes unmapped", metadata: ["prefixes": "\(prefixes.map(\.description))"])
      return true
    } catch {
      forgetInstalled()
      logger.error(
        "cannot unmap CIDR prefixes; retrying",
        metadata: ["prefixes": "\(prefixes.map(\.description))", "error": "\(error)"])
      return false
    }
  }

  /// After a failed write (applied or not): the next read of the datapath tells.
  private func forgetInstalled() {
    state.withLock { state in
      state.writes += 1
      state.installed = nil
    }
  }

  /// The datapath's CIDR-scope entries, read when not known.
  private func readInstalled() async -> [IPPrefix: NumericIdentity]? {
    let (known, writes) = state.withLock { ($0.installed, $0.writes) }
    if let known { return known }
    do {
      let entries = try await datapath.ipcacheEntries().filter { CIDRIdentity.isCIDR($0.value) }
      return state.withLock { state in
        // A write since the read began makes it stale: the next call reads again.
        guard state.writes == writes else { return nil }
        if state.installed == nil { state.installed = entries }
        return state.installed
      }
    } catch {
      logger.error("cannot read the datapath's ipcache; retrying", metadata: ["error": "\(error)"])
      return nil
    }
  }

  /// Runs `attempt` until it succeeds (or the task is cancelled), logging each failure and
  /// waiting a little longer each time (10 ms doubling, at most 1 s): the policy watch waits
  /// here rather than regenerate endpoints ahead of the datapath's ipcache.
  private func untilDone(_ what: String, _ attempt: () async -> Bool) async {
    var delay = Duration.milliseconds(10)
    while !(await attempt()) {
      logger.warning("CIDR ipcache: \(what) failed; retrying")
      guard (try? await Task.sleep(for: delay)) != nil else { return }
      delay = min(delay * 2, .seconds(1))
    }
  }

  /// Runs `body` while no other datapath write of this component runs.
  private func withGate<T>(_ body: () async -> T) async -> T {
    await withCheckedContinuation { continuation in
      let free = state.withLock { state in
        if state.gateHeld {
          state.gateQueue.append(continuation)
          return false
        }
        state.gateHeld = true
        return true
      }
      if free { continuation.resume() }
    }
    let result = await body()
    let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
      guard !state.gateQueue.isEmpty else {
        state.gateHeld = false
        return nil
      }
      return state.gateQueue.removeFirst()
    }
    next?.resume()
    return result
  }
}
