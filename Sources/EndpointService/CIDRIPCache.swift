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
/// specific entry carries that identity (docs/architecture.md §5, CIDR peers).
///
/// Ordered like a new pod's identity (``PolicyOrdering``): a prefix is mapped only once
/// every endpoint of the node has realised the policy event that brought its identity into
/// the SelectorCache, so no packet carries an identity a peer's policy map has not seen
/// yet; and a prefix is unmapped before the regenerations of the event that removed it, so
/// no address carries an identity the peers' maps no longer hold (its addresses fall back
/// to the next enclosing prefix, which every rule not naming this prefix treats alike).
///
/// The policy watch's consumer calls ``removeBeforeRegenerating(_:)`` and, once the event's
/// regenerations are queued and the event consumed, ``installAfterPeers(through:ordering:)``.
/// Writes to the datapath go through one gate, each re-reading what is wanted under it, so
/// a retry (``retry(ordering:)``) running beside the consumer cannot map a prefix an event
/// has just removed.
final class CIDRIPCache: Sendable {
  private struct State {
    /// Prefix → identity, for each CIDR the followed policy service holds.
    var wanted: [IPPrefix: NumericIdentity] = [:]
    /// What the datapath holds of the CIDR scope; nil until read.
    var installed: [IPPrefix: NumericIdentity]?
    /// The datapath has held what the policy service held at the stream's first event.
    var synced = false
    var syncWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
    var nextWaiter = 0
    /// The last event the mappings were ordered behind, for a retry.
    var lastTarget: PolicyEventSequence?
    /// One writer at a time (see ``withGate(_:)``).
    var gateHeld = false
    var gateQueue: [CheckedContinuation<Void, Never>] = []
  }

  /// How long a mapping waits for the node's regenerations before a retry takes over.
  static let orderingTimeout: Duration = .seconds(30)

  private let datapath: any CIDRIPCacheWriting
  private let state = Mutex(State())
  private let logger: Logger

  init(datapath: any CIDRIPCacheWriting, logger: Logger) {
    self.datapath = datapath
    self.logger = logger
  }

  /// Takes in the event's CIDR identities and unmaps the prefixes no longer wanted, before
  /// the event's regenerations are queued.
  func removeBeforeRegenerating(_ change: PolicyChange) async {
    await withGate {
      state.withLock { state in
        if let snapshot = change.cidrIdentities {
          state.wanted = snapshot
          state.synced = false
        } else {
          let deleted = change.deletedIdentities.filter(CIDRIdentity.isCIDR)
          state.wanted = state.wanted.filter { !deleted.contains($0.value) }
          state.wanted.merge(change.addedCIDRs) { _, new in new }
        }
      }
      await removeStale()
    }
  }

  /// Maps the wanted prefixes the datapath does not hold yet, once every endpoint has
  /// realised the events through `target` (the event just consumed).
  func installAfterPeers(through target: PolicyEventSequence, ordering: PolicyOrdering) async {
    state.withLock { $0.lastTarget = target }
    guard let installed = await readInstalled() else { return }
    let missing = state.withLock { state in state.wanted.filter { installed[$0.key] != $0.value } }
    if !missing.isEmpty {
      do {
        guard
          try await ordering.waitForPeers(
            of: nil, through: target, deadline: .now + Self.orderingTimeout)
        else { return }  // the watch moved to another instance: its first event reconciles
      } catch {
        logger.warning(
          "CIDR prefixes wait for the node's regenerations; retrying",
          metadata: ["prefixes": "\(missing.keys.sorted().map(\.description))", "error": "\(error)"])
        return
      }
      await withGate {
        // Only what is still wanted: an event consumed meanwhile may have removed some.
        let current = state.withLock { state in
          missing.filter { state.wanted[$0.key] == $0.value }
        }
        do {
          try await datapath.upsertCIDREntries(current)
          state.withLock { state in state.installed?.merge(current) { _, new in new } }
          logger.info(
            "CIDR prefixes mapped",
            metadata: ["prefixes": "\(current.keys.sorted().map(\.description))"])
        } catch {
          logger.error(
            "cannot map CIDR prefixes; retrying",
            metadata: [
              "prefixes": "\(current.keys.sorted().map(\.description))", "error": "\(error)",
            ])
        }
      }
    }
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      guard state.installed == state.wanted else { return [] }
      state.synced = true
      defer { state.syncWaiters.removeAll() }
      return Array(state.syncWaiters.values)
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Retries what an event could not finish (the datapath unreachable, a slow
  /// regeneration): stale prefixes unmapped, missing ones mapped behind the last event.
  func retry(ordering: PolicyOrdering, rereading: Bool = false) async {
    // An endpoint's or another node's pod's entry replaces a CIDR's on the same address, and
    // takes it along when it goes: now and then the datapath is read again.
    if rereading { state.withLock { $0.installed = nil } }
    let (target, done) = state.withLock { ($0.lastTarget, $0.installed == $0.wanted) }
    guard !done, let target else { return }
    await withGate { await removeStale() }
    await installAfterPeers(through: target, ordering: ordering)
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

  /// Unmaps the prefixes the datapath holds that are no longer wanted (under the gate).
  private func removeStale() async {
    guard let installed = await readInstalled() else { return }
    let stale = state.withLock { state in
      installed.filter { state.wanted[$0.key] == nil }.map(\.key).sorted()
    }
    guard !stale.isEmpty else { return }
    do {
      try await datapath.deleteCIDREntries(stale)
      state.withLock { state in for prefix in stale { state.installed?[prefix] = nil } }
      logger.info("CIDR prefixes unmapped", metadata: ["prefixes": "\(stale.map(\.description))"])
    } catch {
      logger.error(
        "cannot unmap CIDR prefixes; retrying",
        metadata: ["prefixes": "\(stale.map(\.description))", "error": "\(error)"])
    }
  }

  /// The datapath's CIDR-scope entries, read once.
  private func readInstalled() async -> [IPPrefix: NumericIdentity]? {
    if let installed = state.withLock({ $0.installed }) { return installed }
    do {
      let entries = try await datapath.ipcacheEntries().filter { CIDRIdentity.isCIDR($0.value) }
      return state.withLock { state in
        if state.installed == nil { state.installed = entries }
        return state.installed
      }
    } catch {
      logger.error("cannot read the datapath's ipcache; retrying", metadata: ["error": "\(error)"])
      return nil
    }
  }

  /// Runs `body` while no other datapath write of this component runs.
  private func withGate(_ body: () async -> Void) async {
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
    await body()
    let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
      guard !state.gateQueue.isEmpty else {
        state.gateHeld = false
        return nil
      }
      return state.gateQueue.removeFirst()
    }
    next?.resume()
  }
}
