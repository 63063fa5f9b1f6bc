import TesseraCore
import Testing

@testable import EndpointService

@Suite("Regenerator: failed regenerations are retried with backoff")
struct RegeneratorTests {
  @Test("the retry delay doubles per consecutive failure up to the maximum")
  func backoffDoubles() {
    let regenerator = Regenerator(
      configuration: .init(
        initialRetryDelay: .milliseconds(10), maximumRetryDelay: .milliseconds(40)),
      pass: { _ in }, retry: { _ in })
    #expect(
      (1...5).map { regenerator.backoff(afterFailures: $0) }
        == [10, 20, 40, 40, 40].map { Duration.milliseconds($0) })
  }

  @Test(
    "an endpoint whose regeneration failed becomes ready once the datapath is back, by the service's retries only"
  )
  func retriesUntilTheDatapathIsBack() async throws {
    let node = try InProcessNode()
    node.datapathDown.set(true)
    let created = try await node.manager.createEndpoint(
      try node.spec("a", "10.0.0.1", "app=x"), sync: false)
    #expect(await eventually { node.manager.regenerator.retryCount == 1 })
    // Shown to the operator: how often in a row, and why.
    let failure = try #require(node.manager.regenerator.failure(of: created.id))
    #expect(failure.consecutive == 1 && !failure.lastError.isEmpty)
    // Without the service nothing retries: the endpoint waits.
    node.datapathDown.set(false)
    try await Task.sleep(for: .milliseconds(200))
    #expect(node.manager.registry.endpoint(id: created.id)?.state == .waitingToRegenerate)
    let service = Task { try await node.manager.regenerator.run() }
    defer { service.cancel() }
    #expect(await eventually { node.manager.registry.endpoint(id: created.id)?.state == .ready })
    #expect(node.manager.regenerator.retryCount == 0, "a success settles the retry")
    #expect(node.manager.regenerator.failure(of: created.id) == nil)
    #expect(node.datapath.endpoint(id: created.id) != nil)
  }

  @Test("a deleted endpoint is not retried")
  func deletedIsNotRetried() async throws {
    let node = try InProcessNode()
    node.datapathDown.set(true)
    let created = try await node.manager.createEndpoint(
      try node.spec("a", "10.0.0.1", "app=x"), sync: false)
    #expect(await eventually { node.manager.regenerator.retryCount == 1 })
    node.datapathDown.set(false)
    _ = try await node.manager.deleteEndpoint(id: created.id)
    #expect(node.manager.regenerator.retryCount == 0)
    #expect(node.manager.registry.all().isEmpty)
  }
}
