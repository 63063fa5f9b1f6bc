import Foundation
import Synchronization
import TesseraCore
import Testing

@testable import IdentityService

/// Records announcements; can be told to fail.
final class RecordingSink: IdentityChangeSink {
  let added = Mutex<[NumericIdentity]>([])
  let deleted = Mutex<[NumericIdentity]>([])
  let failing = Mutex(false)
  let instance = Mutex("a")

  func identitiesChanged(added: [SecurityIdentity], deleted: [NumericIdentity]) async throws
    -> String
  {
    if failing.withLock({ $0 }) { throw CancellationError() }
    self.added.withLock { $0 += added.map(\.id) }
    self.deleted.withLock { $0 += deleted }
    return instance.withLock { $0 }
  }
}

func labels(_ texts: String...) throws -> LabelSet { try LabelSet(parsing: texts) }

@Suite("Identity allocation")
struct IdentityAllocatorTests {
  func makeAllocator(path: String? = nil, grace: Int64 = 0) throws -> (
    IdentityAllocator, RecordingSink
  ) {
    let sink = RecordingSink()
    let store = try SQLiteIdentityStore(path: path)
    return (
      IdentityAllocator(
        configuration: .init(nodeName: "n1", gracePeriodMilliseconds: grace), store: store,
        changeSink: sink), sink
    )
  }

  @Test("numbers start at 256, equal labels share an identity, and refcounts count")
  func allocateAndRefcount() async throws {
    let (allocator, sink) = try makeAllocator()
    let first = try await allocator.allocateIdentity(
      labels: labels("app=web", "io.kubernetes.pod.namespace=default"))
    #expect(first.identity.id == NumericIdentity(256))
    #expect(first.isNew)
    let second = try await allocator.allocateIdentity(
      labels: labels("io.kubernetes.pod.namespace=default", "app=web", "pod-template-hash=x"))
    #expect(second.identity.id == first.identity.id)
    #expect(!second.isNew)
    let other = try await allocator.allocateIdentity(labels: labels("app=db"))
    #expect(other.identity.id == NumericIdentity(257))
    #expect(sink.added.withLock { $0 } == [NumericIdentity(256), NumericIdentity(257)])
    #expect(try await allocator.identity(id: first.identity.id).totalReferences == 2)
    #expect(try await allocator.releaseIdentity(id: first.identity.id).remainingReferences == 1)
    #expect(try await allocator.releaseIdentity(id: first.identity.id).remainingReferences == 0)
    #expect(try await allocator.releaseIdentity(id: first.identity.id).released == false)
  }

  @Test(
    "empty labels are reserved:init, reserved labels map to reserved identities, mixing is rejected"
  )
  func reserved() async throws {
    let (allocator, _) = try makeAllocator()
    #expect(try await allocator.allocateIdentity(labels: .empty).identity.id == .initializing)
    #expect(
      try await allocator.allocateIdentity(labels: labels("reserved:host")).identity.id == .host)
    await #expect(throws: IdentityError.self) {
      try await allocator.allocateIdentity(labels: labels("reserved:host", "app=x"))
    }
    // cidr: labels are the CIDR identities' (policy-owned): no workload gets one.
    await #expect(throws: IdentityError.self) {
      try await allocator.allocateIdentity(labels: labels("cidr:10.0.0.0/8=", "app=x"))
    }
    #expect(try await allocator.releaseIdentity(id: .host).released == false)
  }

  @Test("a new identity is rolled back when the policy service cannot be told")
  func rollback() async throws {
    let (allocator, sink) = try makeAllocator()
    sink.failing.withLock { $0 = true }
    await #expect(throws: IdentityError.self) {
      try await allocator.allocateIdentity(labels: labels("app=web"))
    }
    #expect(try await allocator.store.identities().isEmpty)
    sink.failing.withLock { $0 = false }
    let retried = try await allocator.allocateIdentity(labels: labels("app=web"))
    #expect(retried.isNew)
    #expect(sink.added.withLock { $0 } == [retried.identity.id])
  }

  @Test("a restarted policy service is told again about identities it may not have")
  func reannounce() async throws {
    let (allocator, sink) = try makeAllocator()
    let web = try await allocator.allocateIdentity(labels: labels("app=web"))
    _ = try await allocator.allocateIdentity(labels: labels("app=web"))
    #expect(sink.added.withLock { $0 }.count == 1)
    sink.instance.withLock { $0 = "b" }
    _ = try await allocator.allocateIdentity(labels: labels("app=other"))  // learns the new instance
    _ = try await allocator.allocateIdentity(labels: labels("app=web"))
    #expect(sink.added.withLock { $0 }.filter { $0 == web.identity.id }.count == 2)
  }

  @Test("garbage collection deletes unreferenced identities only, and IDs are reused after")
  func garbageCollection() async throws {
    let (allocator, sink) = try makeAllocator(grace: 0)
    let web = try await allocator.allocateIdentity(labels: labels("app=web")).identity
    let db = try await allocator.allocateIdentity(labels: labels("app=db")).identity
    _ = try await allocator.releaseIdentity(id: web.id)
    let collected = try await allocator.collectGarbage()
    #expect(collected.map(\.id) == [web.id])
    #expect(sink.deleted.withLock { $0 } == [web.id])
    #expect(try await allocator.identity(id: db.id).totalReferences == 1)
    let again = try await allocator.allocateIdentity(labels: labels("app=new"))
    #expect(again.identity.id == web.id)
  }

  @Test("after collection the lowest freed IDs are handed out first, then the next above all")
  func lowestFreeFirst() async throws {
    let (allocator, _) = try makeAllocator(grace: 0)
    var ids: [NumericIdentity] = []
    for i in 0..<6 {
      ids.append(try await allocator.allocateIdentity(labels: labels("app=a\(i)")).identity.id)
    }
    #expect(ids.map(\.rawValue) == Array(256..<262))
    _ = try await allocator.releaseIdentity(id: ids[4])
    _ = try await allocator.releaseIdentity(id: ids[1])
    #expect(Set(try await allocator.collectGarbage().map(\.id)) == [ids[1], ids[4]])
    var again: [UInt32] = []
    for i in 0..<3 {
      again.append(
        try await allocator.allocateIdentity(labels: labels("app=b\(i)")).identity.id.rawValue)
    }
    #expect(again == [ids[1].rawValue, ids[4].rawValue, 262])
  }

  @Test("32 allocations in flight get distinct, contiguous IDs")
  func concurrentAllocations() async throws {
    let (allocator, _) = try makeAllocator(grace: 0)
    let ids = try await withThrowingTaskGroup(of: UInt32.self) { group in
      for i in 0..<32 {
        group.addTask {
          try await allocator.allocateIdentity(labels: labels("app=c\(i)")).identity.id.rawValue
        }
      }
      return try await group.reduce(into: Set<UInt32>()) { $0.insert($1) }
    }
    #expect(ids == Set(256..<288))
  }

  @Test("a re-referenced identity survives garbage collection")
  func reuseBeforeCollection() async throws {
    let (allocator, _) = try makeAllocator(grace: 0)
    let web = try await allocator.allocateIdentity(labels: labels("app=web")).identity
    _ = try await allocator.releaseIdentity(id: web.id)
    let back = try await allocator.allocateIdentity(labels: labels("app=web"))
    #expect(back.identity.id == web.id)
    #expect(!back.isNew)
    #expect(try await allocator.collectGarbage().isEmpty)
  }

  @Test("the SQLite store keeps the same IDs across a restart")
  func persistence() async throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-id-\(UUID().uuidString).db"
    ).path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let firstID: NumericIdentity
    do {
      let (allocator, _) = try makeAllocator(path: path)
      _ = try await allocator.allocateIdentity(labels: labels("app=a"))
      firstID = try await allocator.allocateIdentity(labels: labels("app=b")).identity.id
    }
    let (reopened, _) = try makeAllocator(path: path)
    let again = try await reopened.allocateIdentity(labels: labels("app=b"))
    #expect(again.identity.id == firstID)
    #expect(!again.isNew)
    #expect(try await reopened.identity(id: firstID).totalReferences == 2)
  }

  @Test("concurrent allocations of overlapping label sets never duplicate an identity")
  func concurrency() async throws {
    let (allocator, _) = try makeAllocator()
    let results = try await withThrowingTaskGroup(of: (String, NumericIdentity).self) { group in
      for i in 0..<200 {
        group.addTask {
          let app = "app=w\(i % 20)"
          return (app, try await allocator.allocateIdentity(labels: labels(app)).identity.id)
        }
      }
      return try await group.reduce(into: [(String, NumericIdentity)]()) { $0.append($1) }
    }
    let byLabels = Dictionary(grouping: results, by: \.0).mapValues { Set($0.map(\.1)) }
    #expect(byLabels.values.allSatisfy { $0.count == 1 })
    #expect(Set(byLabels.values.map { $0.first! }).count == 20)
    let stored = try await allocator.store.identities()
    #expect(stored.map(\.totalReferences).reduce(0, +) == 200)
  }

  @Test(
    "syncing a node's references drops leaked ones, restores lost ones and reports missing identities"
  )
  func syncReferences() async throws {
    let (allocator, _) = try makeAllocator()
    let web = try await allocator.allocateIdentity(labels: labels("app=web")).identity.id
    let db = try await allocator.allocateIdentity(labels: labels("app=db")).identity.id
    _ = try await allocator.allocateIdentity(labels: labels("app=web"))
    _ = try await allocator.allocateIdentity(labels: labels("app=web"), node: "other")
    let sync = try await allocator.syncNodeReferences(held: [
      web: 1, db: 3, NumericIdentity(9999): 1, .host: 4,
    ])
    #expect(sync == ReferenceSync(dropped: 1, added: 2, missing: [NumericIdentity(9999)]))
    #expect(try await allocator.identity(id: web).references == ["n1": 1, "other": 1])
    #expect(try await allocator.identity(id: db).references == ["n1": 3])
    #expect(try await allocator.syncNodeReferences(held: [:]) == ReferenceSync(dropped: 4))
    #expect(try await allocator.identity(id: db).totalReferences == 0)
    #expect(
      try await allocator.collectGarbage().map(\.id) == [db],
      "an identity left without references is collectable")
  }
}
