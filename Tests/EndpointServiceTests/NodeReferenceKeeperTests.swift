import Logging
import Synchronization
import TesseraCore
import Testing

@testable import EndpointService

/// ``GatedIdentities`` behind a lease: keepalives answer as scripted, syncs are recorded.
final class LeasedIdentities: IdentityAllocating {
  let inner = GatedIdentities()
  private let state = Mutex<
    (
      lost: Bool, down: Bool, keepalives: Int, syncs: [[NumericIdentity: Int]],
      syncDelay: Duration, syncsInFlight: Int, mostSyncsInFlight: Int
    )
  >((false, false, 0, [], .zero, 0, 0))

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
    let delay = state.withLock { state in
      state.syncs.append(held)
      state.syncsInFlight += 1
      state.mostSyncsInFlight = max(state.mostSyncsInFlight, state.syncsInFlight)
      return state.syncDelay
    }
    defer { state.withLock { $0.syncsInFlight -= 1 } }
    // A sync that lists the node's references and then writes them takes a while.
    try? await Task.sleep(for: delay)
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

  /// How long each sync takes.
  var syncDelay: Duration {
    get { state.withLock { $0.syncDelay } }
    set { state.withLock { $0.syncDelay = newValue } }
  }
  /// The most syncs that ever ran at once.
  var mostSyncsInFlight: Int { state.withLock { $0.mostSyncsInFlight } }

  /// The next keepalive finds the lease expired.
  func expireLease() { state.withLock { $0.lost = true } }
  var keepalives: Int { state.withLock { $0.keepalives } }
  var syncs: [[NumericIdentity: Int]] { state.withLock { $0.syncs } }
}

@Suite("node reference keeper")
struct NodeReferenceKeeperTests {
  /// A keeper that retries a failed keepalive or restore after 20 ms and gives a node's
  /// last reference back at once.
  static func retryingSoon(_ upstream: any IdentityAllocating) -> NodeReferenceKeeper {
    NodeReferenceKeeper(
      wrapping: upstream,
      configuration: .init(retryInterval: .milliseconds(20), releaseDelay: .zero),
      logger: Logger(label: "test"))
  }

  func labels(_ app: String) throws -> LabelSet {
    try LabelSet(parsing: ["k8s:app=\(app)", "k8s:io.kubernetes.pod.namespace=default"])
  }

  @Test("renews every TTL/3 and, after the lease expired, restores exactly what the node holds")
  func restoresAfterExpiry() async throws {
    let upstream = LeasedIdentities()
    let keeper = Self.retryingSoon(upstream)
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
    #expect(upstream.syncs == [[web: 1]])
    #expect(upstream.inner.references(web) == 1 && upstream.inner.references(db) == 0)
    #expect(keeper.heldReferences == [web: 2] && keeper.upstreamReferences == [web: 1])
  }

  @Test(
    "a restore after the lease expired and the endpoint service's own sync at start-up run one after the other"
  )
  func restoresDoNotOverlap() async throws {
    // A restarted node: its lease expired while it was down, and the keeper's restore
    // (nothing counted yet) meets the endpoint service's sync of its restored endpoints.
    // Run together, the first could delete references the second had just written.
    let upstream = LeasedIdentities()
    upstream.syncDelay = .milliseconds(100)
    let keeper = Self.retryingSoon(upstream)
    upstream.expireLease()
    let running = Task { try await keeper.run() }
    defer { running.cancel() }
    #expect(await eventually { upstream.syncs.count == 1 })
    let web = NumericIdentity(300)
    try await keeper.syncReferences(held: [web: 2])
    #expect(upstream.syncs == [[:], [web: 1]])
    #expect(upstream.mostSyncsInFlight == 1, "two syncs of the node's references overlapped")
    #expect(upstream.inner.references(web) == 1)
    #expect(keeper.heldReferences == [web: 2] && keeper.upstreamReferences == [web: 1])
  }

  @Test("a restore waits for an allocation in flight and holds new ones back until it is done")
  func restoreWaitsForCallsInFlight() async throws {
    let upstream = LeasedIdentities()
    let keeper = Self.retryingSoon(upstream)
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
    let keeper = Self.retryingSoon(upstream)
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
    // The service never heard of db's release (the second web reference is the node's own).
    #expect(upstream.inner.references(web.id) == 1 && upstream.inner.references(db) == 1)
    upstream.down = false
    #expect(await eventually { upstream.syncs.count == 1 })
    #expect(upstream.syncs == [[web.id: 1]])
    #expect(upstream.inner.references(web.id) == 1 && upstream.inner.references(db) == 0)
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
    #expect(upstream.syncs == [[NumericIdentity(300): 1]])
    try await keeper.releaseIdentity(NumericIdentity(300))
    #expect(upstream.inner.references(NumericIdentity(300)) == 1)
    try await keeper.releaseIdentity(NumericIdentity(300))
    #expect(keeper.heldReferences.isEmpty)
    #expect(upstream.inner.references(NumericIdentity(300)) == 0)
  }

  @Test(
    "a second endpoint of a label set the node holds costs no call; the node's last release gives its one reference back"
  )
  func oneReferencePerNode() async throws {
    let upstream = CountingIdentities()
    let keeper = NodeReferenceKeeper(wrapping: upstream, logger: Logger(label: "test"))
    let first = try await keeper.allocateIdentity(labels: labels("web"))
    let second = try await keeper.allocateIdentity(labels: labels("web"))
    #expect(first.isNew && second.identity == first.identity && !second.isNew)
    #expect(upstream.calls == 1)
    #expect(upstream.inner.references(first.identity.id) == 1)
    #expect(keeper.heldReferences == [first.identity.id: 2])
    try await keeper.releaseIdentity(first.identity.id)
    #expect(upstream.calls == 1 && upstream.inner.references(first.identity.id) == 1)
    try await keeper.releaseIdentity(first.identity.id)
    #expect(upstream.calls == 2 && upstream.inner.references(first.identity.id) == 0)
    #expect(keeper.heldReferences.isEmpty && keeper.upstreamReferences.isEmpty)
    // Held by nothing any more: the next endpoint asks the identity service again.
    _ = try await keeper.allocateIdentity(labels: labels("web"))
    #expect(upstream.calls == 3 && upstream.inner.references(first.identity.id) == 1)
  }

  /// A keeper on a lease that keeps a node's last reference for `delay`.
  static func lingering(_ upstream: LeasedIdentities, delay: Duration) -> NodeReferenceKeeper {
    NodeReferenceKeeper(
      wrapping: upstream,
      configuration: .init(retryInterval: .milliseconds(20), releaseDelay: delay),
      logger: Logger(label: "test"))
  }

  @Test(
    "on a lease, the node keeps its last reference for the release delay: the label set resolves again without a call, and the reference goes once the delay ran out"
  )
  func lastReferenceLingers() async throws {
    let upstream = LeasedIdentities()
    let keeper = Self.lingering(upstream, delay: .milliseconds(300))
    let running = Task { try await keeper.run() }
    defer { running.cancel() }
    #expect(await eventually { upstream.keepalives >= 1 })
    let web = try await keeper.allocateIdentity(labels: labels("web")).identity
    try await keeper.releaseIdentity(web.id)
    #expect(keeper.heldReferences.isEmpty && keeper.lingeringIdentities == [web.id])
    #expect(upstream.inner.references(web.id) == 1, "the node's reference went at once")
    // Resolved here: with the service down, a call would fail.
    upstream.down = true
    let again = try await keeper.allocateIdentity(labels: labels("web"))
    #expect(again.identity == web && !again.isNew)
    #expect(keeper.heldReferences == [web.id: 1] && keeper.lingeringIdentities.isEmpty)
    upstream.down = false
    try await keeper.releaseIdentity(web.id)
    #expect(upstream.inner.references(web.id) == 1)
    #expect(await eventually { upstream.inner.references(web.id) == 0 })
    #expect(keeper.lingeringIdentities.isEmpty && keeper.upstreamReferences.isEmpty)
    // Given back: the next endpoint of the label set asks the identity service again.
    upstream.down = true
    await #expect(throws: EndpointError.self) {
      _ = try await keeper.allocateIdentity(labels: labels("web"))
    }
  }

  @Test("a restore keeps the references the node still lingers on; they go after the delay")
  func restoreKeepsLingeringReferences() async throws {
    let upstream = LeasedIdentities()
    let keeper = Self.lingering(upstream, delay: .milliseconds(500))
    let running = Task { try await keeper.run() }
    defer { running.cancel() }
    #expect(await eventually { upstream.keepalives >= 1 })
    let web = try await keeper.allocateIdentity(labels: labels("web")).identity.id
    let db = try await keeper.allocateIdentity(labels: labels("db")).identity.id
    try await keeper.releaseIdentity(db)
    upstream.expireLease()
    #expect(await eventually { upstream.syncs.count == 1 })
    #expect(upstream.syncs == [[web: 1, db: 1]])
    #expect(await eventually { upstream.inner.references(db) == 0 })
    #expect(upstream.inner.references(web) == 1 && keeper.upstreamReferences == [web: 1])
  }

  @Test(
    "without a lease of the node's own (a local identity service), the last release goes at once")
  func noLingerWithoutLease() async throws {
    let upstream = CountingIdentities()
    let keeper = NodeReferenceKeeper(
      wrapping: upstream, configuration: .init(releaseDelay: .seconds(30)),
      logger: Logger(label: "test"))
    let running = Task { try await keeper.run() }
    defer { running.cancel() }
    let web = try await keeper.allocateIdentity(labels: labels("web")).identity.id
    try await keeper.releaseIdentity(web)
    #expect(upstream.inner.references(web) == 0 && keeper.lingeringIdentities.isEmpty)
  }

  @Test("first allocations of one label set that raced leave one reference once released")
  func racedFirstAllocations() async throws {
    let upstream = LeasedIdentities()
    let keeper = NodeReferenceKeeper(wrapping: upstream, logger: Logger(label: "test"))
    // Both reach the identity service before either answers.
    async let one = keeper.allocateIdentity(labels: labels("slow"))
    async let two = keeper.allocateIdentity(labels: labels("slow"))
    var started = upstream.inner.slowStarted.stream.makeAsyncIterator()
    _ = await started.next()
    _ = await started.next()
    upstream.inner.openGate()
    let id = try await one.identity.id
    #expect(try await two.identity.id == id)
    #expect(upstream.inner.references(id) == 2 && keeper.upstreamReferences == [id: 2])
    try await keeper.releaseIdentity(id)
    #expect(upstream.inner.references(id) == 1 && keeper.heldReferences == [id: 1])
    try await keeper.releaseIdentity(id)
    #expect(upstream.inner.references(id) == 0 && keeper.heldReferences.isEmpty)
  }
}

/// ``GatedIdentities`` counting the calls that reach it.
final class CountingIdentities: IdentityAllocating {
  let inner = GatedIdentities()
  private let count = Mutex(0)
  var calls: Int { count.withLock { $0 } }

  func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    count.withLock { $0 += 1 }
    return try await inner.allocateIdentity(labels: labels)
  }

  func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError) {
    count.withLock { $0 += 1 }
    try await inner.releaseIdentity(id)
  }

  func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError) {
    try await inner.syncReferences(held: held)
  }
}
