import Foundation
import Logging
import Synchronization
import TesseraCore
import TesseraEtcd
import TesseraRuntime

/// The distributed identity store: identities shared by every node through
/// etcd (docs/architecture.md §3), in Cilium's kvstore layout.
///
/// Keys under the prefix:
/// - `id/<ID>` → canonical labels: the identity (no lease; outlives nodes).
/// - `labels/<canonical labels>` → ID: created in the same transaction as
///   `id/<ID>`, so a label set can never get two IDs and an ID never two label sets.
/// - `value/<canonical labels>/<node>` → ID: the node references the identity;
///   bound to the node's lease, so a node that dies drops its references.
///
/// A new identity is one transaction: both keys absent → put both and the
/// reference. Reusing a known identity is one transaction: `id/<ID>` still
/// holds the labels → put the reference. Garbage collection deletes an identity
/// only if, in the same transaction, it is unmodified since it was first seen
/// unreferenced and no reference key exists: a concurrent reuse always wins.
///
/// How many endpoints of this replica's own node hold an identity is counted
/// locally (``NodeReferenceTable``); a cached identity costs no etcd call.
/// Other nodes, which call the identity service over the network and may reach
/// any replica, have their counts in etcd itself (`value/<labels>/<node>` →
/// `<ID> <count>`, guarded by its revision), so any replica takes or releases them
/// and a replica's death loses none. Those keys are bound to the node's own lease
/// (`nodes/<node>`), which the node renews through any replica (`KeepAliveNode`):
/// a node that dies for good drops its references after the TTL, as a node with a
/// replica of its own does. While etcd is unreachable, identities
/// known here still resolve and even a first local reference to a known identity
/// is accepted (written to etcd when it returns); only a brand-new label set fails,
/// retryably.
public final class EtcdIdentityStore: IdentityStore {
  public struct Configuration: Sendable {
    /// Key prefix shared by every node of one cluster.
    public var prefix: String
    /// Seconds a node's references outlive the node.
    public var leaseTTLSeconds: Int64
    public var clusterID: UInt32
    /// Random IDs tried before an allocation gives up under contention.
    public var allocationAttempts: Int
    /// This node's reference counts; `nil` keeps them in memory (tests).
    public var nodeStatePath: String?
    /// The node this replica runs on: its references are counted in `nodeStatePath`.
    /// Any other node's are counted in etcd, so that every replica serving it shares
    /// one count. `nil`: every node is counted locally (one replica per node).
    public var localNode: String?

    public init(
      prefix: String = "/tessera/identities", leaseTTLSeconds: Int64 = 30, clusterID: UInt32 = 0,
      allocationAttempts: Int = 32, nodeStatePath: String? = nil, localNode: String? = nil
    ) {
      self.prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
      self.leaseTTLSeconds = leaseTTLSeconds
      self.clusterID = clusterID
      self.allocationAttempts = allocationAttempts
      self.nodeStatePath = nodeStatePath
      self.localNode = localNode
    }
  }

  private struct CachedIdentity: Sendable {
    var canonicalLabels: String
    var modRevision: Int64
  }

  private struct State: Sendable {
    var byID: [UInt32: CachedIdentity] = [:]
    var byLabels: [String: UInt32] = [:]
    var loaded = false
    var lease: Int64 = 0
    /// Unreferenced identities seen by the last GC round: ID → (mod revision, first seen).
    var garbageCandidates: [UInt32: (modRevision: Int64, since: Int64)] = [:]
    var reportedConflicts: Set<UInt32> = []
    /// Label sets this replica is creating right now: their watch event may
    /// overtake the transaction's answer, and the allocation reports them itself.
    var creating: Set<String> = []

    mutating func remember(_ id: UInt32, _ labels: String, modRevision: Int64) -> Bool {
      let previous = byID[id]
      if let previous, previous.canonicalLabels != labels {
        byLabels[previous.canonicalLabels] = nil
      }
      byID[id] = CachedIdentity(canonicalLabels: labels, modRevision: modRevision)
      byLabels[labels] = id
      return previous?.canonicalLabels != labels
    }

    mutating func forget(_ id: UInt32) -> CachedIdentity? {
      guard let previous = byID.removeValue(forKey: id) else { return nil }
      if byLabels[previous.canonicalLabels] == id { byLabels[previous.canonicalLabels] = nil }
      return previous
    }
  }

  public let client: EtcdClient
  public let configuration: Configuration
  private let range: ClosedRange<UInt32>
  private let references: NodeReferenceTable
  private let state = Mutex(State())
  private let keyLock = KeyedLock<String>()
  private let operationLeaseState = Mutex<(id: Int64, expires: ContinuousClock.Instant)?>(nil)
  /// Leases of nodes served over the network, as last read or granted here.
  private let nodeLeases = Mutex<[String: Int64]>([:])
  private let reconcileNeeded = Wakeup()
  private let logger: Logger

  public init(
    client: EtcdClient, configuration: Configuration = Configuration(),
    logger: Logger = Logger(label: "tessera.identity.etcd")
  )
    throws(IdentityError)
  {
    self.client = client
    self.configuration = configuration
    self.logger = logger
    range = NumericIdentity.allocationRange(clusterID: configuration.clusterID)
    do {
      references = try NodeReferenceTable(path: configuration.nodeStatePath)
    } catch {
      throw IdentityError(
        code: .storeUnavailable,
        message: "cannot open node reference table \(configuration.nodeStatePath ?? ":memory:")",
        cause: error)
    }
  }

  /// True once the cache is loaded and a lease is held: new identities can be made.
  public var isReady: Bool { state.withLock { $0.loaded && $0.lease != 0 } }

  /// The lease this replica's references are bound to (0 while it has none).
  public var lease: Int64 { state.withLock { $0.lease } }

  public var backendDescription: String {
    "etcd:\(client.endpointsDescription) (prefix \(configuration.prefix))"
  }
  public var isShared: Bool { true }

  // MARK: - Keys

  private func identityKey(_ id: UInt32) -> String { "\(configuration.prefix)/id/\(id)" }
  private func labelsKey(_ labels: String) -> String { "\(configuration.prefix)/labels/\(labels)" }
  private func referencePrefix(_ labels: String) -> String {
    "\(configuration.prefix)/value/\(labels)/"
  }
  private func referenceKey(_ labels: String, _ node: String) -> String {
    referencePrefix(labels) + node
  }

  /// `value/<labels>/<node>` → (labels, node).
  private func parseReferenceKey(_ key: Data) -> (labels: String, node: String)? {
    let text = String(decoding: key, as: UTF8.self)
    let prefix = "\(configuration.prefix)/value/"
    guard text.hasPrefix(prefix), let slash = text.lastIndex(of: "/") else { return nil }
    let body = text[text.index(text.startIndex, offsetBy: prefix.count)...]
    guard slash > body.startIndex else { return nil }
    return (String(text[body.startIndex..<slash]), String(text[text.index(after: slash)...]))
  }

  // MARK: - IdentityStore

  public func allocate(labels: LabelSet, node: String) async throws(IdentityError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    try await allocate(labels: labels, node: node, requestID: "")
  }

  public func allocate(labels: LabelSet, node: String, requestID: String)
    async throws(IdentityError) -> (identity: SecurityIdentity, isNew: Bool)
  {
    try Self.validate(node: node)
    let canonical = labels.canonicalKey
    if countsInEtcd(node) {
      let operation = try await operationRecord(node: node, requestID: requestID)
      return try await keyLock.withLock(canonical) {
        () async throws(IdentityError) -> (identity: SecurityIdentity, isNew: Bool) in
        let (id, isNew) = try await takeSharedReference(
          canonical: canonical, node: node, operation: operation)
        return (SecurityIdentity(id: NumericIdentity(id), labels: labels), isNew)
      }
    }
    let key = NodeReferenceTable.Key(canonicalLabels: canonical, node: node)
    return try await keyLock.withLock(canonical) {
      () async throws(IdentityError) -> (identity: SecurityIdentity, isNew: Bool) in
      if var row = references.row(key), row.count > 0 {
        row.count += 1
        try saveReference(key, row)
        return (SecurityIdentity(id: NumericIdentity(row.identity), labels: labels), false)
      }
      let (id, isNew) = try await takeReference(canonical: canonical, node: node)
      return (SecurityIdentity(id: NumericIdentity(id), labels: labels), isNew)
    }
  }

  /// The first reference of `node` to `canonical`: reuses the cluster's identity or creates one.
  private func takeReference(canonical: String, node: String) async throws(IdentityError) -> (
    UInt32, Bool
  ) {
    let key = NodeReferenceTable.Key(canonicalLabels: canonical, node: node)
    let (lease, loaded) = state.withLock { ($0.lease, $0.loaded) }
    for _ in 0..<configuration.allocationAttempts {
      if let id = state.withLock({ $0.byLabels[canonical] }) {
        guard lease != 0 else {
          // No lease yet (etcd unreachable since start): remember it, write it when etcd answers.
          try saveReference(key, .init(identity: id, count: 1, synced: false))
          reconcileNeeded.signal()
          return (id, false)
        }
        do {
          let response = try await client.txn(
            Etcd.txn(
              when: [Etcd.holds(identityKey(id), canonical)],
              then: [Etcd.put(referenceKey(canonical, node), "\(id)", lease: lease)]))
          if response.succeeded {
            try saveReference(key, .init(identity: id, count: 1, synced: true))
            return (id, false)
          }
          // Deleted or replaced since we cached it: look again.
          _ = state.withLock { $0.forget(id) }
          continue
        } catch let error as EtcdError where error.code == .unavailable {
          try saveReference(key, .init(identity: id, count: 1, synced: false))
          reconcileNeeded.signal()
          logger.warning(
            "etcd unreachable: identity taken from the cache, reference written later",
            metadata: ["identity": "\(id)"])
          return (id, false)
        } catch let error as IdentityError {
          throw error
        } catch {
          throw IdentityError(
            code: .storeUnavailable, message: "etcd refused a reference to identity \(id)",
            cause: error)
        }
      }
      guard loaded, lease != 0 else {
        throw IdentityError(
          code: .storeUnavailable,
          message: "etcd at \(client.endpointsDescription) has not been reached yet; retry")
      }
      guard let id = randomFreeID() else {
        throw IdentityError(code: .exhausted, message: "no free identity left in \(range)")
      }
      let response: EtcdTransactionResult
      state.withLock { _ = $0.creating.insert(canonical) }
      defer { state.withLock { _ = $0.creating.remove(canonical) } }
      do {
        response = try await client.txn(
          Etcd.txn(
            when: [Etcd.absent(identityKey(id)), Etcd.absent(labelsKey(canonical))],
            then: [
              Etcd.put(identityKey(id), canonical), Etcd.put(labelsKey(canonical), "\(id)"),
              Etcd.put(referenceKey(canonical, node), "\(id)", lease: lease),
            ],
            else: [Etcd.get(labelsKey(canonical)), Etcd.get(identityKey(id))]))
      } catch {
        throw IdentityError(
          code: .storeUnavailable, message: "etcd could not create an identity for \(canonical)",
          cause: error)
      }
      if response.succeeded {
        _ = state.withLock { $0.remember(id, canonical, modRevision: response.revision) }
        try saveReference(key, .init(identity: id, count: 1, synced: true))
        return (id, true)
      }
      // Someone else created this label set (take theirs) or took this ID (try another).
      if let existing = response.responses.first?.kvs.first,
        let existingID = UInt32(String(decoding: existing.value, as: UTF8.self))
      {
        _ = state.withLock { $0.remember(existingID, canonical, modRevision: existing.modRevision) }
      }
      if response.responses.count > 1, let taken = response.responses[1].kvs.first {
        _ = state.withLock {
          $0.remember(
            id, String(decoding: taken.value, as: UTF8.self), modRevision: taken.modRevision)
        }
      }
    }
    throw IdentityError(
      code: .storeUnavailable,
      message:
        "identity allocation for \(canonical) lost \(configuration.allocationAttempts) races; retry"
    )
  }

  private func randomFreeID() -> UInt32? {
    state.withLock { state in
      let size = Int(range.upperBound - range.lowerBound) + 1
      guard state.byID.count < size else { return nil }
      for _ in 0..<64 {
        let candidate = UInt32.random(in: range)
        if state.byID[candidate] == nil { return candidate }
      }
      return range.first { state.byID[$0] == nil }
    }
  }

  public func release(id: NumericIdentity, node: String) async throws(IdentityError)
    -> IdentityRelease
  {
    try await release(id: id, node: node, requestID: "")
  }

  public func release(id: NumericIdentity, node: String, requestID: String)
    async throws(IdentityError) -> IdentityRelease
  {
    if countsInEtcd(node) {
      return try await releaseShared(
        id: id, node: node, operation: try await operationRecord(node: node, requestID: requestID))
    }
    // The cache names the row directly; a scan is only needed for an identity it no longer knows.
    var direct: NodeReferenceTable.Key?
    if let cached = state.withLock({ $0.byID[id.rawValue] }) {
      let key = NodeReferenceTable.Key(canonicalLabels: cached.canonicalLabels, node: node)
      if let row = references.row(key), row.identity == id.rawValue, row.count > 0 { direct = key }
    }
    guard
      let key = direct
        ?? references.rows(identity: id.rawValue).first(where: {
          $0.key.node == node && $0.value.count > 0
        })?.key
    else {
      if state.withLock({ $0.byID[id.rawValue] }) == nil {
        throw IdentityError(code: .notFound, message: "no identity \(id)")
      }
      return IdentityRelease(released: false, remainingReferences: 0)
    }
    return try await keyLock.withLock(key.canonicalLabels) {
      () async throws(IdentityError) -> IdentityRelease in
      guard var row = references.row(key), row.count > 0 else {
        return IdentityRelease(released: false, remainingReferences: 0)
      }
      row.count -= 1
      if row.count > 0 {
        try saveReference(key, row)
        return IdentityRelease(released: true, remainingReferences: row.count)
      }
      row.synced = false
      try saveReference(key, row)
      await syncReference(key)
      return IdentityRelease(released: true, remainingReferences: 0)
    }
  }

  public func rollback(identity: SecurityIdentity, node: String, wasNew: Bool)
    async throws(IdentityError)
  {
    _ = try await release(id: identity.id, node: node)
    guard wasNew else { return }
    let canonical = identity.labels.canonicalKey
    // Delete it at once unless someone else took it meanwhile; otherwise GC will.
    let response = try? await client.txn(
      Etcd.txn(
        when: [
          Etcd.holds(identityKey(identity.id.rawValue), canonical),
          Etcd.noneUnder(referencePrefix(canonical)),
        ],
        then: [Etcd.delete(identityKey(identity.id.rawValue)), Etcd.delete(labelsKey(canonical))]))
    // The watch reports the deletion, like any other.
    _ = response
  }

  public func syncReferences(node: String, held: [NumericIdentity: Int]) async throws(IdentityError)
    -> ReferenceSync
  {
    try Self.validate(node: node)
    if countsInEtcd(node) { return try await syncSharedReferences(node: node, held: held) }
    var sync = ReferenceSync()
    var keys: [NodeReferenceTable.Key] = []
    var wanted: [NodeReferenceTable.Key: (id: UInt32, count: Int)] = [:]
    for (id, count) in held where count > 0 {
      guard let cached = state.withLock({ $0.byID[id.rawValue] }) else {
        sync.missing.append(id)
        continue
      }
      wanted[.init(canonicalLabels: cached.canonicalLabels, node: node)] = (id.rawValue, count)
    }
    for (key, row) in references.all() where key.node == node && wanted[key] == nil && row.count > 0
    { keys.append(key) }
    keys += wanted.keys
    for key in keys {
      try await keyLock.withLock(key.canonicalLabels) { () async throws(IdentityError) in
        let row = references.row(key)
        let have = row?.count ?? 0
        let count = wanted[key]?.count ?? 0
        guard let id = wanted[key]?.id ?? row?.identity else { return }
        guard count != have || row?.identity != id else { return }
        if count > have { sync.added += count - have } else { sync.dropped += have - count }
        // Unsynced: the reconciler writes (or, at zero, deletes) the reference key.
        try saveReference(key, .init(identity: id, count: count, synced: false))
      }
    }
    reconcileNeeded.signal()
    sync.missing.sort()
    return sync
  }

  public func identity(id: NumericIdentity) async throws(IdentityError) -> StoredIdentity? {
    guard let cached = state.withLock({ $0.byID[id.rawValue] }) else { return nil }
    return try await stored(id: id.rawValue, canonical: cached.canonicalLabels)
  }

  public func identity(labels: LabelSet) async throws(IdentityError) -> StoredIdentity? {
    let canonical = labels.canonicalKey
    guard let id = state.withLock({ $0.byLabels[canonical] }) else { return nil }
    return try await stored(id: id, canonical: canonical)
  }

  private func stored(id: UInt32, canonical: String) async throws(IdentityError) -> StoredIdentity {
    var nodes: [String: Int] = [:]
    for kv in (try? await client.rangeAll(prefix: referencePrefix(canonical)).kvs) ?? [] {
      if let node = parseReferenceKey(kv.key)?.node { nodes[node] = Self.referenceCount(kv.value) }
    }
    return StoredIdentity(
      identity: SecurityIdentity(id: NumericIdentity(id), labels: try Self.labels(canonical)),
      references: referenceCounts(canonical: canonical, remoteNodes: nodes),
      createdAtMilliseconds: 0)
  }

  /// Counts are known for this replica's node and for nodes counted in etcd; another
  /// replica's own node's key says only that it holds one or more.
  private func referenceCounts(
    canonical: String, remoteNodes: [String: Int], local: [String: [String: Int]]? = nil
  ) -> [String: Int] {
    var counts = remoteNodes
    // A released row (count 0) whose key is not deleted yet hides that key.
    for (node, count) in (local ?? localCounts())[canonical] ?? [:] {
      counts[node] = count > 0 ? count : nil
    }
    return counts
  }

  /// This replica's counts by label set, then node, read once for a whole listing.
  private func localCounts() -> [String: [String: Int]] {
    var counts: [String: [String: Int]] = [:]
    for (key, row) in references.all() {
      counts[key.canonicalLabels, default: [:]][key.node] = row.count
    }
    return counts
  }

  public func identities() async throws(IdentityError) -> [StoredIdentity] {
    var nodesByLabels: [String: [String: Int]] = [:]
    if let referenceKeys = try? await client.rangeAll(prefix: "\(configuration.prefix)/value/").kvs
    {
      for kv in referenceKeys {
        if let (labels, node) = parseReferenceKey(kv.key) {
          nodesByLabels[labels, default: [:]][node] = Self.referenceCount(kv.value)
        }
      }
    }
    let cached = state.withLock { $0.byID }
    let local = localCounts()
    var result: [StoredIdentity] = []
    for (id, identity) in cached.sorted(by: { $0.key < $1.key }) {
      guard let labels = try? Self.labels(identity.canonicalLabels) else { continue }
      result.append(
        StoredIdentity(
          identity: SecurityIdentity(id: NumericIdentity(id), labels: labels),
          references: referenceCounts(
            canonical: identity.canonicalLabels,
            remoteNodes: nodesByLabels[identity.canonicalLabels] ?? [:], local: local),
          createdAtMilliseconds: 0))
    }
    return result
  }

  public func collectGarbage(gracePeriodMilliseconds: Int64) async throws(IdentityError)
    -> [SecurityIdentity]
  {
    let masters: [EtcdKeyValue]
    var referenced: Set<String> = []
    do {
      masters = try await client.rangeAll(prefix: "\(configuration.prefix)/id/").kvs
      for kv in try await client.rangeAll(prefix: "\(configuration.prefix)/value/", keysOnly: true)
        .kvs
      {
        if let (labels, _) = parseReferenceKey(kv.key) { referenced.insert(labels) }
      }
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "identity garbage collection could not read etcd",
        cause: error)
    }
    let now = Int64(Date().timeIntervalSince1970 * 1000)
    var doomed: [(id: UInt32, canonical: String, modRevision: Int64)] = []
    state.withLock { state in
      var candidates: [UInt32: (modRevision: Int64, since: Int64)] = [:]
      for kv in masters {
        guard let id = idFromIdentityKey(kv.key) else { continue }
        let canonical = String(decoding: kv.value, as: UTF8.self)
        guard !referenced.contains(canonical) else { continue }
        if let seen = state.garbageCandidates[id], seen.modRevision == kv.modRevision {
          if now - seen.since >= gracePeriodMilliseconds {
            doomed.append((id, canonical, kv.modRevision))
          }
          candidates[id] = seen
        } else {
          candidates[id] = (kv.modRevision, now)
        }
      }
      state.garbageCandidates = candidates
    }
    var deleted: [SecurityIdentity] = []
    for (id, canonical, modRevision) in doomed {
      // Second round: still unmodified and still unreferenced, atomically with the delete.
      let response = try? await client.txn(
        Etcd.txn(
          when: [
            Etcd.modifiedAt(identityKey(id), modRevision),
            Etcd.noneUnder(referencePrefix(canonical)),
          ],
          then: [Etcd.delete(identityKey(id)), Etcd.delete(labelsKey(canonical))]))
      guard response?.succeeded == true else { continue }
      // The cache forgets it when the watch reports the delete, as on every other node.
      state.withLock { $0.garbageCandidates[id] = nil }
      if let labels = try? Self.labels(canonical) {
        deleted.append(SecurityIdentity(id: NumericIdentity(id), labels: labels))
      }
    }
    return deleted
  }

  private func idFromIdentityKey(_ key: Data) -> UInt32? {
    let text = String(decoding: key, as: UTF8.self)
    let prefix = "\(configuration.prefix)/id/"
    guard text.hasPrefix(prefix) else { return nil }
    return UInt32(text.dropFirst(prefix.count))
  }

  // MARK: - Following etcd

  /// Holds the lease, mirrors `id/` into the cache and writes pending references,
  /// reconnecting and resyncing by itself until cancelled.
  public func run(
    onChange:
      @escaping @Sendable (_ added: [SecurityIdentity], _ deleted: [SecurityIdentity]) async -> Void
  ) async throws {
    let session = EtcdSession(
      client: client, prefix: "\(configuration.prefix)/id/",
      leaseTTLSeconds: configuration.leaseTTLSeconds, logger: logger)
    try await session.run(
      .init(
        lease: { try await self.establishLease() },
        load: { _ in try await self.reload(onChange: onChange) },
        apply: { events in await self.apply(events, onChange: onChange) },
        loops: [{ try await self.reconcileLoop() }],
        leaseLost: { self.state.withLock { $0.lease = 0 } }))
  }

  /// Reuses the lease this node held before a restart if etcd still has it;
  /// otherwise grants a new one and marks every reference for rewriting.
  private func establishLease() async throws -> Int64 {
    if let lease = state.withLock({ $0.lease == 0 ? nil : $0.lease }) { return lease }
    if let saved = try references.setting("lease"), saved != 0,
      try await client.leaseTimeToLive(saved) > 0
    {
      state.withLock { $0.lease = saved }
      logger.info("reusing etcd lease", metadata: ["lease": "\(String(saved, radix: 16))"])
      reconcileNeeded.signal()
      return saved
    }
    let lease = try await client.grantLease(ttl: configuration.leaseTTLSeconds)
    try references.markAllUnsynced()
    try references.setSetting("lease", lease)
    state.withLock { $0.lease = lease }
    logger.info(
      "granted etcd lease",
      metadata: ["lease": "\(String(lease, radix: 16))", "ttl": "\(configuration.leaseTTLSeconds)"])
    return lease
  }

  /// Replaces the cache with etcd's `id/` keys; reports the difference. Returns the revision read at.
  private func reload(
    onChange: @escaping @Sendable ([SecurityIdentity], [SecurityIdentity]) async -> Void
  ) async throws -> Int64 {
    let (kvs, revision) = try await client.rangeAll(prefix: "\(configuration.prefix)/id/")
    var fresh: [UInt32: CachedIdentity] = [:]
    for kv in kvs {
      if let id = idFromIdentityKey(kv.key) {
        fresh[id] = CachedIdentity(
          canonicalLabels: String(decoding: kv.value, as: UTF8.self), modRevision: kv.modRevision)
      }
    }
    let (added, deleted) = state.withLock { state -> ([SecurityIdentity], [SecurityIdentity]) in
      let old = state.byID
      state.byID = fresh
      state.byLabels = Dictionary(
        fresh.map { ($0.value.canonicalLabels, $0.key) }, uniquingKeysWith: { first, _ in first })
      state.loaded = true
      let added = fresh.filter { old[$0.key]?.canonicalLabels != $0.value.canonicalLabels }
      let deleted = old.filter { fresh[$0.key]?.canonicalLabels != $0.value.canonicalLabels }
      return (Self.identities(added), Self.identities(deleted))
    }
    logger.info(
      "identity cache loaded from etcd",
      metadata: ["identities": "\(fresh.count)", "revision": "\(revision)"])
    if !added.isEmpty || !deleted.isEmpty { await onChange(added, deleted) }
    return revision
  }

  private func apply(
    _ events: [EtcdEvent],
    onChange: @Sendable ([SecurityIdentity], [SecurityIdentity]) async -> Void
  ) async {
    var added: [SecurityIdentity] = []
    var deleted: [SecurityIdentity] = []
    state.withLock { state in
      for event in events {
        guard let id = idFromIdentityKey(event.kv.key) else { continue }
        switch event.kind {
        case .put:
          let canonical = String(decoding: event.kv.value, as: UTF8.self)
          if state.remember(id, canonical, modRevision: event.kv.modRevision),
            !state.creating.contains(canonical),
            let labels = try? Self.labels(canonical)
          {
            added.append(SecurityIdentity(id: NumericIdentity(id), labels: labels))
          }
        case .delete:
          if let old = state.forget(id), let labels = try? Self.labels(old.canonicalLabels) {
            deleted.append(SecurityIdentity(id: NumericIdentity(id), labels: labels))
          }
        }
      }
    }
    if !added.isEmpty || !deleted.isEmpty { await onChange(added, deleted) }
  }

  /// Writes references that etcd does not have yet (or deletes released ones),
  /// whenever asked and every two seconds.
  private func reconcileLoop() async throws {
    while true {
      for (key, row) in references.all() where !row.synced {
        await keyLock.withLock(key.canonicalLabels) { await syncReference(key) }
      }
      await reconcileNeeded.wait(timeout: .seconds(2))
      try Task.checkCancellation()
    }
  }

  /// Makes etcd match one local row. Call with the row's key lock held.
  private func syncReference(_ key: NodeReferenceTable.Key) async {
    guard let row = references.row(key), !row.synced else { return }
    let (lease, cached) = state.withLock { ($0.lease, $0.byID[row.identity]) }
    guard lease != 0 else { return }
    let reference = referenceKey(key.canonicalLabels, key.node)
    do {
      if row.count == 0 {
        try await client.delete(reference)
        try references.set(key, nil)
        return
      }
      var response = try await client.txn(
        Etcd.txn(
          when: [Etcd.holds(identityKey(row.identity), key.canonicalLabels)],
          then: [Etcd.put(reference, "\(row.identity)", lease: lease)]))
      if !response.succeeded {
        // The identity was collected while etcd did not know we held it: bring it back under the same number.
        response = try await client.txn(
          Etcd.txn(
            when: [
              Etcd.absent(identityKey(row.identity)), Etcd.absent(labelsKey(key.canonicalLabels)),
            ],
            then: [
              Etcd.put(identityKey(row.identity), key.canonicalLabels),
              Etcd.put(labelsKey(key.canonicalLabels), "\(row.identity)"),
              Etcd.put(reference, "\(row.identity)", lease: lease),
            ]))
        if response.succeeded {
          logger.warning(
            "identity re-created in etcd for endpoints that still hold it",
            metadata: ["identity": "\(row.identity)"])
        }
      }
      if response.succeeded {
        var synced = row
        synced.synced = true
        try references.set(key, synced)
        _ = cached
      } else if state.withLock({ $0.reportedConflicts.insert(row.identity).inserted }) {
        logger.error(
          "identity number now belongs to other labels or the labels to another number; endpoints holding it must be relabelled",
          metadata: ["identity": "\(row.identity)", "labels": "\(key.canonicalLabels)"])
      }
    } catch {
      logger.debug(
        "reference not written yet", metadata: ["identity": "\(row.identity)", "error": "\(error)"])
    }
  }

  // MARK: - References counted in etcd (nodes served over the network)

  /// True when `node`'s references are counted in etcd rather than in this replica's table.
  private func countsInEtcd(_ node: String) -> Bool {
    configuration.localNode.map { $0 != node } ?? false
  }

  /// `<ID>` (one reference, or a locally counted node's key) or `<ID> <count>`.
  static func referenceCount(_ value: Data) -> Int {
    let fields = String(decoding: value, as: UTF8.self).split(separator: " ")
    return fields.count > 1 ? Int(fields[1]) ?? 1 : 1
  }

  /// One more reference of `node` to `canonical`, counted in etcd: a compare-and-swap
  /// on the reference key's revision, so replicas serving the same node never lose
  /// an update. Creates the identity when the cluster has none for these labels.
  /// Call with the labels' key lock held.
  private func takeSharedReference(
    canonical: String, node: String, operation: OperationRecord?
  ) async throws(IdentityError) -> (UInt32, Bool) {
    let reference = referenceKey(canonical, node)
    // A retried call whose first attempt was applied: its answer, recorded with it.
    func replayed(_ response: EtcdTransactionResult) -> (UInt32, Bool)? {
      guard operation != nil, let kv = response.responses.last?.kvs.first else { return nil }
      let fields = String(decoding: kv.value, as: UTF8.self).split(separator: " ")
      guard fields.count == 2, let id = UInt32(fields[0]) else { return nil }
      return (id, fields[1] == "1")
    }
    // What the last failed transaction read: the reference key (absent: nil) and its revision.
    var current: (count: Int, modRevision: Int64)?
    var lease = try await nodeLease(node).id
    for _ in 0..<configuration.allocationAttempts {
      let loaded = state.withLock { $0.loaded }
      guard let id = state.withLock({ $0.byLabels[canonical] }) else {
        guard loaded else {
          throw IdentityError(
            code: .storeUnavailable,
            message: "etcd at \(client.endpointsDescription) has not been read yet; retry")
        }
        guard let id = randomFreeID() else {
          throw IdentityError(code: .exhausted, message: "no free identity left in \(range)")
        }
        state.withLock { _ = $0.creating.insert(canonical) }
        defer { state.withLock { _ = $0.creating.remove(canonical) } }
        let create = Etcd.txn(
          when: [Etcd.absent(identityKey(id)), Etcd.absent(labelsKey(canonical))]
            + (operation?.unapplied ?? []),
          then: [
            Etcd.put(identityKey(id), canonical), Etcd.put(labelsKey(canonical), "\(id)"),
            Etcd.put(reference, "\(id) 1", lease: lease),
          ] + (operation?.record("\(id) 1") ?? []),
          else: [Etcd.get(labelsKey(canonical)), Etcd.get(identityKey(id))]
            + (operation?.read ?? []))
        guard let response = try await nodeTxn(node, &lease, canonical, create) else { continue }
        if response.succeeded {
          _ = state.withLock { $0.remember(id, canonical, modRevision: response.revision) }
          return (id, true)
        }
        if let answer = replayed(response) { return answer }
        if let existing = response.responses.first?.kvs.first,
          let existingID = UInt32(String(decoding: existing.value, as: UTF8.self))
        {
          _ = state.withLock {
            $0.remember(existingID, canonical, modRevision: existing.modRevision)
          }
        }
        if response.responses.count > 1, let taken = response.responses[1].kvs.first {
          _ = state.withLock {
            $0.remember(
              id, String(decoding: taken.value, as: UTF8.self), modRevision: taken.modRevision)
          }
        }
        continue
      }
      let guardReference =
        current.map { Etcd.modifiedAt(reference, $0.modRevision) } ?? Etcd.absent(reference)
      let increment = Etcd.txn(
        when: [Etcd.holds(identityKey(id), canonical), guardReference]
          + (operation?.unapplied ?? []),
        then: [Etcd.put(reference, "\(id) \((current?.count ?? 0) + 1)", lease: lease)]
          + (operation?.record("\(id) 0") ?? []),
        else: [Etcd.get(reference), Etcd.get(identityKey(id))] + (operation?.read ?? []))
      guard let response = try await nodeTxn(node, &lease, canonical, increment) else {
        // The node's lease expired with its references: count from nothing.
        current = nil
        continue
      }
      if response.succeeded { return (id, false) }
      if let answer = replayed(response) { return answer }
      let identity = response.responses.count > 1 ? response.responses[1].kvs.first : nil
      if identity.map({ String(decoding: $0.value, as: UTF8.self) }) != canonical {
        // Deleted or replaced since we cached it: look again.
        _ = state.withLock { $0.forget(id) }
      }
      current = response.responses.first?.kvs.first.map {
        (count: Self.referenceCount($0.value), modRevision: $0.modRevision)
      }
    }
    throw IdentityError(
      code: .storeUnavailable,
      message:
        "reference of \(node) to \(canonical) lost \(configuration.allocationAttempts) races; retry"
    )
  }

  /// One reference fewer of `node` to `id`, counted in etcd (the key goes with the last one).
  private func releaseShared(id: NumericIdentity, node: String, operation: OperationRecord?)
    async throws(IdentityError) -> IdentityRelease
  {
    func replayed(_ response: EtcdTransactionResult) -> IdentityRelease? {
      guard operation != nil, response.responses.count > 1,
        let kv = response.responses.last?.kvs.first
      else { return nil }
      let fields = String(decoding: kv.value, as: UTF8.self).split(separator: " ")
      guard fields.count == 2, let left = Int(fields[1]) else { return nil }
      return IdentityRelease(released: fields[0] == "1", remainingReferences: left)
    }
    guard let canonical = state.withLock({ $0.byID[id.rawValue]?.canonicalLabels }) else {
      throw IdentityError(code: .notFound, message: "no identity \(id)")
    }
    let reference = referenceKey(canonical, node)
    var lease = try await nodeLease(node).id
    return try await keyLock.withLock(canonical) {
      () async throws(IdentityError) -> IdentityRelease in
      var read = try await sharedTxn(
        Etcd.txn(when: [], then: [Etcd.get(reference)] + (operation?.read ?? [])), canonical)
      for _ in 0..<configuration.allocationAttempts {
        if let answer = replayed(read) { return answer }
        guard let kv = read.responses.first?.kvs.first,
          String(decoding: kv.value, as: UTF8.self).split(separator: " ").first.map(String.init)
            == "\(id.rawValue)"
        else { return IdentityRelease(released: false, remainingReferences: 0) }
        let left = Self.referenceCount(kv.value) - 1
        let decrement = Etcd.txn(
          when: [Etcd.modifiedAt(reference, kv.modRevision)] + (operation?.unapplied ?? []),
          then: [
            left > 0
              ? Etcd.put(reference, "\(id.rawValue) \(left)", lease: lease)
              : Etcd.delete(reference)
          ] + (operation?.record("1 \(left)") ?? []),
          else: [Etcd.get(reference)] + (operation?.read ?? []))
        guard let answer = try await nodeTxn(node, &lease, canonical, decrement) else {
          // The lease expired with the reference: nothing left to release.
          return IdentityRelease(released: false, remainingReferences: 0)
        }
        read = answer
        if read.succeeded { return IdentityRelease(released: true, remainingReferences: left) }
      }
      throw IdentityError(
        code: .storeUnavailable,
        message: "release of \(id) by \(node) lost \(configuration.allocationAttempts) races; retry"
      )
    }
  }

  /// A call's answer, written in the transaction that applies it, under a short lease
  /// of its own: `ops/<node>/<request id>`. A retry of the call (gRPC retries on
  /// UNAVAILABLE, on whichever replica) finds it and answers the same without applying
  /// the call again.
  struct OperationRecord {
    var key: String
    var lease: Int64
    var unapplied: [EtcdCompare] { [Etcd.absent(key)] }
    var read: [EtcdOperation] { [Etcd.get(key)] }
    func record(_ answer: String) -> [EtcdOperation] { [Etcd.put(key, answer, lease: lease)] }
  }

  /// Seconds an answer is kept for retries (they come within a second).
  static let operationRecordTTL: Int64 = 60

  /// nil without a request id (the call is not deduplicated).
  private func operationRecord(node: String, requestID: String) async throws(IdentityError)
    -> OperationRecord?
  {
    guard !requestID.isEmpty else { return nil }
    guard requestID.utf8.count <= 128 else {
      throw IdentityError(code: .invalidLabels, message: "request id longer than 128 bytes")
    }
    return OperationRecord(
      key: "\(configuration.prefix)/ops/\(node)/\(requestID)", lease: try await operationLease())
  }

  /// A lease for answers, not kept alive: a fresh one once the current one has less
  /// than half its time left, so every answer outlives its retries and then expires.
  private func operationLease() async throws(IdentityError) -> Int64 {
    let now = ContinuousClock.now
    if let current = operationLeaseState.withLock({ $0 }),
      current.expires - now > .seconds(Self.operationRecordTTL / 2)
    {
      return current.id
    }
    do {
      let id = try await client.grantLease(ttl: Self.operationRecordTTL)
      operationLeaseState.withLock {
        $0 = (id, now + .seconds(Self.operationRecordTTL))
      }
      return id
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "etcd could not grant a lease for call records",
        cause: error)
    }
  }

  /// Makes etcd's counts for `node` exactly `held` (the node's endpoints are the truth).
  private func syncSharedReferences(node: String, held: [NumericIdentity: Int])
    async throws(IdentityError) -> ReferenceSync
  {
    var sync = ReferenceSync()
    var wanted: [String: (id: UInt32, count: Int)] = [:]
    for (id, count) in held where count > 0 {
      guard let cached = state.withLock({ $0.byID[id.rawValue] }) else {
        sync.missing.append(id)
        continue
      }
      wanted[cached.canonicalLabels] = (id.rawValue, count)
    }
    var have: [String: Int] = [:]
    let existing: [EtcdKeyValue]
    do {
      existing = try await client.rangeAll(prefix: "\(configuration.prefix)/value/").kvs
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "etcd could not list \(node)'s references", cause: error)
    }
    for kv in existing {
      if let (labels, owner) = parseReferenceKey(kv.key), owner == node {
        have[labels] = Self.referenceCount(kv.value)
      }
    }
    for canonical in Set(have.keys).union(wanted.keys) {
      let count = wanted[canonical]?.count ?? 0
      let before = have[canonical] ?? 0
      guard count != before else { continue }
      if count > before { sync.added += count - before } else { sync.dropped += before - count }
      let reference = referenceKey(canonical, node)
      try await keyLock.withLock(canonical) { () async throws(IdentityError) in
        if let id = wanted[canonical]?.id {
          // Unless the identity is gone meanwhile (then the node must relabel, as with missing ones).
          for _ in 0..<2 {
            var lease = try await nodeLease(node).id
            let put = Etcd.txn(
              when: [Etcd.holds(identityKey(id), canonical)],
              then: [Etcd.put(reference, "\(id) \(count)", lease: lease)])
            if try await nodeTxn(node, &lease, canonical, put) != nil { break }
          }
        } else {
          _ = try await sharedTxn(Etcd.txn(when: [], then: [Etcd.delete(reference)]), canonical)
        }
      }
    }
    sync.missing.sort()
    return sync
  }

  // MARK: - Leases of nodes served over the network

  /// `nodes/<node>` → the ID of the lease `node`'s references are bound to, and bound
  /// to it itself: granted by whichever replica serves the node first, renewed by the
  /// node's keepalives through any replica. A node that stops calling loses the
  /// lease, its references and this key together.
  private func nodeLeaseKey(_ node: String) -> String { "\(configuration.prefix)/nodes/\(node)" }

  public func keepAliveNode(_ node: String) async throws(IdentityError) -> NodeLeaseRenewal {
    try Self.validate(node: node)
    guard countsInEtcd(node) else { return .notLeased }
    for _ in 0..<2 {
      let (lease, granted) = try await nodeLease(node)
      let ttl: Int64
      do {
        ttl = try await client.renewLease(lease)
      } catch {
        throw IdentityError(
          code: .storeUnavailable, message: "etcd could not renew the lease of node \(node)",
          cause: error)
      }
      if ttl > 0 { return NodeLeaseRenewal(ttlSeconds: ttl, referencesLost: granted) }
      forgetNodeLease(node, lease)
    }
    throw IdentityError(
      code: .storeUnavailable, message: "the lease of node \(node) expired twice in a row; retry")
  }

  /// The lease `node`'s references are bound to, and whether this call granted it
  /// (the node had none: its first call, or its previous lease expired).
  private func nodeLease(_ node: String) async throws(IdentityError) -> (id: Int64, granted: Bool) {
    if let cached = nodeLeases.withLock({ $0[node] }) { return (cached, false) }
    let key = nodeLeaseKey(node)
    do {
      for _ in 0..<configuration.allocationAttempts {
        let read = try await client.txn(Etcd.txn(when: [], then: [Etcd.get(key)]))
        if let kv = read.responses.first?.kvs.first,
          let lease = Int64(String(decoding: kv.value, as: UTF8.self))
        {
          nodeLeases.withLock { $0[node] = lease }
          return (lease, false)
        }
        let lease = try await client.grantLease(ttl: configuration.leaseTTLSeconds)
        let created = try await client.txn(
          Etcd.txn(when: [Etcd.absent(key)], then: [Etcd.put(key, "\(lease)", lease: lease)]))
        if created.succeeded {
          nodeLeases.withLock { $0[node] = lease }
          logger.info(
            "granted the lease of a node served over the network",
            metadata: [
              "node": "\(node)", "lease": "\(String(lease, radix: 16))",
              "ttl": "\(configuration.leaseTTLSeconds)",
            ])
          return (lease, true)
        }
        // Another replica granted the node's lease meanwhile: use that one.
        try await client.revokeLease(lease)
      }
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "etcd could not find or grant the lease of node \(node)",
        cause: error)
    }
    throw IdentityError(
      code: .storeUnavailable,
      message: "the lease of node \(node) changed under every attempt; retry")
  }

  private func forgetNodeLease(_ node: String, _ lease: Int64) {
    nodeLeases.withLock { if $0[node] == lease { $0[node] = nil } }
  }

  /// `transaction` (which binds keys to `lease`), or nil when `lease` expired: the
  /// node's references went with it, `lease` is now the node's new lease, and the
  /// caller rebuilds the transaction from what is left.
  private func nodeTxn(
    _ node: String, _ lease: inout Int64, _ canonical: String, _ transaction: EtcdTransaction
  ) async throws(IdentityError) -> EtcdTransactionResult? {
    do {
      return try await client.txn(transaction)
    } catch  where error.code == .leaseLost {
      forgetNodeLease(node, lease)
      logger.warning(
        "the lease of a node served over the network expired with its references",
        metadata: ["node": "\(node)", "lease": "\(String(lease, radix: 16))"])
      lease = try await nodeLease(node).id
      return nil
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "etcd could not count references to \(canonical)",
        cause: error)
    }
  }

  private func sharedTxn(_ transaction: EtcdTransaction, _ canonical: String)
    async throws(IdentityError) -> EtcdTransactionResult
  {
    do {
      return try await client.txn(transaction)
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "etcd could not count references to \(canonical)",
        cause: error)
    }
  }

  // MARK: - Helpers

  private func saveReference(_ key: NodeReferenceTable.Key, _ row: NodeReferenceTable.Row)
    throws(IdentityError)
  {
    do {
      try references.set(key, row)
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "cannot write the node reference table", cause: error)
    }
  }

  private static func labels(_ canonical: String) throws(IdentityError) -> LabelSet {
    do {
      return try LabelSet(canonicalKey: canonical)
    } catch {
      throw IdentityError(
        code: .invalidLabels, message: "etcd holds unreadable labels \(canonical)", cause: error)
    }
  }

  private static func identities(_ entries: [UInt32: CachedIdentity]) -> [SecurityIdentity] {
    entries.sorted { $0.key < $1.key }.compactMap { id, cached in
      (try? labels(cached.canonicalLabels)).map {
        SecurityIdentity(id: NumericIdentity(id), labels: $0)
      }
    }
  }

  /// Node names end reference keys, so they cannot contain `/`.
  static func validate(node: String) throws(IdentityError) {
    guard !node.isEmpty, !node.contains("/"), node.utf8.count <= 253 else {
      throw IdentityError(
        code: .invalidLabels, message: "node name \"\(node)\" must be 1-253 characters without '/'")
    }
  }
}
