import Logging
import Synchronization
import TesseraCore
import Testing

@testable import EndpointService

/// ``GatedIdentities`` behind a lease: keepalives answer as scripted, syncs are recorded.
final class LeasedIdentities: IdentityAllocating {
  let inner = GatedIdentities()
  private let state = Mutex<
    (lost: Bool, down: Bool, keepalives: Int, syncs: [[NumericIdentity: Int]])
  >((false, false, 0, []))

  /// While down, every call fails as an unreachable service does (CNI code 11).
  var down: Bool {
    get { state.withLock { $0.down } }
    set { state.withLock { $0.down = newValue } }
  }

  private func failIfDown() throws(EndpointError) {
    if down {
      throw EndpointError(code: .upstreamUnavailable, message: "identity service unavailable")
    }
  }

  func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    try failIfDown()
    return try await inner.allocateIdentity(labels: labels)
  }

  func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError) {
    try failIfDown()
    try await inner.releaseIdentity(id)
  }

  func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError) {
    try failIfDown()
    state.withLock { $0.syncs.append(held) }
    try await inner.syncReferences(held: held)
  }

  func keepAliveNode() async throws(EndpointError) -> NodeLease {
    try failIfDown()
    let lost = state.withLock { state in
      state.keepalives += 1
      defer { state.lost = false }
      return state.lost
    }
    return NodeLease(timeToLive: .milliseconds(150), referencesLost: lost)
  }

  /// The next keepalive finds the lease expired.
  func expireLease() { state.withLock { $0.lost = true } }
  var keepalives: Int { state.withLock { $0.keepalives } }
  var syncs: [[NumericIdentity: Int]] { state.withLock { $0.syncs } }
}

@Suite("node reference keeper")
struct NodeReferenceKeeperTests {
  func labels(_ app: String) throws -> LabelSet {
    try LabelSet(parsing: ["k8s:app=\(app)", "k8s:io.kubernetes.pod.namespace=default"])
  }

  @Test("renews every TTL/3 and, after the lease expired, restores exactly what the node holds")
  func restoresAfterExpiry() async throws {
    let upstream = LeasedIdentities()
    let keeper = NodeReferenceKeeper(
      wrapping: upstream, configuration: .init(retryInterval: .milliseconds(20)),
      logger: Logger(label: "test"))
    let web = try await keeper.allocateIdentity(labels: labels("web")).identity.id
    _ = try await keeper.allocateIdentity(labels: labels("web"))
    let db = try await keeper.allocateIdentity(labels: labels("db")).identity.id
    try await keeper.releaseIdentity(db)
    #expect(keeper.heldReferences == [web: 2])
    let running = Task { try await keeper.run() }
    defer { running.cancel() }
    #expect(await eventually { upstream.keepalives >= 3 })
    #expect(upstream.syncs.isEmpty)
    upstream.expireLease()
    #expect(await eventually { upstream.syncs.count == 1 })
    #expect(upstream.syncs == [[web: 2]])
    #expect(upstream.inner.references(web) == 2 && upstream.inner.references(db) == 0)
  }

  @Test("a restore waits for an allocation in flight and holds new ones back until it is done")
  func restoreWaitsForCallsInFlight() async throws {
    let upstream = LeasedIdentities()
    let keeper = NodeReferenceKeeper(
      wrapping: upstream, configuration: .init(retryInterval: .milliseconds(20)),
      logger: Logger(label: "test"))
    let web = try await keeper.allocateIdentity(labels: labels("web")).identity.id
    // Allocated by the identity service but not answered yet when the lease is found expired.
    let slow = Task { try await keeper.allocateIdentity(labels: labels("slow")).identity.id }
    var started = upstream.inner.slowStarted.stream.makeAsyncIterator()
    _ = await started.next()
    upstream.expireLease()
    let running = Task { try await keeper.run() }
    defer { running.cancel() }
    #expect(await eventually { upstream.keepalives >= 1 })
    try await Task.sleep(for: .milliseconds(100))
    #expect(upstream.syncs.isEmpty, "the restore ran while an allocation was in flight")
    upstream.inner.openGate()
    let slowID = try await slow.value
    #expect(await eventually { upstream.syncs.count == 1 })
    #expect(upstream.syncs == [[web: 1, slowID: 1]])
    #expect(upstream.inner.references(slowID) == 1)
  }

  @Test(
    "with the identity service unreachable, a label set the node holds resolves from its own count; a new one fails; the count is restored when it answers"
  )
  func knownIdentitiesResolveWhileDown() async throws {
    let upstream = LeasedIdentities()
    let keeper = NodeReferenceKeeper(
      wrapping: upstream, configuration: .init(retryInterval: .milliseconds(20)),
      logger: Logger(label: "test"))
    let web = try await keeper.allocateIdentity(labels: labels("web")).identity
    let db = try await keeper.allocateIdentity(labels: labels("db")).identity.id
    let running = Task { try await keeper.run() }
    defer { running.cancel() }
    upstream.down = true
    let again = try await keeper.allocateIdentity(labels: labels("web"))
    #expect(again.identity == web && !again.isNew)
    do {
      _ = try await keeper.allocateIdentity(labels: labels("new"))
      Issue.record("a label set the node does not hold resolved while the service was down")
    } catch let error as EndpointError {
      #expect(error.code == .upstreamUnavailable)
    }
    try await keeper.releaseIdentity(db)
    #expect(keeper.heldReferences == [web.id: 2])
    // The service never heard of the second web reference nor of db's release.
    #expect(upstream.inner.references(web.id) == 1 && upstream.inner.references(db) == 1)
    upstream.down = false
    #expect(await eventually { upstream.syncs.count == 1 })
    #expect(upstream.syncs == [[web.id: 2]])
    #expect(upstream.inner.references(web.id) == 2 && upstream.inner.references(db) == 0)
  }

  @Test("after a restart, the restored endpoints' label sets resolve while the service is down")
  func restoredIdentitiesResolve() async throws {
    let upstream = LeasedIdentities()
    let keeper = NodeReferenceKeeper(wrapping: upstream, logger: Logger(label: "test"))
    let web = SecurityIdentity(id: NumericIdentity(4242), labels: try labels("web"))
    try await keeper.syncReferences(
      held: [web.id: 1], resolved: [try labels("web").canonicalKey: web])
    upstream.down = true
    #expect(try await keeper.allocateIdentity(labels: labels("web")).identity == web)
    #expect(keeper.heldReferences == [web.id: 2])
  }

  @Test("the endpoint service's own sync sets the count; reserved identities are not counted")
  func endpointSyncSetsTheCount() async throws {
    let upstream = LeasedIdentities()
    let keeper = NodeReferenceKeeper(wrapping: upstream, logger: Logger(label: "test"))
    try await keeper.syncReferences(held: [
      NumericIdentity(300): 2, .host: 1, NumericIdentity(301): 0,
    ])
    #expect(keeper.heldReferences == [NumericIdentity(300): 2])
    try await keeper.releaseIdentity(NumericIdentity(300))
    try await keeper.releaseIdentity(NumericIdentity(300))
    #expect(keeper.heldReferences.isEmpty)
  }
}
