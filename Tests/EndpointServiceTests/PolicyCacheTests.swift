import TesseraCore
import Testing

@testable import EndpointService

@Suite("Policy cache")
struct PolicyCacheTests {
  let web = SecurityIdentity(
    id: NumericIdentity(300),
    labels: LabelSet(validated: [Label(source: "k8s", key: "app", value: "web")]))

  func policy(_ revision: UInt64) -> EndpointPolicy {
    EndpointPolicy(revision: revision, ingressEnforced: true, egressEnforced: false, entries: [])
  }

  @Test("a cached identity is not computed again until a change names it")
  func cachesUntilInvalidated() async throws {
    let cache = PolicyCache()
    let calls = Counter()
    let compute: (SecurityIdentity) async throws(EndpointError) -> EndpointPolicy = { _ in
      self.policy(UInt64(calls.increment()))
    }
    #expect(try await cache.policy(for: web, compute: compute).revision == 1)
    #expect(try await cache.policy(for: web, compute: compute).revision == 1)
    cache.invalidate([NumericIdentity(999)])
    #expect(try await cache.policy(for: web, compute: compute).revision == 1)
    cache.invalidate([web.id])
    #expect(try await cache.policy(for: web, compute: compute).revision == 2)
    cache.invalidate(nil)
    #expect(try await cache.policy(for: web, compute: compute).revision == 3)
  }

  @Test("a reused identity number with other labels is not served the old policy")
  func reusedNumber() async throws {
    let cache = PolicyCache()
    _ = try await cache.policy(for: web) { _ in self.policy(1) }
    let reused = SecurityIdentity(
      id: web.id, labels: LabelSet(validated: [Label(source: "k8s", key: "app", value: "db")]))
    #expect(try await cache.policy(for: reused) { _ in self.policy(2) }.revision == 2)
  }

  @Test("a computation overtaken by a change is returned but not cached")
  func overtakenComputation() async throws {
    let cache = PolicyCache()
    let stale = try await cache.policy(for: web) { _ in
      cache.invalidate(nil)
      return self.policy(1)
    }
    #expect(stale.revision == 1)
    #expect(try await cache.policy(for: web) { _ in self.policy(2) }.revision == 2)
  }
}
