import DatapathService
import Foundation
import IdentityService
import PolicyService
import Synchronization
import TesseraCore
import Testing

@testable import EndpointService

/// The in-process node with the policy service's event log between the
/// SelectorCache and the endpoint manager, delivered late on purpose, and a
/// datapath that records every realisation in order.
struct EventedNode {
  let engine: PolicyEngine
  let events: PolicyEvents
  let allocator: IdentityAllocator
  let datapath: Datapath
  let log: RealizeLog
  let manager: EndpointManager
  let pump: Task<Void, Never>
  /// While on, the WatchPolicy consumer delivers nothing (a stuck watch).
  let watchPaused = Flag()
  /// GetEventSequence reads the endpoint manager made.
  let sequenceReads = Counter()

  /// Announces identities the way the policy service does: SelectorCache, then an event.
  struct EventedPolicySink: IdentityChangeSink {
    let engine: PolicyEngine
    let events: PolicyEvents
    /// Set: the policy service learns identities this late, after the allocation returned
    /// (a replica that follows the identity service's watch).
    var lateBy: Duration? = nil
    func identitiesChanged(added: [SecurityIdentity], deleted: [NumericIdentity]) async throws
      -> String
    {
      let (engine, events) = (self.engine, self.events)
      let apply: @Sendable () -> Void = {
        let result = engine.updateIdentities(added: added, deleted: deleted)
        events.publish(
          revision: engine.revision, affected: result.affected, added: added, deleted: deleted)
      }
      if let lateBy {
        Task {
          try? await Task.sleep(for: lateBy)
          apply()
        }
      } else {
        apply()
      }
      return events.instanceID
    }
  }

  struct EventedPolicies: PolicyComputing {
    let engine: PolicyEngine
    let events: PolicyEvents
    /// false: behave like a policy service without an event sequence (no ordering).
    let ordered: Bool
    /// Set: every other sequence read is answered by another replica behind the same
    /// address (its own instance, far ahead), which the node's watch does not follow.
    var otherReplica: Counter? = nil
    /// Counts the sequence reads.
    var sequenceReads = Counter()
    func computePolicy(for identity: SecurityIdentity) async throws(EndpointError) -> EndpointPolicy
    {
      engine.computePolicy(for: identity)
    }
    func eventSequence() async throws(EndpointError) -> PolicyEventSequence? {
      ordered ? PolicyEventSequence(sequence: events.sequence, instanceID: events.instanceID) : nil
    }
    func eventSequence(requiring identities: Set<NumericIdentity>) async throws(EndpointError) -> (
      PolicyEventSequence, unknown: Set<NumericIdentity>
    )? {
      guard ordered else { return nil }
      _ = sequenceReads.increment()
      let unknown = engine.unknownIdentities(among: identities)
      if let otherReplica {
        if otherReplica.increment().isMultiple(of: 2) {
          return (PolicyEventSequence(sequence: 1_000_000, instanceID: "other-replica"), unknown)
        }
      }
      return (
        PolicyEventSequence(sequence: events.sequence, instanceID: events.instanceID), unknown
      )
    }
  }

  /// Every realisation and removal, in the order the datapath saw them.
  final class RealizeLog: Sendable {
    enum Call: Sendable {
      case realize(endpointID: UInt64, identity: NumericIdentity, policy: EndpointPolicy)
      case remove(endpointID: UInt64)
    }
    private let calls = Mutex<[Call]>([])
    func append(_ call: Call) { calls.withLock { $0.append(call) } }
    var all: [Call] { calls.withLock { $0 } }

    /// The policy `peer` had in force when `subject` was first realised with `identity`.
    func peerPolicy(_ peer: UInt64, whenRealizing subject: UInt64, as identity: NumericIdentity)
      -> EndpointPolicy?
    {
      var inForce: EndpointPolicy?
      for call in all {
        guard case .realize(let id, let realizedIdentity, let policy) = call else { continue }
        if id == subject && realizedIdentity == identity { return inForce }
        if id == peer { inForce = policy }
      }
      return nil
    }
  }

  struct RecordingDatapaths: DatapathRealizing {
    let inner: InProcessNode.Datapaths
    let log: RealizeLog
    func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError) -> UInt64 {
      let revision = try await inner.realize(endpoint: endpoint, policy: policy)
      log.append(.realize(endpointID: endpoint.id, identity: endpoint.identity, policy: policy))
      return revision
    }
    func removeEndpoint(id: UInt64) async throws(EndpointError) {
      log.append(.remove(endpointID: id))
      try await inner.removeEndpoint(id: id)
    }
    func realizedEndpoints() async throws(EndpointError) -> [UInt64: (
      identity: NumericIdentity, revision: UInt64
    )] {
      try await inner.realizedEndpoints()
    }
  }

  /// - Parameters:
  ///   - ordered: whether the policy service reports its event sequence.
  ///   - watchDelay: how late each event reaches the endpoint manager.
  ///   - watchNamesIdentities: whether the watch's events name the identities they
  ///     bring in or remove (a policy service from before they did: false).
  init(
    ordered: Bool = true, watchDelay: Duration = .milliseconds(100),
    requestTimeout: Duration = .seconds(5),
    identitiesLateBy: Duration? = nil, otherReplica: Counter? = nil,
    watchNamesIdentities: Bool = true
  ) async throws {
    let engine = try PolicyEngine(database: nil)
    let events = PolicyEvents()
    self.engine = engine
    self.events = events
    allocator = IdentityAllocator(
      configuration: .init(nodeName: "test"), store: try SQLiteIdentityStore(path: nil),
      changeSink: EventedPolicySink(engine: engine, events: events, lateBy: identitiesLateBy))
    datapath = try Datapath(backend: MemoryDatapathBackend())
    let log = RealizeLog()
    self.log = log
    let manager = EndpointManager(
      configuration: .init(
        requestTimeout: requestTimeout, regenerationRetryDelay: .milliseconds(50)),
      metadata: MetadataResolver(source: try WorkloadRegistry(file: nil)),
      identities: InProcessNode.Identities(allocator: allocator, down: Flag()),
      policy: EventedPolicies(
        engine: engine, events: events, ordered: ordered, otherReplica: otherReplica,
        sequenceReads: sequenceReads),
      datapath: RecordingDatapaths(
        inner: InProcessNode.Datapaths(datapath: datapath, down: Flag()), log: log),
      store: nil)
    self.manager = manager
    // The WatchPolicy consumer, slow on purpose: peers learn of changes late.
    let subscription = events.subscribe()
    let initial = PolicyChange(
      revision: engine.revision, affectedIdentities: [], sequence: subscription.sequence,
      instanceID: events.instanceID, namesIdentityChanges: ordered && watchNamesIdentities)
    // Before any create: the consumer's position is known from the start.
    await manager.policyChanged(initial)
    let paused = watchPaused
    let namesIdentities = ordered && watchNamesIdentities
    pump = Task {
      for await event in subscription.events {
        try? await Task.sleep(for: watchDelay)
        while paused.isOn && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(10)) }
        var change = PolicyChange(liveEvent: event)
        if !namesIdentities {
          change.addedIdentities = [:]
          change.deletedIdentities = []
        }
        await manager.policyChanged(change)
      }
    }
  }

  func importPolicy(_ yaml: String) throws {
    let result = try engine.importPolicies(sourceName: "p.yaml", content: Array(yaml.utf8))
    events.publish(revision: result.revision, affected: result.affected)
  }

  func create(_ container: String, _ ip: String, _ labels: String...) async throws -> Endpoint {
    try await manager.createEndpoint(
      EndpointSpec(
        containerID: container, ips: [IPPrefix(ip)!], labels: try LabelSet(parsing: labels)),
      sync: true)
  }

  /// Where most ordering cases start: ``denyXAllowRest`` in force and its `peer` created.
  func createPeerDenyingX() async throws -> Endpoint {
    try importPolicy(denyXAllowRest)
    return try await create("peer", "10.0.0.1", "app=peer")
  }
}

/// "Deny label X, allow everything else" on the peer.
let denyXAllowRest = """
  apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata: {name: peer, namespace: default}
  spec:
    endpointSelector: {matchLabels: {app: peer}}
    ingress:
    - fromEntities: [all]
    ingressDeny:
    - fromEndpoints: [{matchLabels: {app: x}}]
  """

@Suite("Policy ordering: peers' policy maps before the ipcache")
struct PolicyOrderingTests {
  @Test(
    "a new pod's identity is denied by the peer's policy map before the pod's own realisation writes its address"
  )
  func createWaitsForPeers() async throws {
    let node = try await EventedNode()
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let started = ContinuousClock.now
    let x = try await node.create("x", "10.0.0.2", "app=x")
    let inForce = try #require(node.log.peerPolicy(peer.id, whenRealizing: x.id, as: x.identity))
    #expect(inForce.verdict(peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny)
    #expect(
      ContinuousClock.now - started >= .milliseconds(100), "the create waited for the late watch")
    #expect(
      node.datapath.endpoint(id: peer.id)?.policy.verdict(
        peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny)
    #expect(node.manager.ordering.pendingCount == 0)
  }

  @Test(
    "a policy service that learns the new identity late (a watch-fed replica) still has the peer deny it first"
  )
  func lateIdentityStillOrdered() async throws {
    let node = try await EventedNode(
      watchDelay: .milliseconds(10), identitiesLateBy: .milliseconds(300))
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let started = ContinuousClock.now
    let x = try await node.create("x", "10.0.0.2", "app=x")
    #expect(
      ContinuousClock.now - started >= .milliseconds(300),
      "the create waited for the policy service to learn the identity")
    let inForce = try #require(node.log.peerPolicy(peer.id, whenRealizing: x.id, as: x.identity))
    #expect(inForce.verdict(peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny)
  }

  @Test(
    "without the event sequence the same create admits the new identity at the peer (the check can fail)"
  )
  func unorderedAdmits() async throws {
    let node = try await EventedNode(ordered: false)
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let x = try await node.create("x", "10.0.0.2", "app=x")
    let inForce = try #require(node.log.peerPolicy(peer.id, whenRealizing: x.id, as: x.identity))
    #expect(inForce.verdict(peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .allow)
  }

  @Test("a relabel to a denied label is realised only after the peer denies the new identity")
  func relabelWaitsForPeers() async throws {
    let node = try await EventedNode()
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let y = try await node.create("y", "10.0.0.2", "app=y")
    let relabelled = try await node.manager.updateLabels(
      endpointID: y.id, requestLabels: try LabelSet(parsing: ["app=x", "tier=late"]), sync: true)
    #expect(relabelled.identity != y.identity)
    let inForce = try #require(
      node.log.peerPolicy(peer.id, whenRealizing: y.id, as: relabelled.identity))
    #expect(
      inForce.verdict(peer: relabelled.identity, direction: .ingress, proto: .tcp, port: 80)
        == .deny)
  }

  @Test(
    "concurrent creates of denied pods and peers neither deadlock nor get ahead of the existing peer"
  )
  func concurrentCreates() async throws {
    let node = try await EventedNode(watchDelay: .milliseconds(20))
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let created = try await withThrowingTaskGroup(of: Endpoint.self) { group in
      for i in 0..<6 {
        group.addTask {
          i.isMultiple(of: 3)
            ? try await node.create("p\(i)", "10.0.1.\(i + 1)", "app=peer", "n=\(i)")
            : try await node.create("x\(i)", "10.0.1.\(i + 1)", "app=x", "n=\(i)")
        }
      }
      return try await group.reduce(into: [Endpoint]()) { $0.append($1) }
    }
    for x in created where x.labels["app"]?.value == "x" {
      let inForce = try #require(node.log.peerPolicy(peer.id, whenRealizing: x.id, as: x.identity))
      #expect(
        inForce.verdict(peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny,
        "x\(x.id)")
      // When all creates returned, every peer denies every x.
      for p in created where p.labels["app"]?.value == "peer" {
        #expect(
          node.datapath.endpoint(id: p.id)?.policy.verdict(
            peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny)
      }
    }
  }

  @Test(
    "another node's pod: its identity is admitted to the ipcache only once the peer's map denies it"
  )
  func remoteIdentityWaitsForPeers() async throws {
    let node = try await EventedNode()
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    // Not yet known to the policy service (its identity service has not told it): must wait.
    let stranger = IdentityFingerprint(id: NumericIdentity(rawValue: 70_000), labelsDigest: nil)
    let early = try await node.manager.waitForPolicyOrdering(
      admitting: [stranger], deadline: .now + .seconds(2))
    #expect(early == [stranger])
    // Allocated elsewhere in the cluster; this node's policy service learns it, peers catch up late.
    let started = ContinuousClock.now
    let (remote, _) = try await node.allocator.allocateIdentity(
      labels: try LabelSet(parsing: ["app=x", "run=b", "io.kubernetes.pod.namespace=default"]),
      node: "b")
    let unknown = try await node.manager.waitForPolicyOrdering(
      admitting: [IdentityFingerprint(remote)], deadline: .now + .seconds(5))
    #expect(unknown.isEmpty)
    #expect(ContinuousClock.now - started >= .milliseconds(100), "the wait covered the late watch")
    #expect(
      node.datapath.endpoint(id: peer.id)?.policy.verdict(
        peer: remote.id, direction: .ingress, proto: .tcp, port: 80) == .deny)
  }

  @Test(
    "another node's entry naming an identity the watch saw arrive with those labels is admitted without a sequence read; another digest or none asks"
  )
  func remoteIdentityOrderedFromTheWatch() async throws {
    let node = try await EventedNode(watchDelay: .milliseconds(20))
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let labels = try LabelSet(parsing: ["app=x", "run=c", "io.kubernetes.pod.namespace=default"])
    let (remote, _) = try await node.allocator.allocateIdentity(labels: labels, node: "b")
    let deadline = ContinuousClock.now + .seconds(5)
    while node.manager.ordering.localTarget(for: remote) == nil {
      #expect(ContinuousClock.now < deadline, "the watch never delivered the identity")
      try await Task.sleep(for: .milliseconds(5))
    }
    let reads = node.sequenceReads.value
    let unknown = try await node.manager.waitForPolicyOrdering(
      admitting: [IdentityFingerprint(remote)], deadline: .now + .seconds(5))
    #expect(unknown.isEmpty)
    #expect(node.sequenceReads.value == reads, "the entry's identity was asked about")
    #expect(
      node.datapath.endpoint(id: peer.id)?.policy.verdict(
        peer: remote.id, direction: .ingress, proto: .tcp, port: 80) == .deny)
    // The same number under other labels (reused, or a lying node), or without a digest
    // (a node from before digests): asked, even beside one that needs no question.
    for named in [
      IdentityFingerprint(id: remote.id, labelsDigest: remote.labels.canonicalDigest &+ 1),
      IdentityFingerprint(id: remote.id, labelsDigest: nil),
    ] {
      let before = node.sequenceReads.value
      _ = try await node.manager.waitForPolicyOrdering(
        admitting: [named, IdentityFingerprint(remote)],
        deadline: .now + .seconds(5))
      #expect(node.sequenceReads.value == before + 1, "\(named) was trusted without asking")
    }
  }

  @Test(
    "two policy replicas behind one address: a sequence read from the one the watch does not follow is read again, not waited for"
  )
  func sequenceFromAnotherReplica() async throws {
    let reads = Counter()
    let node = try await EventedNode(
      watchDelay: .milliseconds(10), requestTimeout: .seconds(3), otherReplica: reads,
      watchNamesIdentities: false)
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let started = ContinuousClock.now
    for i in 0..<4 {
      let x = try await node.create("x\(i)", "10.0.0.\(i + 2)", "app=x", "n=\(i)")
      let inForce = try #require(node.log.peerPolicy(peer.id, whenRealizing: x.id, as: x.identity))
      #expect(
        inForce.verdict(peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny)
    }
    #expect(ContinuousClock.now - started < .seconds(2), "no create waited for its deadline")
    #expect(reads.value > 4, "the other replica answered some reads")
  }

  @Test(
    "an identity the watch saw enter the SelectorCache is ordered from the watch alone: no sequence read, the peer still denies it first"
  )
  func identitySeenOnTheWatchNeedsNoRead() async throws {
    let node = try await EventedNode(watchDelay: .milliseconds(20))
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    // Another node's pod brings the identity into the cluster; this node's watch sees it arrive.
    // As a pod carries them: its namespace's name label is propagated.
    let labels = try LabelSet(parsing: [
      "app=x", "io.kubernetes.pod.namespace=default",
      "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
    ])
    let (remote, _) = try await node.allocator.allocateIdentity(labels: labels, node: "b")
    let deadline = ContinuousClock.now + .seconds(5)
    while node.manager.ordering.localTarget(for: remote) == nil {
      #expect(ContinuousClock.now < deadline, "the watch never delivered the identity")
      try await Task.sleep(for: .milliseconds(5))
    }
    let reads = node.sequenceReads.value
    let x = try await node.create("x", "10.0.0.2", "app=x")
    #expect(x.identity == remote.id)
    #expect(node.sequenceReads.value == reads, "the create asked for the event sequence")
    let inForce = try #require(node.log.peerPolicy(peer.id, whenRealizing: x.id, as: x.identity))
    #expect(inForce.verdict(peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny)
  }

  @Test(
    "a new identity's first pod waits for the identity's arrival on the watch, not for a sequence read; the peer denies it first"
  )
  func newIdentityOrderedByItsArrival() async throws {
    let node = try await EventedNode(watchDelay: .milliseconds(50))
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    let started = ContinuousClock.now
    let x = try await node.create("x", "10.0.0.2", "app=x")
    #expect(node.sequenceReads.value == 0, "a create asked for the event sequence")
    #expect(ContinuousClock.now - started >= .milliseconds(50), "the create waited for the watch")
    let inForce = try #require(node.log.peerPolicy(peer.id, whenRealizing: x.id, as: x.identity))
    #expect(inForce.verdict(peer: x.identity, direction: .ingress, proto: .tcp, port: 80) == .deny)
  }

  @Test("an arrival is waited for only on a stream that names identities, and ends when it comes")
  func arrivalWaitedForOnlyWhenNamed() async throws {
    let ordering = PolicyOrdering()
    ordering.consumed(sequence: 1, instanceID: "one", triggered: [], resync: true)
    let a = try identity(300, "app=a")
    ordering.expectArrival(of: a)
    let started = ContinuousClock.now
    #expect(await ordering.awaitArrival(of: a, within: .seconds(5)) == nil)
    #expect(ContinuousClock.now - started < .seconds(1), "waited on a stream that names nothing")
    let other = try identity(299, "app=other")
    ordering.consumed(sequence: 2, instanceID: nil, triggered: [], added: arrived(other))
    ordering.expectArrival(of: a)
    async let arrival = ordering.awaitArrival(of: a, within: .seconds(5))
    try await Task.sleep(for: .milliseconds(20))
    ordering.consumed(sequence: 3, instanceID: nil, triggered: [], added: arrived(a))
    #expect(await arrival == PolicyEventSequence(sequence: 3, instanceID: "one"))
  }

  @Test(
    "what the watch and the sequence reads tell about held identities: labels, removals, stale answers, resyncs and other instances"
  )
  func heldIdentitiesBookkeeping() throws {
    let ordering = PolicyOrdering()
    let (a, b) = (try identity(300, "app=a"), try identity(301, "app=b"))
    #expect(ordering.localTarget(for: a) == nil, "nothing followed yet")
    ordering.consumed(sequence: 10, instanceID: "one", triggered: [], resync: true)
    // A stream that has named no identity yet (a policy service from before it did): nothing is kept.
    ordering.learnt(b, heldAt: PolicyEventSequence(sequence: 14, instanceID: "one"))
    #expect(ordering.localTarget(for: b) == nil)
    ordering.consumed(sequence: 11, instanceID: nil, triggered: [], added: arrived(a))
    ordering.consumed(sequence: 12, instanceID: nil, triggered: [])
    #expect(ordering.localTarget(for: a) == PolicyEventSequence(sequence: 12, instanceID: "one"))
    #expect(ordering.localTarget(for: b) == nil, "b was never seen")
    // The same number with other labels is another identity (a number reused after GC).
    let reused = try identity(300, "app=reused")
    #expect(ordering.localTarget(for: reused) == nil)
    // A read answered by the followed instance at or after the watch's position is kept.
    ordering.learnt(b, heldAt: PolicyEventSequence(sequence: 14, instanceID: "one"))
    #expect(ordering.localTarget(for: b) == PolicyEventSequence(sequence: 14, instanceID: "one"))
    // The watch applies b's removal: forgotten.
    ordering.consumed(sequence: 13, instanceID: nil, triggered: [], deleted: [b.id])
    #expect(ordering.localTarget(for: b) == nil)
    // An answer older than what the watch applied may predate a removal: not kept.
    ordering.learnt(b, heldAt: PolicyEventSequence(sequence: 12, instanceID: "one"))
    #expect(ordering.localTarget(for: b) == nil)
    // Nor an answer from an instance the watch does not follow.
    ordering.learnt(b, heldAt: PolicyEventSequence(sequence: 99, instanceID: "two"))
    #expect(ordering.localTarget(for: b) == nil)
    // The number allocated anew for other labels: what was held for it is forgotten,
    // and the new labels are not held until their arrival shows.
    ordering.expectArrival(of: reused)
    #expect(ordering.localTarget(for: a) == nil)
    #expect(ordering.localTarget(for: reused) == nil)
    ordering.consumed(sequence: 14, instanceID: nil, triggered: [], added: arrived(reused))
    #expect(
      ordering.localTarget(for: reused) == PolicyEventSequence(sequence: 14, instanceID: "one"))
    // A resync (events may have been missed) forgets everything.
    ordering.consumed(sequence: 20, instanceID: "one", triggered: [], resync: true)
    #expect(ordering.localTarget(for: reused) == nil)
    ordering.consumed(sequence: 21, instanceID: nil, triggered: [], added: arrived(a))
    // A new instance forgets everything too.
    ordering.consumed(sequence: 1, instanceID: "two", triggered: [], resync: true)
    #expect(ordering.localTarget(for: a) == nil)
    // One that says on its first event that it names identity changes: answers are kept at once.
    ordering.consumed(
      sequence: 5, instanceID: "three", triggered: [], resync: true, namesIdentityChanges: true)
    ordering.learnt(b, heldAt: PolicyEventSequence(sequence: 6, instanceID: "three"))
    #expect(ordering.localTarget(for: b) == PolicyEventSequence(sequence: 6, instanceID: "three"))
  }

  private func identity(_ id: UInt32, _ label: String) throws -> SecurityIdentity {
    SecurityIdentity(id: NumericIdentity(rawValue: id), labels: try LabelSet(parsing: [label]))
  }

  private func arrived(_ identity: SecurityIdentity) -> [NumericIdentity: UInt64] {
    [identity.id: identity.labels.canonicalDigest]
  }

  @Test("a peer that cannot catch up fails the create at its deadline and leaves nothing behind")
  func stuckPeerFailsCreate() async throws {
    // 1.5 s: long enough for the peer's own create on a loaded machine (CI runs
    // on two cores), short enough for the stuck one to fail quickly.
    let node = try await EventedNode(
      watchDelay: .milliseconds(10), requestTimeout: .milliseconds(1500))
    defer { node.pump.cancel() }
    let peer = try await node.createPeerDenyingX()
    node.watchPaused.set(true)
    await #expect(throws: EndpointError.self) {
      _ = try await node.create("x", "10.0.0.2", "app=x")
    }
    #expect(node.manager.registry.all().map(\.id) == [peer.id])
    let realizedX = node.log.all.contains {
      if case .realize(let id, _, _) = $0 { return id != peer.id }
      return false
    }
    #expect(!realizedX, "the denied pod's address never reached the datapath")
    let stored = try await node.allocator.store.identities()
    #expect(
      stored.filter { $0.identity.labels.description.contains("app=x") }.allSatisfy {
        $0.totalReferences == 0
      })
  }
}
