import Foundation
import LocalEtcd
import Synchronization
import TesseraEtcd
import Testing

/// TesseraEtcd's own value types carry what etcd answered: the identity store and
/// the cluster ipcache decide on these fields (lease, revisions, event kind, txn branch).
@Suite(
  "etcd client value types (real etcd)", .serialized,
  .enabled(
    if: LocalEtcdCluster.skipReason == nil, "etcd not installed (run scripts/install-deps.sh)"))
struct EtcdClientValueTests {
  @Test(
    "transactions report their branch, revision and reads; keys carry lease and revisions; watches report puts and deletes"
  )
  func valuesMatchEtcd() async throws {
    let cluster = try LocalEtcdCluster(members: 1)
    defer { cluster.shutdown() }
    let client = try EtcdClient(configuration: EtcdConfiguration(parsing: cluster.endpoints))
    let connections = Task { try? await client.runConnections() }
    defer {
      connections.cancel()
      client.beginGracefulShutdown()
    }
    let lease = try await client.grantLease(ttl: 30)
    let (_, start) = try await client.rangeAll(prefix: "/v/")

    let events = Mutex<[EtcdEvent]>([])
    let watching = Task {
      try await client.watch(
        key: Etcd.key("/v/"), rangeEnd: Etcd.prefixEnd(Etcd.key("/v/")), fromRevision: start + 1
      ) { batch, _ in
        events.withLock { $0 += batch }
      }
    }
    defer { watching.cancel() }

    let created = try await client.txn(
      Etcd.txn(
        when: [Etcd.absent("/v/a")],
        then: [Etcd.put("/v/a", "1", lease: lease), Etcd.put("/v/b", "2")]))
    #expect(created.succeeded)
    #expect(created.revision > start)
    #expect(created.responses == [.put, .put])

    // The compare fails: the else branch runs and its reads come back as key-values.
    let refused = try await client.txn(
      Etcd.txn(
        when: [Etcd.absent("/v/a")], then: [Etcd.delete("/v/a")],
        else: [Etcd.get("/v/a"), Etcd.get("/v/none")]))
    #expect(!refused.succeeded)
    let a = try #require(refused.responses.first?.kvs.first)
    #expect(String(decoding: a.key, as: UTF8.self) == "/v/a")
    #expect(String(decoding: a.value, as: UTF8.self) == "1")
    #expect(a.lease == lease)
    #expect(a.modRevision == created.revision && a.createRevision == created.revision)
    #expect(refused.responses[1].kvs.isEmpty)

    let (kvs, _) = try await client.rangeAll(prefix: "/v/")
    #expect(kvs.map { String(decoding: $0.key, as: UTF8.self) } == ["/v/a", "/v/b"])
    #expect(kvs.map(\.lease) == [lease, 0])

    #expect(
      try await client.txn(
        Etcd.txn(when: [Etcd.modifiedAt("/v/b", a.modRevision)], then: [Etcd.delete("/v/b")])
      ).responses == [.delete(deleted: 1)])
    #expect(try await client.delete("/v/a") == 1)
    #expect(try await client.delete("/v/a") == 0, "deleting an absent key deletes nothing")

    let deadline = ContinuousClock.now + .seconds(10)
    while events.withLock({ $0.count }) < 4, ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(20))
    }
    let seen = events.withLock { $0.map { ($0.kind, String(decoding: $0.kv.key, as: UTF8.self)) } }
    #expect(seen.map(\.0) == [.put, .put, .delete, .delete])
    #expect(seen.map(\.1) == ["/v/a", "/v/b", "/v/b", "/v/a"])
  }
}
