import Logging
import Synchronization
import TesseraCore
import Testing

@testable import EndpointService

/// The CIDR entries of the ipcache follow the policy events in order: unmapped before the
/// regenerations of the event that removed them, mapped only once every endpoint realised
/// the event that brought them, and never over another kind of entry.
@Suite("CIDR ipcache entries")
struct CIDRIPCacheTests {
  /// A datapath ipcache that records every write, and yields as the real one does.
  final class FakeIPCache: CIDRIPCacheWriting {
    let entries: Mutex<[IPPrefix: NumericIdentity]>
    let writes = Mutex<[String]>([])

    init(_ entries: [IPPrefix: NumericIdentity] = [:]) { self.entries = Mutex(entries) }

    func upsertCIDREntries(_ upserts: [IPPrefix: NumericIdentity]) async throws(EndpointError) {
      entries.withLock { entries in
        for (prefix, identity) in upserts
        where entries[prefix].map(CIDRIdentity.isCIDR) ?? true {
          entries[prefix] = identity
        }
      }
      writes.withLock { $0.append("upsert \(upserts.keys.sorted())") }
    }

    func deleteCIDREntries(_ prefixes: [IPPrefix]) async throws(EndpointError) {
      entries.withLock { entries in
        for prefix in prefixes where entries[prefix].map(CIDRIdentity.isCIDR) ?? false {
          entries[prefix] = nil
        }
      }
      writes.withLock { $0.append("delete \(prefixes.sorted())") }
    }

    func ipcacheEntries() async throws(EndpointError) -> [IPPrefix: NumericIdentity] {
      entries.withLock { $0 }
    }
  }

  static func prefix(_ text: String) -> IPPrefix { IPPrefix(text)! }
  static func number(_ text: String) -> NumericIdentity { CIDRIdentity.number(for: prefix(text)) }

  @Test("a stream's first event: stale CIDR entries go at once, a pod's address is never touched")
  func snapshotReconciles() async {
    let pod = Self.prefix("10.0.0.5/32")
    let stale = Self.prefix("198.51.100.0/24")
    let ipcache = FakeIPCache([pod: NumericIdentity(1000), stale: Self.number("198.51.100.0/24")])
    let cidrs = CIDRIPCache(datapath: ipcache, logger: Logger(label: "test"))
    let ordering = PolicyOrdering()
    let wanted = [Self.prefix("203.0.113.0/24"): Self.number("203.0.113.0/24")]
    let first = PolicyChange(
      revision: 2, affectedIdentities: nil, sequence: 7, instanceID: "a", resync: true,
      cidrIdentities: wanted)
    await cidrs.removeBeforeRegenerating(first, ordering: ordering)
    #expect(ipcache.entries.withLock { $0[stale] } == nil)
    #expect(ipcache.entries.withLock { $0[pod] } == NumericIdentity(1000))
    ordering.consumed(sequence: 7, instanceID: "a", triggered: [])
    await cidrs.mapAfterPeers(
      through: PolicyEventSequence(sequence: 7, instanceID: "a"), ordering: ordering)
    #expect(ipcache.entries.withLock { $0[Self.prefix("203.0.113.0/24")] } == wanted.values.first)
    await cidrs.waitUntilSynced()
  }

  @Test("a first event naming no CIDR, over a datapath holding none: synced at once")
  func emptySnapshotSyncs() async throws {
    let cidrs = CIDRIPCache(datapath: FakeIPCache(), logger: Logger(label: "test"))
    let ordering = PolicyOrdering()
    await Self.applyFirstEvent(cidrs, ordering)
    cidrs.installAfterPeers(
      through: PolicyEventSequence(sequence: 1, instanceID: "a"), ordering: ordering)
    let synced = Task { await cidrs.waitUntilSynced() }
    let timeout = Task {
      try await Task.sleep(for: .seconds(5))
      synced.cancel()
    }
    await synced.value
    #expect(!synced.isCancelled, "not synced within 5 s")
    timeout.cancel()
  }

  /// A node whose watch applied the first event (sequence 1, no CIDR) and whose endpoint 1
  /// realised generation 1.
  func startedNode() async -> (FakeIPCache, CIDRIPCache, PolicyOrdering) {
    let ipcache = FakeIPCache()
    let cidrs = CIDRIPCache(datapath: ipcache, logger: Logger(label: "test"))
    let ordering = PolicyOrdering()
    await Self.applyFirstEvent(cidrs, ordering)
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 1)
    return (ipcache, cidrs, ordering)
  }

  /// The watch applies the first event: sequence 1, a resync naming no CIDR.
  static func applyFirstEvent(_ cidrs: CIDRIPCache, _ ordering: PolicyOrdering) async {
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 1, affectedIdentities: nil, sequence: 1, instanceID: "a", resync: true,
        cidrIdentities: [:]), ordering: ordering)
    ordering.consumed(sequence: 1, instanceID: "a", triggered: [])
  }

  /// Event 2 brings 203.0.113.0/25, which no endpoint owes anything for: mapped at once.
  func mapAtEvent2(_ cidrs: CIDRIPCache, _ ordering: PolicyOrdering) async -> (
    IPPrefix, NumericIdentity
  ) {
    let prefix = Self.prefix("203.0.113.0/25")
    let identity = Self.number("203.0.113.0/25")
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 2, affectedIdentities: nil, sequence: 2, addedCIDRs: [prefix: identity]),
      ordering: ordering)
    ordering.consumed(sequence: 2, instanceID: nil, triggered: [])
    await cidrs.mapAfterPeers(
      through: PolicyEventSequence(sequence: 2, instanceID: "a"), ordering: ordering)
    return (prefix, identity)
  }

  @Test("an arrival is mapped only after every endpoint realised its event")
  func arrivalWaitsForPeers() async throws {
    let (ipcache, cidrs, ordering) = await startedNode()
    let prefix = Self.prefix("203.0.113.0/25")
    let arrival = PolicyChange(
      revision: 2, affectedIdentities: [NumericIdentity(1000)], sequence: 2,
      addedCIDRs: [prefix: Self.number("203.0.113.0/25")])
    await cidrs.removeBeforeRegenerating(arrival, ordering: ordering)
    ordering.consumed(sequence: 2, instanceID: nil, triggered: [(endpointID: 1, generation: 2)])
    let mapping = Task {
      await cidrs.mapAfterPeers(
        through: PolicyEventSequence(sequence: 2, instanceID: "a"), ordering: ordering)
    }
    try await Task.sleep(for: .milliseconds(100))
    #expect(ipcache.entries.withLock { $0[prefix] } == nil, "mapped before the peer realised it")
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 2)
    await mapping.value
    #expect(ipcache.entries.withLock { $0[prefix] } == Self.number("203.0.113.0/25"))
  }

  @Test("a retry behind an older event does not map a prefix a newer event added")
  func retryNeverRunsAhead() async throws {
    let (ipcache, cidrs, ordering) = await startedNode()
    let prefix = Self.prefix("203.0.113.0/25")
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 2, affectedIdentities: nil, sequence: 2,
        addedCIDRs: [prefix: Self.number("203.0.113.0/25")]), ordering: ordering)
    // The consumer has not queued event 2's regenerations yet: a mapping behind event 1
    // must leave the prefix alone.
    await cidrs.mapAfterPeers(
      through: PolicyEventSequence(sequence: 1, instanceID: "a"), ordering: ordering)
    #expect(ipcache.entries.withLock { $0[prefix] } == nil)
  }

  @Test("a removal waits for the earlier events, and comes before its own event's regenerations")
  func removalComesFirst() async throws {
    let (ipcache, cidrs, ordering) = await startedNode()
    let (prefix, identity) = await mapAtEvent2(cidrs, ordering)
    #expect(ipcache.entries.withLock { $0[prefix] } == identity)
    // Event 3 changes the rules (endpoint 1 owes it generation 2); event 4 removes the
    // identity: it stays mapped until endpoint 1 realised event 3.
    ordering.consumed(sequence: 3, instanceID: nil, triggered: [(endpointID: 1, generation: 2)])
    let removal = Task {
      await cidrs.removeBeforeRegenerating(
        PolicyChange(
          revision: 3, affectedIdentities: nil, sequence: 4, deletedIdentities: [identity]),
        ordering: ordering)
    }
    try await Task.sleep(for: .milliseconds(100))
    #expect(ipcache.entries.withLock { $0[prefix] } == identity, "unmapped before event 3")
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 2)
    await removal.value
    #expect(ipcache.entries.withLock { $0[prefix] } == nil)
    #expect(ipcache.writes.withLock { $0.last } == "delete [\(prefix)]")
  }

  @Test("a retirement waits like a removal, and a retry meanwhile leaves the prefix to it")
  func retryLeavesDrainingPrefix() async throws {
    let (ipcache, cidrs, ordering) = await startedNode()
    let (prefix, identity) = await mapAtEvent2(cidrs, ordering)
    ordering.consumed(sequence: 3, instanceID: nil, triggered: [(endpointID: 1, generation: 2)])
    let retirement = Task {
      await cidrs.removeBeforeRegenerating(
        PolicyChange(
          revision: 3, affectedIdentities: [], sequence: 4, retiredCIDRs: [identity]),
        ordering: ordering)
    }
    try await Task.sleep(for: .milliseconds(50))
    await cidrs.retry(ordering: ordering, rereading: true)
    #expect(ipcache.entries.withLock { $0[prefix] } == identity, "the retry unmapped it early")
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 2)
    await retirement.value
    #expect(ipcache.entries.withLock { $0[prefix] } == nil)
  }

  @Test("a mapping waiting for its peers is dropped when an event removes the prefix meanwhile")
  func removedWhileWaiting() async throws {
    let (ipcache, cidrs, ordering) = await startedNode()
    let prefix = Self.prefix("203.0.113.0/25")
    let identity = Self.number("203.0.113.0/25")
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 2, affectedIdentities: nil, sequence: 2, addedCIDRs: [prefix: identity]),
      ordering: ordering)
    ordering.consumed(sequence: 2, instanceID: nil, triggered: [(endpointID: 1, generation: 2)])
    let mapping = Task {
      await cidrs.mapAfterPeers(
        through: PolicyEventSequence(sequence: 2, instanceID: "a"), ordering: ordering)
    }
    try await Task.sleep(for: .milliseconds(50))
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 2)
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 3, affectedIdentities: nil, sequence: 3, deletedIdentities: [identity]),
      ordering: ordering)
    await mapping.value
    #expect(ipcache.entries.withLock { $0[prefix] } == nil, "a removed prefix was mapped")
  }
}
