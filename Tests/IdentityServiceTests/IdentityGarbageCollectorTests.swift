import Foundation
import TesseraCore
import TesseraRuntime
import Testing

@testable import IdentityService

@Suite("Identity garbage collector")
struct IdentityGarbageCollectorTests {
  func makeCollector(interval: Duration = .seconds(3600)) throws -> (
    IdentityAllocator, RecordingSink, IdentityGarbageCollector
  ) {
    let sink = RecordingSink()
    let allocator = IdentityAllocator(
      configuration: .init(nodeName: "n1", gracePeriodMilliseconds: 0),
      store: try SQLiteIdentityStore(path: nil), changeSink: sink)
    return (allocator, sink, IdentityGarbageCollector(allocator: allocator, interval: interval))
  }

  @Test("one round deletes the released identity and keeps the held one")
  func oneRound() async throws {
    let (allocator, sink, collector) = try makeCollector()
    let web = try await allocator.allocateIdentity(labels: labels("app=web")).identity
    let db = try await allocator.allocateIdentity(labels: labels("app=db")).identity
    _ = try await allocator.releaseIdentity(id: web.id)
    #expect(await collector.collectOnce().map(\.id) == [web.id])
    #expect(sink.deleted.withLock { $0 } == [web.id])
    #expect(try await allocator.identity(id: db.id).totalReferences == 1)
    #expect(await collector.collectOnce().isEmpty, "a held identity is never collected")
  }

  @Test("the service collects every interval and ends quietly when cancelled")
  func runsAsService() async throws {
    let (allocator, sink, collector) = try makeCollector(interval: .milliseconds(20))
    let web = try await allocator.allocateIdentity(labels: labels("app=web")).identity
    let running = Task { try await collector.run() }
    _ = try await allocator.releaseIdentity(id: web.id)
    let deadline = ContinuousClock.now + .seconds(10)
    while sink.deleted.withLock({ $0 }).isEmpty, ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(10))
    }
    #expect(sink.deleted.withLock { $0 } == [web.id])
    running.cancel()
    try await running.value
  }

  @Test("the collector is listed as a controller from its start, before its first round")
  func listedBeforeFirstRound() async throws {
    let registry = ControllerRegistry()
    let allocator = IdentityAllocator(
      configuration: .init(nodeName: "n1", gracePeriodMilliseconds: 0),
      store: try SQLiteIdentityStore(path: nil), changeSink: RecordingSink())
    let collector = IdentityGarbageCollector(
      allocator: allocator, interval: .seconds(3600), registry: registry)
    let running = Task { try await collector.run() }
    let deadline = ContinuousClock.now + .seconds(10)
    while registry.statuses().isEmpty, ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(5))
    }
    let listed = registry.statuses()
    #expect(listed.map(\.name) == [IdentityGarbageCollector.controllerName])
    #expect(listed.first.map { $0.successes + $0.failures } == 0)
    running.cancel()
    try await running.value
    _ = await collector.collectOnce()
    #expect(registry.statuses().first?.successes == 1)
  }
}
