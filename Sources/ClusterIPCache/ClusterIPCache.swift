import Foundation
import Logging
import Metrics
import Synchronization
import TesseraCore
import TesseraEtcd
import TesseraRuntime

/// Shares endpoint addresses between nodes through etcd, so each node's
/// ipcache knows the identity of pods on other nodes (docs/architecture.md §6).
///
/// Publishes `<prefix>/<address>` → `{"identity":…,"labelsDigest":…,"node":…}` (with
/// `"namedPorts"` when the endpoint declares any) for every local endpoint whose identity
/// is realised, bound to this node's lease (a node
/// that dies withdraws its addresses); watches the prefix and writes other
/// nodes' entries into the local datapath. The local datapath is brought back
/// in line every few seconds, so a restarted datapath service relearns them.
///
/// etcd is shared with every node, so what comes from it is checked before it
/// reaches the datapath (``validate(key:value:lease:)``): only a canonical host
/// prefix (`/32`, `/128`) of an address no local endpoint holds, carrying an
/// allocated identity, published by a named node under a lease. Anything else
/// is ignored, logged once and counted in `tessera_endpoint_ipcache_rejected_total`.
///
/// An entry whose identity is new to this node is installed only after this
/// node's policy maps account for that identity (``Configuration/policyWait``):
/// as with a local endpoint, peers' maps change before the ipcache entry that
/// makes packets carry the identity, so a "deny X, allow the rest" peer never
/// meets X as a stranger the wildcard admits (docs/architecture.md §6). The entry's
/// labels digest lets a node whose own policy watch saw X arrive with those labels
/// order it from the watch, without asking the policy service.
public final class ClusterIPCache: Sendable {
  /// What this node publishes for one address: its endpoint's identity and named ports.
  public struct LocalEndpoint: Hashable, Sendable {
    public var identity: SecurityIdentity
    public var namedPorts: [NamedPort]
    /// The endpoint holding the address (its ID): when another endpoint of this node is
    /// given the address, the previous one's claim is released first.
    public var holder: UInt64

    public init(identity: SecurityIdentity, namedPorts: [NamedPort] = [], holder: UInt64 = 0) {
      self.identity = identity
      self.namedPorts = namedPorts
      self.holder = holder
    }
  }

  public struct Configuration: Sendable {
    public var prefix: String
    public var nodeName: String
    public var leaseTTLSeconds: Int64
    /// How often the datapath is re-sent every remote entry.
    public var resyncInterval: Duration
    /// How long one install pass waits for this node's policy maps to account for new
    /// identities; entries still waiting are retried on the next pass.
    public var policyWait: Duration

    public init(
      prefix: String = "/tessera/ipcache", nodeName: String, leaseTTLSeconds: Int64 = 30,
      resyncInterval: Duration = .seconds(10),
      policyWait: Duration = .seconds(5)
    ) {
      self.prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
      self.nodeName = nodeName
      self.leaseTTLSeconds = leaseTTLSeconds
      self.resyncInterval = resyncInterval
      self.policyWait = policyWait
    }
  }

  struct Entry: Codable, Hashable, Sendable {
    var identity: UInt32
    /// ``LabelSet/canonicalDigest`` of the identity's labels, 16 hex digits; absent
    /// from nodes that predate it (their entries are ordered by asking).
    var labelsDigest: String?
    var node: String
    /// The endpoint's named ports; absent when it declares none (and from nodes that
    /// predate named ports). Egress rows on a named port towards its identity resolve
    /// through them.
    var namedPorts: [NamedPort]?
    /// Set in the value the holder writes just before it deletes the key because its
    /// endpoint let the address go (the pod was deleted): other nodes end their flows with
    /// the address then, which they must not do on a bare delete (a node's entries also
    /// leave and come back whenever its store session restarts). Absent otherwise.
    var released: Bool?

    init(
      identity: UInt32, labelsDigest: UInt64?, node: String, namedPorts: [NamedPort] = [],
      released: Bool = false
    ) {
      self.identity = identity
      self.labelsDigest = labelsDigest.map(Self.hex)
      self.node = node
      self.namedPorts = namedPorts.isEmpty ? nil : namedPorts
      self.released = released ? true : nil
    }

    var fingerprint: IdentityFingerprint {
      IdentityFingerprint(
        id: NumericIdentity(identity), labelsDigest: labelsDigest.flatMap { UInt64($0, radix: 16) })
    }

    static func hex(_ digest: UInt64) -> String {
      let digits = String(digest, radix: 16)
      return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// Exactly 16 lowercase hex digits, as ``hex(_:)`` writes them.
    var hasWellFormedDigest: Bool {
      labelsDigest.map {
        $0.utf8.count == 16
          && $0.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
      } ?? true
    }
  }

  /// Why an entry read from etcd is not installed.
  public enum Rejection: Error, Equatable, Sendable, CustomStringConvertible {
    /// The key is not `<prefix>/ADDRESS/LENGTH` in canonical form.
    case malformedKey
    /// A prefix wider than one address (`0.0.0.0/0`, a `/24`): endpoints publish single addresses.
    case notAHostPrefix
    /// Unspecified, loopback, multicast or broadcast: no workload owns it.
    case specialPurposeAddress
    /// The value is not `{"identity":…,"node":…}` (with an optional `labelsDigest` of 16
    /// lowercase hex digits and optional valid `namedPorts`, at most 64), or the node name
    /// is empty or holds `/`.
    case malformedValue
    /// A reserved identity (host, world, init, …) or one of the node-local scope.
    case identityNotAllocated(UInt32)
    /// Endpoints publish under their node's lease; an entry without one outlives any node.
    case notLeased
    /// The address belongs to an endpoint of this node.
    case localAddress

    public var description: String {
      switch self {
      case .malformedKey: "the key is not a canonical ADDRESS/LENGTH"
      case .notAHostPrefix: "the prefix is wider than one address"
      case .specialPurposeAddress: "no workload can own that address"
      case .malformedValue:
        "the value is not {\"identity\":N,\"labelsDigest\":\"16 HEX DIGITS\",\"node\":\"NAME\"}"
      case .identityNotAllocated(let id): "identity \(id) is not an allocated identity"
      case .notLeased: "the entry is not bound to a node's lease"
      case .localAddress: "the address belongs to an endpoint of this node"
      }
    }
  }

  /// The entry of another node that `key` and `value` describe, or why it must not be installed.
  ///
  /// Returns nil for this node's own entries (published here, not learned).
  static func validate(key prefixText: String, value: Data, lease: Int64, ownNode: String)
    throws(Rejection) -> (IPPrefix, Entry)?
  {
    guard let prefix = IPPrefix(prefixText), prefix.description == prefixText else {
      throw .malformedKey
    }
    guard prefix.isHost else { throw .notAHostPrefix }
    guard !prefix.isSpecialPurposeHost else { throw .specialPurposeAddress }
    guard let entry = try? JSONDecoder().decode(Entry.self, from: value), !entry.node.isEmpty,
      !entry.node.contains("/"), entry.hasWellFormedDigest,
      NamedPort.problem(with: entry.namedPorts ?? []) == nil
    else {
      throw .malformedValue
    }
    if entry.node == ownNode { return nil }
    let identity = NumericIdentity(entry.identity)
    guard identity.isAllocated else {
      throw .identityNotAllocated(entry.identity)
    }
    guard lease != 0 else { throw .notLeased }
    return (prefix, entry)
  }

  private struct State: Sendable {
    var lease: Int64 = 0
    /// What etcd holds for this node.
    var published: [IPPrefix: LocalEndpoint] = [:]
    /// Every other node's entries, as last read or watched (validated).
    var remote: [IPPrefix: Entry] = [:]
    /// Keys rejected so far, with why: each is logged once, not on every resync.
    var rejected: [String: Rejection] = [:]
    /// What this synchroniser wrote into the local datapath.
    var installed: [IPPrefix: NumericIdentity] = [:]
    /// Identities this node's policy maps account for (entries carrying them may be installed).
    var admitted: Set<IdentityFingerprint> = []
    /// Names of other nodes' named ports whose entries came, went or changed since the
    /// endpoint service was last told.
    var changedPortNames: Set<String> = []
    /// Addresses other nodes' endpoints released, whose flows the datapath has not ended yet.
    var released: Set<IPPrefix> = []
  }

  public let configuration: Configuration
  private let client: EtcdClient
  private let datapath: any ClusterIPCacheDatapath
  private let localEntries: @Sendable () -> [IPPrefix: LocalEndpoint]
  private let namedPortsChanged: @Sendable (Set<String>) async -> Void
  private let localAddresses: @Sendable () -> Set<IPPrefix>
  private let policyOrdering:
    @Sendable (Set<IdentityFingerprint>, ContinuousClock.Instant) async throws -> Set<
      IdentityFingerprint
    >
  private let state = Mutex(State())
  private let localChanged: Wakeup
  private let remoteChanged = Wakeup()
  private let remotePortsChanged = Wakeup()
  private let logger: Logger

  /// - Parameters:
  ///   - localChanged: signalled when `localEntries` may have changed.
  ///   - localAddresses: the addresses of every endpoint of this node, realised or not;
  ///     no other node's entry may claim them.
  ///   - policyOrdering: waits until this node's policy maps account for the given
  ///     identities or the deadline passes; returns those the policy service does not
  ///     know yet (``EndpointManager/waitForPolicyOrdering(admitting:deadline:)``).
  ///   - namedPortsChanged: told the names of other nodes' named ports that came, went or
  ///     changed (``EndpointManager/namedPortsChanged(_:except:)``).
  ///   - localEntries: this node's endpoint addresses with realised identities.
  public init(
    configuration: Configuration, client: EtcdClient, datapath: any ClusterIPCacheDatapath,
    logger: Logger = Logger(label: "tessera.ipcache"), localChanged: Wakeup,
    localAddresses: @escaping @Sendable () -> Set<IPPrefix>,
    policyOrdering:
      @escaping @Sendable (Set<IdentityFingerprint>, ContinuousClock.Instant) async throws -> Set<
        IdentityFingerprint
      >,
    namedPortsChanged: @escaping @Sendable (Set<String>) async -> Void = { _ in },
    localEntries: @escaping @Sendable () -> [IPPrefix: LocalEndpoint]
  ) {
    self.namedPortsChanged = namedPortsChanged
    self.localAddresses = localAddresses
    self.policyOrdering = policyOrdering
    self.localChanged = localChanged
    self.configuration = configuration
    self.client = client
    self.datapath = datapath
    self.logger = logger
    self.localEntries = localEntries
  }

  /// Other nodes' entries as last seen.
  public var remoteEntries: [IPPrefix: (identity: NumericIdentity, node: String)] {
    state.withLock { $0.remote.mapValues { (NumericIdentity($0.identity), $0.node) } }
  }

  /// The named ports other nodes' endpoints declare, by identity (identities without any
  /// are left out).
  public func namedPortsByIdentity() -> [NumericIdentity: Set<NamedPort>] {
    state.withLock { state in
      var byIdentity: [NumericIdentity: Set<NamedPort>] = [:]
      for entry in state.remote.values {
        guard let ports = entry.namedPorts, !ports.isEmpty else { continue }
        byIdentity[NumericIdentity(entry.identity), default: []].formUnion(ports)
      }
      return byIdentity
    }
  }

  /// Notes the names whose ports a change of a remote entry from `old` to `new` touches.
  private static func notePortChange(from old: Entry?, to new: Entry?, in state: inout State) {
    guard old?.identity != new?.identity || old?.namedPorts != new?.namedPorts else { return }
    for port in (old?.namedPorts ?? []) + (new?.namedPorts ?? []) {
      state.changedPortNames.insert(port.name)
    }
  }

  private func key(_ prefix: IPPrefix) -> String { "\(configuration.prefix)/\(prefix)" }

  /// The prefix text of a key under the configured prefix.
  private func prefixText(fromKey key: Data) -> String? {
    let text = String(decoding: key, as: UTF8.self)
    guard text.hasPrefix(configuration.prefix + "/") else { return nil }
    return String(text.dropFirst(configuration.prefix.count + 1))
  }

  /// Validates one key-value pair from etcd; logs and counts a rejection the first time it is seen.
  private func learned(_ kv: EtcdKeyValue, rejected: inout [String: Rejection]) -> (
    IPPrefix, Entry
  )? {
    guard let text = prefixText(fromKey: kv.key) else { return nil }
    do {
      let learned = try Self.validate(
        key: text, value: kv.value, lease: kv.lease, ownNode: configuration.nodeName)
      rejected[text] = nil
      return learned
    } catch {
      if rejected.updateValue(error, forKey: text) != error {
        ClusterIPCacheMetrics.rejected.increment()
        logger.warning(
          "ignored an ipcache entry from etcd",
          metadata: ["ipcache.key": "\(text)", "reason": "\(error)"])
      }
      return nil
    }
  }

  /// Runs until cancelled, reconnecting by itself.
  public func run() async throws {
    let session = EtcdSession(
      client: client, prefix: configuration.prefix + "/",
      leaseTTLSeconds: configuration.leaseTTLSeconds, logger: logger)
    try await session.run(
      .init(
        lease: {
          // A fresh lease each session: what was published under the old one is gone with it.
          let lease = try await self.client.grantLease(ttl: self.configuration.leaseTTLSeconds)
          self.state.withLock {
            $0.lease = lease
            $0.published = [:]
          }
          return lease
        },
        load: { _ in try await self.loadAndClearStale() },
        apply: { events in self.apply(events) },
        loops: [
          { try await self.publishLoop() }, { try await self.installLoop() },
          { try await self.namedPortsLoop() },
        ]))
  }

  /// Reads every entry; keeps other nodes' and deletes this node's leftovers from an earlier run.
  private func loadAndClearStale() async throws -> Int64 {
    let (kvs, revision) = try await client.rangeAll(prefix: configuration.prefix + "/")
    var remote: [IPPrefix: Entry] = [:]
    var stale: [(key: String, revision: Int64)] = []
    var rejected = state.withLock { $0.rejected }
    let lease = state.withLock { $0.lease }
    var released: Set<IPPrefix> = []
    for kv in kvs {
      if let own = ownPrefix(kv) {
        if kv.lease != lease { stale.append((key(own), kv.modRevision)) }
      } else if let (prefix, entry) = learned(kv, rejected: &rejected) {
        // A release read here may be of an address this node still has flows with (the
        // endpoint service restarted in between): they end, as the pod is gone.
        if entry.released == true { released.insert(prefix) } else { remote[prefix] = entry }
      }
    }
    // Each guarded by its revision: another node may have claimed the address since the read.
    for (key, revision) in stale {
      _ = try await client.txn(
        Etcd.txn(when: [Etcd.modifiedAt(key, revision)], then: [Etcd.delete(key)]))
    }
    state.withLock { state in
      for prefix in Set(state.remote.keys).union(remote.keys) {
        Self.notePortChange(from: state.remote[prefix], to: remote[prefix], in: &state)
      }
      state.remote = remote
      state.rejected = rejected
      state.released.formUnion(released)
    }
    remoteChanged.signal()
    remotePortsChanged.signal()
    localChanged.signal()
    return revision
  }

  /// The prefix of an entry this node published (a well-formed key whose value names this node).
  private func ownPrefix(_ kv: EtcdKeyValue) -> IPPrefix? {
    guard let text = prefixText(fromKey: kv.key), let prefix = IPPrefix(text),
      let entry = try? JSONDecoder().decode(Entry.self, from: kv.value),
      entry.node == configuration.nodeName
    else { return nil }
    return prefix
  }

  private func apply(_ events: [EtcdEvent]) {
    state.withLock { state in
      for event in events {
        guard let text = prefixText(fromKey: event.kv.key) else { continue }
        let before = IPPrefix(text).flatMap { state.remote[$0] }
        defer {
          let after = IPPrefix(text).flatMap { state.remote[$0] }
          Self.notePortChange(from: before, to: after, in: &state)
        }
        switch event.kind {
        case .put:
          // A rejected put also withdraws what the key held before: the newest value is the claim.
          if let prefix = IPPrefix(text) { state.remote[prefix] = nil }
          if let (prefix, entry) = learned(event.kv, rejected: &state.rejected) {
            if entry.released != true {
              // Another node claiming the address its holder had not released yet: the
              // address moved, and the old holder's flows end as with a release.
              if let before, before.node != entry.node { state.released.insert(prefix) }
              state.remote[prefix] = entry
            } else if before?.node == entry.node {
              // Its holder let the address go: the flows with it end (on no other node's
              // say, since a node names only its own endpoints' addresses free).
              state.released.insert(prefix)
            }
          }
        case .delete:
          state.rejected[text] = nil
          if let prefix = IPPrefix(text), prefix.description == text { state.remote[prefix] = nil }
        }
      }
    }
    remoteChanged.signal()
    remotePortsChanged.signal()
  }

  /// Tells the endpoint service which names of other nodes' named ports changed.
  private func namedPortsLoop() async throws {
    while true {
      let names = state.withLock { state in
        defer { state.changedPortNames = [] }
        return state.changedPortNames
      }
      if !names.isEmpty { await namedPortsChanged(names) }
      await remotePortsChanged.wait(timeout: .seconds(5))
      try Task.checkCancellation()
    }
  }

  /// Makes etcd hold exactly this node's realised endpoint addresses.
  private func publishLoop() async throws {
    while true {
      // Other nodes refuse reserved identities (an endpoint still `init`): publishing them
      // would only be noise there, and such a pod is `world` on other nodes, which fails closed.
      let wanted = localEntries().filter { !$0.value.identity.id.isReserved }
      let (lease, published) = state.withLock { ($0.lease, $0.published) }
      var puts: [EtcdOperation] = []
      for (prefix, endpoint) in wanted where published[prefix] != endpoint {
        // Another endpoint of this node took the address over: its predecessor's claim is
        // released before the new one is written, as when the address is withdrawn.
        if let previous = published[prefix], previous.holder != endpoint.holder {
          try await release(prefix, previous, lease: lease)
        }
        puts.append(Etcd.put(key(prefix), try publishedValue(endpoint), lease: lease))
      }
      // Leased puts inside a Txn: a plain leased Put costs O(keys on the lease) in etcd 3.4.
      for chunk in stride(from: 0, to: puts.count, by: 64) {
        _ = try await client.txn(
          Etcd.txn(when: [], then: Array(puts[chunk..<min(chunk + 64, puts.count)])))
      }
      // One key per address: when an address has moved to another node, its key holds that
      // node's claim now, which this node's withdrawal must leave alone. The release comes
      // first, so other nodes end their flows with the address (a bare delete ends none).
      var deletes = 0
      for (prefix, endpoint) in published where wanted[prefix] == nil {
        let release = try await release(prefix, endpoint, lease: lease)
        _ = try await client.txn(
          Etcd.txn(when: [Etcd.holds(key(prefix), release)], then: [Etcd.delete(key(prefix))]))
        deletes += 1
      }
      let operations = puts.count + deletes
      if operations > 0 {
        state.withLock { $0.published = wanted }
        logger.debug(
          "published endpoint addresses",
          metadata: ["changes": "\(operations)", "total": "\(wanted.count)"])
      }
      await localChanged.wait(timeout: .seconds(5))
      try Task.checkCancellation()
    }
  }

  /// Writes the endpoint's claim on the address once more as released (``Entry/released``),
  /// if the key still holds that claim; returns the released value.
  @discardableResult
  private func release(_ prefix: IPPrefix, _ endpoint: LocalEndpoint, lease: Int64) async throws
    -> String
  {
    let release = try publishedValue(endpoint, released: true)
    _ = try await client.txn(
      Etcd.txn(
        when: [Etcd.holds(key(prefix), try publishedValue(endpoint))],
        then: [Etcd.put(key(prefix), release, lease: lease)]))
    return release
  }

  /// The value this node publishes for an address of one of its endpoints; `released`
  /// when the endpoint let the address go (``Entry/released``).
  private func publishedValue(_ endpoint: LocalEndpoint, released: Bool = false) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    let entry = Entry(
      identity: endpoint.identity.id.rawValue,
      labelsDigest: endpoint.identity.labels.canonicalDigest, node: configuration.nodeName,
      namedPorts: endpoint.namedPorts, released: released)
    return String(decoding: try encoder.encode(entry), as: UTF8.self)
  }

  /// Writes other nodes' entries into the local datapath: changes at once, everything every resync interval.
  private func installLoop() async throws {
    var lastFull = ContinuousClock.now - configuration.resyncInterval
    while true {
      // Every local endpoint's address, realised or still being created: the local
      // realise writes those, and no other node's claim may replace or delete them.
      let local = localAddresses().union(localEntries().keys)
      let (remote, installed, releasing) = state.withLock { ($0.remote, $0.installed, $0.released) }
      let released = releasing.subtracting(local)
      var wanted: [IPPrefix: IdentityFingerprint] = [:]
      var shadowed: [IPPrefix] = []
      for (prefix, entry) in remote {
        if local.contains(prefix) {
          shadowed.append(prefix)
        } else {
          wanted[prefix] = entry.fingerprint
        }
      }
      noteShadowed(shadowed)
      let admitted = await admit(Set(wanted.values))
      // An entry whose identity is not admitted yet waits; the address keeps what it had.
      let waiting = wanted.filter { !admitted.contains($0.value) }
      var target = wanted.filter { admitted.contains($0.value) }.mapValues(\.id)
      // ... except a released one: its new holder's entry waits unmapped, never the old one.
      for prefix in waiting.keys where !released.contains(prefix) {
        target[prefix] = installed[prefix]
      }
      let full = ContinuousClock.now - lastFull >= configuration.resyncInterval
      // A released address is unmapped first (below): its new holder's entry is written
      // again even when it carries the same identity.
      let upserts =
        full ? target : target.filter { installed[$0.key] != $0.value || released.contains($0.key) }
      let deletes = installed.keys.filter {
        target[$0] == nil && !local.contains($0) && !released.contains($0)
      }
      do {
        // Released addresses first: a new holder's entry (upserted next) meets no old flow.
        try await datapath.deleteIPCache(Array(released), endingFlows: true)
        try await datapath.upsertIPCache(upserts)
        try await datapath.deleteIPCache(Array(deletes), endingFlows: false)
        state.withLock {
          $0.installed = target
          $0.released.subtract(releasing)
        }
        if full { lastFull = ContinuousClock.now }
        if !upserts.isEmpty || !deletes.isEmpty || !released.isEmpty {
          logger.debug(
            "ipcache learned from other nodes",
            metadata: [
              "upserts": "\(upserts.count)", "deletes": "\(deletes.count)",
              "released": "\(released.count)",
            ])
        }
      } catch {
        logger.warning(
          "cannot write other nodes' addresses to the datapath yet", metadata: ["error": "\(error)"]
        )
      }
      // Entries waiting for the policy service to learn their identity are retried soon.
      await remoteChanged.wait(timeout: waiting.isEmpty ? .seconds(2) : .milliseconds(100))
      try Task.checkCancellation()
    }
  }

  /// The identities among `identities` this node's policy maps account for, waiting
  /// (up to ``Configuration/policyWait``) for those not admitted before.
  private func admit(_ identities: Set<IdentityFingerprint>) async -> Set<IdentityFingerprint> {
    let new = state.withLock { state in
      state.admitted.formIntersection(identities)  // forget identities no entry carries
      return identities.subtracting(state.admitted)
    }
    guard !new.isEmpty else { return identities }
    do {
      let unknown = try await policyOrdering(new, .now + configuration.policyWait)
      if !unknown.isEmpty {
        logger.debug(
          "ipcache entries wait for the policy service to learn their identities",
          metadata: [
            "identities": "\(unknown.map(\.id.rawValue).sorted())"
          ])
      }
      return state.withLock { state in
        state.admitted.formUnion(new.subtracting(unknown))
        return state.admitted
      }
    } catch {
      logger.warning(
        "ipcache entries with new identities wait for this node's policy maps",
        metadata: [
          "identities": "\(new.count)", "error": "\(error)",
        ])
      return state.withLock { $0.admitted }
    }
  }

  /// Logs and counts, once per address, another node's claim on a local endpoint's address.
  private func noteShadowed(_ prefixes: [IPPrefix]) {
    let new = state.withLock { state in
      let now = Set(prefixes.map(\.description))
      for (key, reason) in state.rejected where reason == .localAddress && !now.contains(key) {
        state.rejected[key] = nil
      }
      return prefixes.filter {
        state.rejected.updateValue(.localAddress, forKey: $0.description) != .localAddress
      }
    }
    for prefix in new {
      ClusterIPCacheMetrics.rejected.increment()
      logger.warning(
        "ignored an ipcache entry from etcd",
        metadata: ["ipcache.key": "\(prefix)", "reason": "\(Rejection.localAddress)"])
    }
  }
}

/// Metrics of the cluster ipcache, created once.
enum ClusterIPCacheMetrics {
  static let rejected = Counter(label: "tessera_endpoint_ipcache_rejected_total")
}
