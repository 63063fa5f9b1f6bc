import Synchronization
import TesseraCore
import Testing

@testable import EndpointService

/// Hands out identities by label set; allocations of `app=slow` wait until released.
final class GatedIdentities: IdentityAllocating {
  private let state = Mutex<
    (
      next: UInt32, byKey: [String: UInt32], references: [UInt32: Int],
      gate: [CheckedContinuation<Void, Never>], gateOpen: Bool
    )
  >((256, [:], [:], [], false))
  let slowStarted = AsyncStream<Void>.makeStream()

  func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    if labels["app"]?.value == "slow" {
      slowStarted.continuation.yield()
      await withCheckedContinuation { continuation in
        let open = state.withLock { state -> Bool in
          if state.gateOpen { return true }
          state.gate.append(continuation)
          return false
        }
        if open { continuation.resume() }
      }
    }
    return state.withLock { state in
      let key = labels.canonicalKey
      let isNew = state.byKey[key] == nil
      let id = state.byKey[key] ?? state.next
      if isNew {
        state.byKey[key] = id
        state.next += 1
      }
      state.references[id, default: 0] += 1
      return (SecurityIdentity(id: NumericIdentity(id), labels: labels), isNew)
    }
  }

  func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError) {
    state.withLock { $0.references[id.rawValue, default: 0] -= 1 }
  }

  func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError) {
    state.withLock {
      $0.references = Dictionary(uniqueKeysWithValues: held.map { ($0.key.rawValue, $0.value) })
    }
  }

  func openGate() {
    let gate = state.withLock { state in
      state.gateOpen = true
      defer { state.gate = [] }
      return state.gate
    }
    for waiter in gate { waiter.resume() }
  }

  func references(_ id: NumericIdentity) -> Int {
    state.withLock { $0.references[id.rawValue, default: 0] }
  }
  func identity(for app: String, namespace: String = "default") -> NumericIdentity? {
    state.withLock { state in
      state.byKey.first { $0.key.contains("app=\(app);") }.map { NumericIdentity($0.value) }
    }
  }
}

struct AllowAll: PolicyComputing {
  func computePolicy(for identity: SecurityIdentity) async throws(EndpointError) -> EndpointPolicy {
    EndpointPolicy(revision: 1, ingressEnforced: false, egressEnforced: false, entries: [])
  }
}

struct RecordingDatapath: DatapathRealizing {
  func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError) -> UInt64 {
    policy.revision
  }
  func removeEndpoint(id: UInt64) async throws(EndpointError) {}
  func realizedEndpoints() async throws(EndpointError) -> [UInt64: (
    identity: NumericIdentity, revision: UInt64
  )] { [:] }
}

@Suite("Identity revision guard")
struct IdentityRevisionGuardTests {
  @Test(
    "a slower, older label resolution never overwrites a newer one, and gives its reference back")
  func olderResolutionLoses() async throws {
    let identities = GatedIdentities()
    let manager = EndpointManager(
      metadata: MetadataResolver(source: try WorkloadRegistry(file: nil)), identities: identities,
      policy: AllowAll(), datapath: RecordingDatapath(), store: nil)
    let endpoint = try await manager.createEndpoint(
      EndpointSpec(
        containerID: "c", ips: [IPPrefix("10.0.0.1")!], labels: try LabelSet(parsing: ["app=first"])
      ), sync: true)

    let slow = Task {
      try await manager.updateLabels(
        endpointID: endpoint.id, requestLabels: try LabelSet(parsing: ["app=slow"]), sync: true)
    }
    var started = identities.slowStarted.stream.makeAsyncIterator()
    _ = await started.next()
    let fast = try await manager.updateLabels(
      endpointID: endpoint.id, requestLabels: try LabelSet(parsing: ["app=fast"]), sync: true)
    identities.openGate()

    await #expect(throws: EndpointError.self) { try await slow.value }
    let final = try #require(manager.registry.endpoint(id: endpoint.id))
    #expect(final.identity == fast.identity)
    #expect(final.labels["app"]?.value == "fast")
    let slowIdentity = try #require(identities.identity(for: "slow"))
    #expect(identities.references(slowIdentity) == 0)
    #expect(identities.references(fast.identity) == 1)
    #expect(identities.references(endpoint.identity) == 0)
  }
}
