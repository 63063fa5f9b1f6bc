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
    await cidrs.removeBeforeRegenerating(first)
    #expect(ipcache.entries.withLock { $0[stale] } == nil)
    #expect(ipcache.entries.withLock { $0[pod] } == NumericIdentity(1000))
    ordering.consumed(sequence: 7, instanceID: "a", triggered: [])
    await cidrs.installAfterPeers(
      through: PolicyEventSequence(sequence: 7, instanceID: "a"), ordering: ordering)
    #expect(ipcache.entries.withLock { $0[Self.prefix("203.0.113.0/24")] } == wanted.values.first)
    await cidrs.waitUntilSynced()
  }

  @Test("an arrival is mapped only after every endpoint realised its event")
  func arrivalWaitsForPeers() async throws {
    let ipcache = FakeIPCache()
    let cidrs = CIDRIPCache(datapath: ipcache, logger: Logger(label: "test"))
    let ordering = PolicyOrdering()
    ordering.consumed(sequence: 1, instanceID: "a", triggered: [])
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 1, affectedIdentities: nil, sequence: 1, instanceID: "a", resync: true,
        cidrIdentities: [:]))
    // Endpoint 1 realised generation 1; the event that brings the CIDR owes it generation 2.
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 1)
    let prefix = Self.prefix("203.0.113.0/25")
    let arrival = PolicyChange(
      revision: 2, affectedIdentities: [NumericIdentity(1000)], sequence: 2,
      addedCIDRs: [prefix: Self.number("203.0.113.0/25")])
    await cidrs.removeBeforeRegenerating(arrival)
    ordering.consumed(sequence: 2, instanceID: nil, triggered: [(endpointID: 1, generation: 2)])
    let install = Task {
      await cidrs.installAfterPeers(
        through: PolicyEventSequence(sequence: 2, instanceID: "a"), ordering: ordering)
    }
    try await Task.sleep(for: .milliseconds(100))
    #expect(ipcache.entries.withLock { $0[prefix] } == nil, "mapped before the peer realised it")
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 2)
    await install.value
    #expect(ipcache.entries.withLock { $0[prefix] } == Self.number("203.0.113.0/25"))
  }

  @Test("a removal is unmapped before the event's regenerations, and a late mapping is not made")
  func removalComesFirst() async throws {
    let prefix = Self.prefix("203.0.113.0/25")
    let identity = Self.number("203.0.113.0/25")
    let ipcache = FakeIPCache()
    let cidrs = CIDRIPCache(datapath: ipcache, logger: Logger(label: "test"))
    let ordering = PolicyOrdering()
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 1, affectedIdentities: nil, sequence: 1, instanceID: "a", resync: true,
        cidrIdentities: [prefix: identity]))
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 1)
    ordering.consumed(sequence: 1, instanceID: "a", triggered: [(endpointID: 1, generation: 2)])
    // The mapping waits for endpoint 1 while the next event removes the prefix.
    let install = Task {
      await cidrs.installAfterPeers(
        through: PolicyEventSequence(sequence: 1, instanceID: "a"), ordering: ordering)
    }
    try await Task.sleep(for: .milliseconds(50))
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 2, affectedIdentities: nil, sequence: 2, deletedIdentities: [identity]))
    ordering.realized(endpointID: 1, identity: NumericIdentity(1000), generation: 2)
    await install.value
    #expect(ipcache.entries.withLock { $0[prefix] } == nil, "a removed prefix was mapped")

    // Mapped, then removed: the delete comes before anything else of the event.
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 3, affectedIdentities: nil, sequence: 3, addedCIDRs: [prefix: identity]))
    ordering.consumed(sequence: 3, instanceID: nil, triggered: [])
    await cidrs.installAfterPeers(
      through: PolicyEventSequence(sequence: 3, instanceID: "a"), ordering: ordering)
    #expect(ipcache.entries.withLock { $0[prefix] } == identity)
    await cidrs.removeBeforeRegenerating(
      PolicyChange(
        revision: 4, affectedIdentities: nil, sequence: 4, deletedIdentities: [identity]))
    #expect(ipcache.entries.withLock { $0[prefix] } == nil)
    #expect(ipcache.writes.withLock { $0.last } == "delete [\(prefix)]")
  }
}
