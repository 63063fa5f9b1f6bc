import Foundation
import LocalEtcd
import Synchronization
import TesseraCore
import TesseraEtcd
import Testing

@testable import IdentityService

/// One identity-service replica's store against a real etcd, with its background work running.
final class EtcdReplica: Sendable {
  let store: EtcdIdentityStore
  let client: EtcdClient
  let node: String
  let changes = ChangeRecorder()
  private let tasks = Mutex<[Task<Void, Never>]>([])

  init(
    _ cluster: LocalEtcdCluster, node: String, statePath: String? = nil, leaseTTL: Int64 = 30,
    tls: EtcdConfiguration.TLSFiles = .init(), localNode: String? = nil
  ) async throws {
    self.node = node
    client = try EtcdClient(configuration: EtcdConfiguration(parsing: cluster.endpoints, tls: tls))
    store = try EtcdIdentityStore(
      client: client,
      configuration: .init(
        prefix: "/test", leaseTTLSeconds: leaseTTL, nodeStatePath: statePath, localNode: localNode))
    let client = self.client
    let store = self.store
    tasks.withLock { tasks in
      tasks.append(Task { try? await client.runConnections() })
      tasks.append(
        Task { [changes] in
          try? await store.run { newIdentities, deletedIdentities in
            changes.record(added: newIdentities, deleted: deletedIdentities)
          }
        })
    }
    // Generous: the whole suite runs in parallel on two cores.
    try await eventually("replica \(node) ready", timeout: .seconds(60)) { store.isReady }
  }

  func allocate(_ labels: LabelSet) async throws(IdentityError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    try await store.allocate(labels: labels, node: node)
  }

  func stop() {
    tasks.withLock { $0.forEach { $0.cancel() } }
    client.beginGracefulShutdown()
  }

  deinit { stop() }
}

/// Identities a replica's store reported as added or deleted by others.
final class ChangeRecorder: Sendable {
  private let log = Mutex<(added: [NumericIdentity], deleted: [NumericIdentity])>(([], []))

  func record(added: [SecurityIdentity], deleted: [SecurityIdentity]) {
    log.withLock {
      $0.added += added.map(\.id)
      $0.deleted += deleted.map(\.id)
    }
  }

  var added: [NumericIdentity] { log.withLock { $0.added } }
  var deleted: [NumericIdentity] { log.withLock { $0.deleted } }
}

final class Counter: Sendable {
  private let value = Atomic<Int>(0)
  func increment() { value.add(1, ordering: .relaxed) }
  var count: Int { value.load(ordering: .relaxed) }
}

/// Polls until `condition` holds, for at most `timeout`.
func eventually(
  _ what: String, timeout: Duration = .seconds(15), _ condition: () async throws -> Bool
) async throws {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if try await condition() { return }
    try await Task.sleep(for: .milliseconds(50))
  }
  throw LocalEtcdClusterError("timed out waiting for: \(what)")
}

/// What etcd itself holds under the test prefix, read with a separate client.
struct EtcdContents {
  var identities: [UInt32: String] = [:]
  var labelIndex: [String: UInt32] = [:]
  var references: [String: Set<String>] = [:]  // labels -> nodes
  var referenceLeases: [String: Int64] = [:]  // "labels/node" -> lease
  var nodeLeases: [String: Int64] = [:]  // node served over the network -> its lease

  static func read(_ cluster: LocalEtcdCluster) async throws -> EtcdContents {
    let client = try EtcdClient(configuration: EtcdConfiguration(parsing: cluster.endpoints))
    let connections = Task { try? await client.runConnections() }
    defer {
      client.beginGracefulShutdown()
      connections.cancel()
    }
    var contents = EtcdContents()
    for kv in try await client.rangeAll(prefix: "/test/").kvs {
      let key = String(decoding: kv.key, as: UTF8.self)
      let value = String(decoding: kv.value, as: UTF8.self)
      if key.hasPrefix("/test/id/") {
        contents.identities[try #require(UInt32(key.dropFirst("/test/id/".count)))] = value
      } else if key.hasPrefix("/test/labels/") {
        guard let id = UInt32(value) else {
          throw LocalEtcdClusterError("label index \(key) holds \(value)")
        }
        contents.labelIndex[String(key.dropFirst("/test/labels/".count))] = id
      } else if key.hasPrefix("/test/value/") {
        let rest = key.dropFirst("/test/value/".count)
        let slash = try #require(rest.lastIndex(of: "/"))
        contents.references[String(rest[..<slash]), default: []].insert(
          String(rest[rest.index(after: slash)...]))
        contents.referenceLeases[String(rest)] = kv.lease
      } else if key.hasPrefix("/test/nodes/") {
        contents.nodeLeases[String(key.dropFirst("/test/nodes/".count))] = kv.lease
      } else if !key.hasPrefix("/test/ops/") {  // answers kept for retried calls
        Issue.record("unexpected key \(key)")
      }
    }
    return contents
  }

  /// Every identity has exactly one label set and every label set one identity.
  func expectUniqueBothWays(sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(
      Set(identities.values).count == identities.count, "two identities share a label set",
      sourceLocation: sourceLocation)
    #expect(
      labelIndex.count == identities.count, "label index and identities differ in size",
      sourceLocation: sourceLocation)
    for (id, labels) in identities {
      #expect(
        labelIndex[labels] == id,
        "labels \(labels) index \(String(describing: labelIndex[labels])), identity says \(id)",
        sourceLocation: sourceLocation)
    }
    for labels in references.keys {
      #expect(
        labelIndex[labels] != nil, "a reference to labels without an identity: \(labels)",
        sourceLocation: sourceLocation)
    }
  }
}

func labelSet(_ index: Int) throws -> LabelSet {
  try LabelSet(parsing: [
    "k8s:app=app\(index % 37)", "k8s:tier=t\(index / 37)",
    "k8s:io.kubernetes.pod.namespace=ns\(index % 3)",
  ])
}

@Suite(
  "etcd identity store (real etcd)", .serialized,
  .enabled(
    if: LocalEtcdCluster.skipReason == nil, "etcd not installed (run scripts/install-deps.sh)"))
struct EtcdIdentityStoreTests {
  @Test(
    "replicas allocating overlapping label sets in parallel agree, never duplicate, and count every reference"
  )
  func concurrentReplicas() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let replicas = try await [
      EtcdReplica(cluster, node: "n1"), EtcdReplica(cluster, node: "n2"),
      EtcdReplica(cluster, node: "n3"),
    ]
    let labelSets = try (0..<150).map(labelSet)
    let perReplica = 700

    // Each replica: 8 concurrent workers, deterministic choices.
    let results = try await withThrowingTaskGroup(of: (String, [Int: UInt32], [Int: Int]).self) {
      group in
      for (replicaIndex, replica) in replicas.enumerated() {
        for worker in 0..<8 {
          group.addTask {
            var rng = SplitMix(seed: UInt64(replicaIndex * 100 + worker))
            var ids: [Int: UInt32] = [:]
            var counts: [Int: Int] = [:]
            for _ in 0..<(perReplica / 8) {
              let index = Int(rng.next() % UInt64(labelSets.count))
              let identity = try await replica.allocate(labelSets[index]).identity
              if let seen = ids[index] { #expect(seen == identity.id.rawValue) }
              ids[index] = identity.id.rawValue
              counts[index, default: 0] += 1
            }
            return (replica.node, ids, counts)
          }
        }
      }
      var collected: [(String, [Int: UInt32], [Int: Int])] = []
      for try await result in group { collected.append(result) }
      return collected
    }

    var idForLabels: [Int: UInt32] = [:]
    var expectedCounts: [String: [Int: Int]] = [:]
    for (node, ids, counts) in results {
      for (index, id) in ids {
        if let other = idForLabels[index] {
          #expect(other == id, "label set \(index) got \(other) and \(id)")
        }
        idForLabels[index] = id
      }
      for (index, count) in counts {
        expectedCounts[node, default: [:]][index, default: 0] += count
      }
    }
    #expect(Set(idForLabels.values).count == idForLabels.count, "two label sets share an identity")

    let contents = try await EtcdContents.read(cluster)
    contents.expectUniqueBothWays()
    #expect(contents.identities.count == idForLabels.count)
    for replica in replicas {
      for (index, count) in expectedCounts[replica.node] ?? [:] {
        let stored = try #require(try await replica.store.identity(labels: labelSets[index]))
        #expect(stored.references[replica.node] == count, "\(replica.node) label set \(index)")
        #expect(contents.references[labelSets[index].canonicalKey]?.contains(replica.node) == true)
      }
    }
    let totalReferenceKeys = contents.references.values.map(\.count).reduce(0, +)
    #expect(totalReferenceKeys == expectedCounts.values.map(\.count).reduce(0, +))

    // Releasing every reference removes every reference key, and nothing else.
    for replica in replicas {
      for (index, count) in expectedCounts[replica.node] ?? [:] {
        for _ in 0..<count {
          _ = try await replica.store.release(
            id: NumericIdentity(idForLabels[index]!), node: replica.node)
        }
      }
    }
    let after = try await EtcdContents.read(cluster)
    #expect(after.references.isEmpty)
    #expect(after.identities == contents.identities)
    for replica in replicas { replica.stop() }
  }

  @Test("the watch brings identities made on one replica to the others")
  func watchSpreadsIdentities() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let first = try await EtcdReplica(cluster, node: "n1")
    let second = try await EtcdReplica(cluster, node: "n2")
    let made = try await first.allocate(labelSet(1))
    #expect(made.isNew)
    try await eventually("n2 learns the identity") {
      second.changes.added.contains(made.identity.id)
    }
    #expect(
      first.changes.added.isEmpty,
      "the replica that made it reports it itself, not again from the watch")
    #expect(try await second.store.identity(labels: labelSet(1))?.identity.id == made.identity.id)
    first.stop()
    second.stop()
  }

  @Test(
    "garbage collection deletes an unreferenced identity on its second round, and never one taken meanwhile"
  )
  func garbageCollection() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let a = try await EtcdReplica(cluster, node: "a")
    let b = try await EtcdReplica(cluster, node: "b")
    let kept = try await a.allocate(labelSet(1)).identity
    let released = try await a.allocate(labelSet(2)).identity
    let reused = try await a.allocate(labelSet(3)).identity
    _ = try await a.store.release(id: released.id, node: "a")
    _ = try await a.store.release(id: reused.id, node: "a")

    #expect(
      try await a.store.collectGarbage(gracePeriodMilliseconds: 0).isEmpty,
      "the first round only marks")
    // Between the rounds, another node takes one of the marked identities.
    #expect(try await b.allocate(labelSet(3)).identity.id == reused.id)
    let deleted = try await a.store.collectGarbage(gracePeriodMilliseconds: 0)
    #expect(deleted.map(\.id) == [released.id])

    let contents = try await EtcdContents.read(cluster)
    #expect(contents.identities[released.id.rawValue] == nil)
    #expect(contents.identities[kept.id.rawValue] != nil)
    #expect(contents.identities[reused.id.rawValue] != nil)
    contents.expectUniqueBothWays()
    try await eventually("b's cache drops the deleted identity") {
      b.changes.deleted.contains(released.id)
    }

    // The grace period holds an unreferenced identity back.
    _ = try await b.store.release(id: reused.id, node: "b")
    #expect(try await a.store.collectGarbage(gracePeriodMilliseconds: 60_000).isEmpty)
    #expect(try await a.store.collectGarbage(gracePeriodMilliseconds: 60_000).isEmpty)
    #expect(try await EtcdContents.read(cluster).identities[reused.id.rawValue] != nil)
    a.stop()
    b.stop()
  }

  @Test(
    "with etcd down, known identities resolve and new ones fail fast and retryably; all recovers when it returns"
  )
  func outage() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let a = try await EtcdReplica(cluster, node: "a")
    let b = try await EtcdReplica(cluster, node: "b")
    let known = try await a.allocate(labelSet(1)).identity
    try await eventually("b knows the identity") {
      try await b.store.identity(labels: labelSet(1)) != nil
    }

    cluster.stopAll()
    #expect(
      try await a.allocate(labelSet(1)).identity.id == known.id, "a local reference needs no etcd")
    #expect(
      try await b.allocate(labelSet(1)).identity.id == known.id,
      "a cached identity is taken, its reference written later")
    #expect(try await b.store.identity(labels: labelSet(1))?.identity.id == known.id)
    let start = ContinuousClock.now
    await #expect {
      _ = try await a.allocate(labelSet(2))
    } throws: { error in
      (error as? IdentityError)?.code == .storeUnavailable
    }
    #expect(
      ContinuousClock.now - start < .seconds(10), "a new identity fails fast while etcd is down")

    try cluster.startAll()
    try await eventually("b's pending reference reaches etcd") {
      try await EtcdContents.read(cluster).references[labelSet(1).canonicalKey] == ["a", "b"]
    }
    try await eventually("new identities work again") {
      (try? await a.allocate(labelSet(2))) != nil
    }
    try await EtcdContents.read(cluster).expectUniqueBothWays()
    a.stop()
    b.stop()
  }

  @Test(
    "killing one member of three during allocations does not stop them; stopping all fails new ones; restarting recovers"
  )
  func threeMembers() async throws {
    let cluster = try LocalEtcdCluster(members: 3)
    defer { cluster.shutdown() }
    let replicas = try await [EtcdReplica(cluster, node: "n1"), EtcdReplica(cluster, node: "n2")]
    let labelSets = try (0..<120).map(labelSet)
    let retries = Counter()
    let done = Counter()
    try await withThrowingTaskGroup(of: Void.self) { group in
      for (replicaIndex, replica) in replicas.enumerated() {
        for worker in 0..<4 {
          group.addTask {
            for step in 0..<60 {
              let labels = labelSets[(step * 7 + worker * 13 + replicaIndex * 5) % labelSets.count]
              // The CNI runtime retries on "try again" (code 11); so does this loop, a bounded number of times.
              var attempt = 0
              while true {
                do {
                  _ = try await replica.allocate(labels)
                  done.increment()
                  break
                } catch let error as IdentityError
                  where error.code == .storeUnavailable && attempt < 5
                {
                  attempt += 1
                  retries.increment()
                  try await Task.sleep(for: .milliseconds(200))
                }
              }
            }
          }
        }
      }
      group.addTask {
        // m0 is the member every client starts with.
        try await eventually("a quarter of the allocations done") { done.count >= 120 }
        cluster.kill("m0")
        #expect(done.count < 400, "the member died while allocations were still running")
      }
      try await group.waitForAll()
    }
    print("etcd 3 members: one killed during 480 allocations; \(retries.count) retried")
    #expect(done.count == 480)
    try await EtcdContents.read(cluster).expectUniqueBothWays()

    cluster.stopAll()
    #expect(
      try await replicas[0].store.identity(labels: labelSets[0]) != nil, "cached lookups still work"
    )
    await #expect(throws: IdentityError.self) { _ = try await replicas[0].allocate(labelSet(500)) }
    try cluster.startAll()
    try await eventually("allocations recover") {
      (try? await replicas[0].allocate(labelSet(500))) != nil
    }
    try await EtcdContents.read(cluster).expectUniqueBothWays()
    for replica in replicas { replica.stop() }
  }

  @Test("a lost lease re-creates the node's references under a new one")
  func lostLease() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let a = try await EtcdReplica(cluster, node: "a", leaseTTL: 10)
    _ = try await a.allocate(labelSet(1))
    _ = try await a.allocate(labelSet(2))
    let oldLease = a.store.lease
    try await a.client.revokeLease(oldLease)
    try await eventually("references are back under a new lease") {
      let contents = try await EtcdContents.read(cluster)
      return contents.referenceLeases.count == 2
        && contents.referenceLeases.values.allSatisfy { $0 != oldLease && $0 == a.store.lease }
    }
    a.stop()
  }

  @Test("syncing references rewrites the node's reference keys to what its endpoints hold")
  func syncReferences() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let a = try await EtcdReplica(cluster, node: "a")
    let kept = try await a.allocate(labelSet(1)).identity.id
    let leaked = try await a.allocate(labelSet(2)).identity.id
    let sync = try await a.store.syncReferences(
      node: "a", held: [kept: 2, NumericIdentity(77_777): 1])
    #expect(sync == ReferenceSync(dropped: 1, added: 1, missing: [NumericIdentity(77_777)]))
    try await eventually("the leaked reference key is deleted") {
      try await EtcdContents.read(cluster).references[labelSet(2).canonicalKey] == nil
    }
    #expect(try await EtcdContents.read(cluster).references[labelSet(1).canonicalKey] == ["a"])
    #expect(try await a.store.identity(id: kept)?.references["a"] == 2)
    #expect(try await a.store.identity(id: leaked)?.references["a"] == nil)
    a.stop()
  }

  @Test(
    "replicas serving one remote node share its counts in etcd: either one releases, nothing leaks, a dead replica loses none"
  )
  func remoteNodeCountedInEtcd() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let one = try await EtcdReplica(cluster, node: "replica-1", leaseTTL: 5, localNode: "replica-1")
    let two = try await EtcdReplica(cluster, node: "replica-2", leaseTTL: 5, localNode: "replica-2")
    let labels = try labelSet(1)
    let key = "\(labels.canonicalKey)/node-a"
    // node-a's calls alternate between the replicas, as endpointd's round-robin does.
    let first = try await one.store.allocate(labels: labels, node: "node-a")
    #expect(first.isNew)
    let id = first.identity.id
    let second = try await two.store.allocate(labels: labels, node: "node-a")
    #expect(second.identity.id == id && !second.isNew)
    _ = try await one.store.allocate(labels: labels, node: "node-a")
    #expect(try await two.store.identity(id: id)?.references["node-a"] == 3)
    // Released on the replica it was not taken on: counted down, not ignored.
    #expect(
      try await two.store.release(id: id, node: "node-a")
        == IdentityRelease(released: true, remainingReferences: 2))
    // Replica 1 dies with its lease: node-a's references are bound to node-a's lease.
    let nodeLease = try #require(try await EtcdContents.read(cluster).referenceLeases[key])
    #expect(nodeLease != 0 && nodeLease != one.store.lease && nodeLease != two.store.lease)
    try await one.client.revokeLease(one.store.lease)
    one.stop()
    #expect(try await EtcdContents.read(cluster).references[labels.canonicalKey] == ["node-a"])
    #expect(try await two.store.release(id: id, node: "node-a").remainingReferences == 1)
    #expect(try await two.store.release(id: id, node: "node-a").remainingReferences == 0)
    #expect(try await two.store.release(id: id, node: "node-a").released == false)
    #expect(try await EtcdContents.read(cluster).references.isEmpty)
    // A resync sets node-a's counts to what its endpoints hold.
    let other = try await two.store.allocate(labels: labelSet(2), node: "node-a").identity.id
    #expect(
      try await two.store.syncReferences(
        node: "node-a", held: [other: 3, NumericIdentity(77_777): 1])
        == ReferenceSync(dropped: 0, added: 2, missing: [NumericIdentity(77_777)]))
    #expect(try await two.store.identity(id: other)?.references["node-a"] == 3)
    #expect(
      try await two.store.syncReferences(node: "node-a", held: [:])
        == ReferenceSync(dropped: 3, added: 0, missing: []))
    #expect(try await EtcdContents.read(cluster).references.isEmpty)
    // The replica's own node is still counted locally, under its lease.
    _ = try await two.allocate(labelSet(3))
    #expect(
      try await EtcdContents.read(cluster).referenceLeases["\(labelSet(3).canonicalKey)/replica-2"]
        == two.store.lease)
    two.stop()
  }

  @Test(
    "a remote node's references live as long as its lease: renewed through either replica, gone when it stops, restored after"
  )
  func remoteNodeLease() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let one = try await EtcdReplica(cluster, node: "replica-1", leaseTTL: 5, localNode: "replica-1")
    let two = try await EtcdReplica(cluster, node: "replica-2", leaseTTL: 5, localNode: "replica-2")
    let labels = try labelSet(1)
    let key = "\(labels.canonicalKey)/node-a"
    let id = try await one.store.allocate(labels: labels, node: "node-a").identity.id
    let first = try await two.store.keepAliveNode("node-a")
    #expect(first.ttlSeconds > 0 && first.ttlSeconds <= 5 && !first.referencesLost)
    let lease = try #require(try await EtcdContents.read(cluster).referenceLeases[key])
    #expect(lease != 0 && lease != one.store.lease && lease != two.store.lease)
    #expect(try await EtcdContents.read(cluster).nodeLeases == ["node-a": lease])
    // Renewed through alternating replicas for longer than the TTL: the references stay.
    for round in 0..<8 {
      try await Task.sleep(for: .seconds(1))
      _ = try await (round % 2 == 0 ? one : two).store.keepAliveNode("node-a")
    }
    #expect(try await EtcdContents.read(cluster).references[labels.canonicalKey] == ["node-a"])
    // A replica's own node is counted under the replica's lease: nothing to renew.
    #expect(try await one.store.keepAliveNode("replica-1") == .notLeased)
    // node-a stops calling (it died): its references go after the TTL.
    try await eventually("node-a's references expire with its lease", timeout: .seconds(20)) {
      try await EtcdContents.read(cluster).references[labels.canonicalKey] == nil
    }
    #expect(try await EtcdContents.read(cluster).nodeLeases.isEmpty)
    // It comes back: a new lease, and it is told to restore what it holds.
    let back = try await two.store.keepAliveNode("node-a")
    #expect(back.referencesLost && back.ttlSeconds > 0)
    #expect(
      try await two.store.syncReferences(node: "node-a", held: [id: 2])
        == ReferenceSync(dropped: 0, added: 2, missing: []))
    // Replica 1 still has the expired lease in mind: its next write finds the new one.
    _ = try await one.store.allocate(labels: labels, node: "node-a")
    #expect(try await one.store.identity(id: id)?.references["node-a"] == 3)
    let renewed = try #require(try await EtcdContents.read(cluster).referenceLeases[key])
    #expect(renewed != lease && renewed != 0)
    #expect(try await one.store.keepAliveNode("node-a").referencesLost == false)
    one.stop()
    two.stop()
  }

  @Test(
    "a remote node's call retried with its request id, on the same or another replica, is applied once"
  )
  func retriedCallsApplyOnce() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let one = try await EtcdReplica(cluster, node: "replica-1", localNode: "replica-1")
    let two = try await EtcdReplica(cluster, node: "replica-2", localNode: "replica-2")
    let labels = try labelSet(1)
    let first = try await one.store.allocate(labels: labels, node: "node-a", requestID: "create-1")
    let id = first.identity.id
    // Replica 1 applied it and died before answering: the retry reaches replica 2.
    let retried = try await two.store.allocate(
      labels: labels, node: "node-a", requestID: "create-1")
    #expect(retried.identity.id == id && retried.isNew == first.isNew)
    _ = try await one.store.allocate(labels: labels, node: "node-a", requestID: "create-1")
    _ = try await two.store.allocate(labels: labels, node: "node-a", requestID: "create-2")
    #expect(try await two.store.identity(id: id)?.references["node-a"] == 2)
    // A retried release drops one reference, and answers as the first attempt did.
    let released = try await one.store.release(id: id, node: "node-a", requestID: "delete-1")
    #expect(released == IdentityRelease(released: true, remainingReferences: 1))
    #expect(try await two.store.release(id: id, node: "node-a", requestID: "delete-1") == released)
    #expect(try await two.store.identity(id: id)?.references["node-a"] == 1)
    // The same id from another node is another call; calls without an id are never merged.
    _ = try await two.store.allocate(labels: labels, node: "node-b", requestID: "create-1")
    _ = try await two.store.allocate(labels: labels, node: "node-b")
    _ = try await two.store.allocate(labels: labels, node: "node-b")
    #expect(try await one.store.identity(id: id)?.references == ["node-a": 1, "node-b": 3])
    // The answers are under a short lease of their own, not a replica's.
    let records = try await one.client.rangeAll(prefix: "/test/ops/").kvs
    #expect(records.count == 4)
    #expect(
      records.allSatisfy {
        $0.lease != 0 && $0.lease != one.store.lease && $0.lease != two.store.lease
      })
    one.stop()
    two.stop()
  }

  @Test("a restarted replica keeps its counts and its lease")
  func restart() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let statePath = cluster.directory + "/node-a.db"
    var a: EtcdReplica? = try await EtcdReplica(cluster, node: "a", statePath: statePath)
    let identity = try await a!.allocate(labelSet(1)).identity
    _ = try await a!.allocate(labelSet(1))
    let lease = a!.store.lease
    a!.stop()
    a = nil

    let restarted = try await EtcdReplica(cluster, node: "a", statePath: statePath)
    #expect(restarted.store.lease == lease, "the lease is still alive, so it is reused")
    #expect(try await restarted.store.release(id: identity.id, node: "a").remainingReferences == 1)
    #expect(try await EtcdContents.read(cluster).references[labelSet(1).canonicalKey] == ["a"])
    #expect(try await restarted.store.release(id: identity.id, node: "a").remainingReferences == 0)
    #expect(try await EtcdContents.read(cluster).references.isEmpty)
    restarted.stop()
  }

  @Test(
    "over TLS with client certificates: allocations work, a client without a certificate is refused"
  )
  func mutualTLS() async throws {
    let cluster = try LocalEtcdCluster(members: 1, tls: true)
    defer { cluster.shutdown() }
    let files = try #require(cluster.tls)
    let replica = try await EtcdReplica(
      cluster, node: "a",
      tls: .init(
        caFile: files.caFile, certificateFile: files.clientCertificate, keyFile: files.clientKey))
    #expect(try await replica.allocate(labelSet(1)).isNew)
    replica.stop()

    let anonymous = try EtcdClient(
      configuration: EtcdConfiguration(parsing: cluster.endpoints, tls: .init(caFile: files.caFile))
    )
    let connections = Task { try? await anonymous.runConnections() }
    defer {
      connections.cancel()
      anonymous.beginGracefulShutdown()
    }
    await #expect(throws: EtcdError.self) { _ = try await anonymous.rangeAll(prefix: "/test/") }
  }

  @Test("store and endpoint settings are parsed with clear errors")
  func parsing() throws {
    #expect(
      try IdentityStoreSpec(parsing: "sqlite:/var/lib/x.db") == .sqlite(path: "/var/lib/x.db"))
    #expect(
      try IdentityStoreSpec(parsing: "etcd:http://10.0.0.1:2379,https://[::1]:2379,etcd-2:2379")
        == .etcd(endpoints: [
          .init(host: "10.0.0.1", port: 2379), .init(host: "::1", port: 2379, secure: true),
          .init(host: "etcd-2", port: 2379),
        ]))
    for bad in [
      "etcd:", "etcd:http://host", "etcd:http://host:99999", "mysql:x", "sqlite:", "etcd::2379",
    ] {
      #expect(throws: IdentityError.self, "\(bad)") { try IdentityStoreSpec(parsing: bad) }
    }
    #expect(throws: IdentityError.self) { try EtcdIdentityStore.validate(node: "a/b") }
  }
}

/// Deterministic random numbers for reproducible workloads.
struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
