import Logging
import Metrics
import Synchronization
import TesseraCore

/// Owns every endpoint's realised policy and the ipcache, and turns wanted
/// state into minimal backend changes.
///
/// Realisation is serialised per datapath: the kernel state of one endpoint is
/// changed by one caller at a time, and the recorded realised revision always
/// describes what the kernel holds.
public final class Datapath: Sendable {
  private struct State {
    var endpoints: [UInt64: DatapathEndpoint] = [:]
    /// Endpoints whose last realisation failed part way: the kernel may
    /// hold a mix of two revisions, so the next one rewrites everything.
    var unsettled: Set<UInt64> = []
  }

  private let backend: any DatapathBackend
  private let state: Mutex<State>
  /// Serialises backend calls; kernel operations are fast and never awaited.
  private let backendLock = Mutex(())
  private let logger: Logger

  /// Re-adopts whatever the backend kept from a previous run.
  public init(backend: any DatapathBackend, logger: Logger = Logger(label: "tessera.datapath"))
    throws(DatapathError)
  {
    self.backend = backend
    self.logger = logger
    let restored = try backend.restoreEndpoints()
    self.state = Mutex(
      State(endpoints: Dictionary(restored.map { ($0.id, $0) }, uniquingKeysWith: { $1 })))
    if !restored.isEmpty {
      logger.info(
        "re-adopted endpoints from the previous run", metadata: ["count": "\(restored.count)"])
    }
  }

  public var backendName: String { backend.name }

  /// The outcome of one realisation.
  public struct Realization: Sendable, Equatable {
    public var realizedRevision: UInt64
    public var entriesWritten: Int
    public var entriesDeleted: Int
  }

  /// Makes the endpoint's kernel state equal to `wanted` and records its revision.
  ///
  /// Only the difference is written: unchanged entries are not touched, so a
  /// regeneration with one new peer is one map write. The endpoint's own
  /// addresses are put in the ipcache with its identity.
  public func realize(_ wanted: DatapathEndpoint) throws(DatapathError) -> Realization {
    try backendLock.withLock { (_) throws(DatapathError) -> Realization in
      let previous = state.withLock { $0.endpoints[wanted.id] }
      if let previous, previous.policy.revision > wanted.policy.revision,
        previous.identity == wanted.identity,
        previous.ips == wanted.ips, previous.hostInterface == wanted.hostInterface
      {
        // An older computation arriving late must not roll the kernel back.
        return Realization(
          realizedRevision: previous.policy.revision, entriesWritten: 0, entriesDeleted: 0)
      }
      let unsettled = state.withLock { $0.unsettled.contains(wanted.id) }
      let change =
        unsettled
        ? Self.difference(from: nil, to: wanted) : Self.difference(from: previous, to: wanted)
      var ipcacheWritten = false
      do throws(DatapathError) {
        if previous == nil { try forgetInheritedFlows(of: wanted) }
        try backend.apply(change)
        DatapathMetrics.policyMapWrites.increment(by: change.upserts.count + change.deletes.count)

        var ipcacheUpserts = wanted.ips.map { IPCacheEntry(prefix: $0, identity: wanted.identity) }
        if let previous, previous.identity == wanted.identity, !unsettled {
          let known = Set(previous.ips)
          ipcacheUpserts.removeAll { known.contains($0.prefix) }
        }
        if !ipcacheUpserts.isEmpty {
          ipcacheWritten = true
          try backend.upsertIPCache(ipcacheUpserts)
          DatapathMetrics.ipcacheWrites.increment(by: ipcacheUpserts.count)
        }
        if let previous {
          let gone = Set(previous.ips).subtracting(wanted.ips)
          if !gone.isEmpty {
            try backend.deleteIPCache(Array(gone))
            try backend.forgetFlows(with: Array(gone))
            DatapathMetrics.ipcacheWrites.increment(by: gone.count)
          }
        }
      } catch {
        if previous == nil {
          removeFailedCreation(wanted, ipcacheWritten: ipcacheWritten, error: error)
        } else {
          state.withLock { _ = $0.unsettled.insert(wanted.id) }
        }
        throw error
      }
      state.withLock {
        $0.endpoints[wanted.id] = wanted
        $0.unsettled.remove(wanted.id)
      }
      return Realization(
        realizedRevision: wanted.policy.revision, entriesWritten: change.upserts.count,
        entriesDeleted: change.deletes.count)
    }
  }

  /// A first realisation failed: everything it may have created (pinned
  /// programs, tc filters, endpoint-map, policy, counters, conntrack and
  /// ipcache entries) is removed by endpoint id, so that a failed create
  /// leaves nothing behind. Called with the backend lock held.
  private func removeFailedCreation(
    _ wanted: DatapathEndpoint, ipcacheWritten: Bool, error: DatapathError
  ) {
    logger.warning(
      "first realisation of an endpoint failed; removing what it created",
      metadata: ["endpoint.id": "\(wanted.id)", "error": "\(error)"])
    do {
      try backend.removeEndpoint(wanted)
      if ipcacheWritten, !wanted.ips.isEmpty { try backend.deleteIPCache(wanted.ips) }
    } catch {
      logger.error(
        "cleanup after a failed realisation failed",
        metadata: ["endpoint.id": "\(wanted.id)", "error": "\(error)"])
    }
  }

  /// Removes the endpoint's programs, maps and ipcache entries. Returns whether it existed.
  public func removeEndpoint(id: UInt64) throws(DatapathError) -> Bool {
    try backendLock.withLock { (_) throws(DatapathError) -> Bool in
      guard let existing = state.withLock({ $0.endpoints[id] }) else { return false }
      // The addresses leave the ipcache before their flows are ended (in removeEndpoint):
      // a peer's packet in between opens a flow to an address that is nobody's, not the
      // departing pod's, and its policy judges it so.
      if !existing.ips.isEmpty {
        try backend.deleteIPCache(existing.ips)
        DatapathMetrics.ipcacheWrites.increment(by: existing.ips.count)
      }
      try backend.removeEndpoint(existing)
      state.withLock {
        $0.endpoints[id] = nil
        $0.unsettled.remove(id)
      }
      return true
    }
  }

  public func endpoint(id: UInt64) -> DatapathEndpoint? {
    state.withLock { $0.endpoints[id] }
  }

  public func endpoints() -> [DatapathEndpoint] {
    state.withLock { $0.endpoints.values.sorted { $0.id < $1.id } }
  }

  /// The entries read back from the backend's map for the endpoint.
  public func policyEntries(endpointID: UInt64) throws(DatapathError) -> [PolicyEntry] {
    try backendLock.withLock { (_) throws(DatapathError) in
      try backend.policyEntries(endpointID: endpointID)
    }
  }

  /// The entries in the endpoint's policy map, each with its packets and bytes.
  public func countedPolicyEntries(endpointID: UInt64) throws(DatapathError)
    -> [CountedPolicyEntry]
  {
    try backendLock.withLock { (_) throws(DatapathError) in
      try backend.countedPolicyEntries(endpointID: endpointID)
    }
  }

  public func upsertIPCache(_ entries: [IPCacheEntry]) throws(DatapathError) {
    try backendLock.withLock { (_) throws(DatapathError) in try backend.upsertIPCache(entries) }
    DatapathMetrics.ipcacheWrites.increment(by: entries.count)
  }

  /// Ends this node's flows with the addresses of a new endpoint that another node's pod
  /// held until now (host-local hands addresses out again; the ipcache still maps them to
  /// that pod's identity): the new pod must not answer through them. Before the endpoint's
  /// programs are attached; the caller holds `backendLock`. An address that was a local
  /// endpoint's lost its flows when that endpoint went.
  private func forgetInheritedFlows(of endpoint: DatapathEndpoint) throws(DatapathError) {
    var inherited: [IPPrefix] = []
    for address in endpoint.ips {
      guard let holder = try backend.ipcacheIdentity(of: address), holder.isAllocated else {
        continue
      }
      inherited.append(address)
    }
    if !inherited.isEmpty { try backend.forgetFlows(with: inherited) }
  }

  /// Unmaps addresses (another node's pods, nodes).
  ///
  /// Their tracked flows stay unless `endingFlows`: another node's entries also leave and
  /// come back when its store session restarts, and ending its pods' connections then
  /// would break those that policy admits one way only. With `endingFlows` (the addresses'
  /// holders released them: their pods were deleted) every endpoint's flows with one of
  /// them end too, as when a local endpoint goes, so the address's next holder inherits no
  /// connection; an address a local endpoint holds keeps its flows.
  public func deleteIPCache(_ prefixes: [IPPrefix], endingFlows: Bool = false)
    throws(DatapathError)
  {
    try backendLock.withLock { (_) throws(DatapathError) in
      try backend.deleteIPCache(prefixes)
      guard endingFlows else { return }
      let local = state.withLock { Set($0.endpoints.values.flatMap(\.ips)) }
      let released = prefixes.filter { !local.contains($0) }
      if !released.isEmpty { try backend.forgetFlows(with: released) }
    }
    DatapathMetrics.ipcacheWrites.increment(by: prefixes.count)
  }

  /// Maps CIDRs a policy names to their identities (``CIDRIdentity``), each only where the
  /// prefix holds no entry or another CIDR's: an endpoint's, the node's or another node's
  /// pod's address keeps its own identity (a policy naming it selects nothing there).
  public func upsertCIDREntries(_ entries: [IPCacheEntry]) throws(DatapathError) {
    let written = try backendLock.withLock { (_) throws(DatapathError) -> Int in
      let current = try currentIPCache()
      let yielding = entries.filter { current[$0.prefix].map(CIDRIdentity.isCIDR) ?? true }
      try backend.upsertIPCache(yielding)
      return yielding.count
    }
    DatapathMetrics.ipcacheWrites.increment(by: written)
  }

  /// Unmaps CIDRs, each only where the prefix still maps to a CIDR identity.
  public func deleteCIDREntries(_ prefixes: [IPPrefix]) throws(DatapathError) {
    let deleted = try backendLock.withLock { (_) throws(DatapathError) -> Int in
      let current = try currentIPCache()
      let owned = prefixes.filter { current[$0].map(CIDRIdentity.isCIDR) ?? false }
      try backend.deleteIPCache(owned)
      return owned.count
    }
    DatapathMetrics.ipcacheWrites.increment(by: deleted)
  }

  /// The ipcache by prefix (the caller holds `backendLock`).
  private func currentIPCache() throws(DatapathError) -> [IPPrefix: NumericIdentity] {
    Dictionary(
      try backend.ipcacheEntries().map { ($0.prefix, $0.identity) },
      uniquingKeysWith: { first, _ in first })
  }

  public func ipcacheEntries() throws(DatapathError) -> [IPCacheEntry] {
    try backendLock.withLock { (_) throws(DatapathError) in try backend.ipcacheEntries() }
  }

  public func conntrackEntries() throws(DatapathError) -> [ConntrackEntry] {
    try backendLock.withLock { (_) throws(DatapathError) in try backend.conntrackEntries() }
  }

  /// The conntrack table's capacity in entries; 0 for a backend without one.
  public var conntrackMaxEntries: UInt32 { backend.conntrackMaxEntries }

  public func counters(endpointID: UInt64) throws(DatapathError) -> EndpointCounters {
    guard endpoint(id: endpointID) != nil else {
      throw DatapathError(code: .notFound, message: "no endpoint \(endpointID) in the datapath")
    }
    return try backendLock.withLock { (_) throws(DatapathError) in
      try backend.counters(endpointID: endpointID)
    }
  }

  /// The backend change that turns `previous` into `wanted`.
  static func difference(from previous: DatapathEndpoint?, to wanted: DatapathEndpoint)
    -> EndpointChange
  {
    guard let previous else {
      return EndpointChange(
        endpoint: wanted, isNew: true, interfaceChanged: true, upserts: wanted.policy.entries,
        deletes: [])
    }
    let old = Dictionary(previous.policy.entries.map { ($0.key, $0) }, uniquingKeysWith: { $1 })
    let new = Dictionary(wanted.policy.entries.map { ($0.key, $0) }, uniquingKeysWith: { $1 })
    let upserts = wanted.policy.entries.filter { old[$0.key] != $0 }
    let deletes = previous.policy.entries.map(\.key).filter { new[$0] == nil }
    return EndpointChange(
      endpoint: wanted, isNew: false,
      interfaceChanged: previous.hostInterface != wanted.hostInterface,
      upserts: upserts, deletes: deletes)
  }
}

/// Kernel writes, counted so that what a change cost is observable: a pod
/// joining with an existing identity must cost ipcache writes only, never a
/// write to another endpoint's policy map.
enum DatapathMetrics {
  static let policyMapWrites = Counter(label: "tessera_datapath_policy_map_writes_total")
  static let ipcacheWrites = Counter(label: "tessera_datapath_ipcache_writes_total")
}
