import DatapathService
import Foundation
import IdentityService
import PolicyService
import Synchronization
import TesseraCore
import Testing

@testable import EndpointService

/// The real identity allocator, policy engine and datapath, wired in one
/// process without gRPC, so the endpoint flow is tested against real logic.
struct InProcessNode {
  let allocator: IdentityAllocator
  let engine: PolicyEngine
  let datapath: Datapath
  let manager: EndpointManager
  let workloads: WorkloadRegistry

  struct PolicySink: IdentityChangeSink {
    let engine: PolicyEngine
    func identitiesChanged(added: [SecurityIdentity], deleted: [NumericIdentity]) async throws
      -> String
    {
      _ = engine.updateIdentities(added: added, deleted: deleted)
      return "in-process"
    }
  }

  struct Identities: IdentityAllocating {
    let allocator: IdentityAllocator
    let down: Flag
    func allocateIdentity(labels: LabelSet) async throws(EndpointError) -> (
      identity: SecurityIdentity, isNew: Bool
    ) {
      if down.isOn {
        throw EndpointError(code: .upstreamUnavailable, message: "identity service down")
      }
      do { return try await allocator.allocateIdentity(labels: labels) } catch {
        throw EndpointError(code: .upstreamUnavailable, message: "\(error)")
      }
    }
    func releaseIdentity(_ id: NumericIdentity) async throws(EndpointError) {
      _ = try? await allocator.releaseIdentity(id: id)
    }
    func syncReferences(held: [NumericIdentity: Int]) async throws(EndpointError) {
      if down.isOn {
        throw EndpointError(code: .upstreamUnavailable, message: "identity service down")
      }
      do { _ = try await allocator.syncNodeReferences(held: held) } catch {
        throw EndpointError(code: .upstreamUnavailable, message: "\(error)")
      }
    }
  }

  struct Policies: PolicyComputing {
    let engine: PolicyEngine
    var gate = Gate()
    func computePolicy(for identity: SecurityIdentity) async throws(EndpointError) -> EndpointPolicy
    {
      await gate.pass()
      return engine.computePolicy(for: identity)
    }
  }

  struct Datapaths: DatapathRealizing {
    let datapath: Datapath
    let down: Flag
    func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError) -> UInt64 {
      if down.isOn { throw EndpointError(code: .upstreamUnavailable, message: "datapath down") }
      do {
        return try datapath.realize(
          DatapathEndpoint(
            id: endpoint.id, hostInterface: endpoint.hostInterface, ips: endpoint.ips,
            identity: endpoint.identity, policy: policy)
        ).realizedRevision
      } catch { throw EndpointError(code: .upstreamUnavailable, message: "\(error)") }
    }
    func removeEndpoint(id: UInt64) async throws(EndpointError) {
      if down.isOn { throw EndpointError(code: .upstreamUnavailable, message: "datapath down") }
      _ = try? datapath.removeEndpoint(id: id)
    }
    func realizedEndpoints() async throws(EndpointError) -> [UInt64: (
      identity: NumericIdentity, revision: UInt64
    )] {
      Dictionary(
        uniqueKeysWithValues: datapath.endpoints().map {
          ($0.id, ($0.identity, $0.policy.revision))
        })
    }
  }

  let identityDown = Flag()
  let datapathDown = Flag()
  /// Holds policy computations while closed: a test acts in the middle of a regeneration.
  let computeGate = Gate()

  init(
    stateDirectory: String? = nil, datapath existing: Datapath? = nil, identityStore: String? = nil
  ) throws {
    engine = try PolicyEngine(database: nil)
    allocator = IdentityAllocator(
      configuration: .init(nodeName: "test"), store: try SQLiteIdentityStore(path: identityStore),
      changeSink: PolicySink(engine: engine))
    datapath = try existing ?? Datapath(backend: MemoryDatapathBackend())
    workloads = try WorkloadRegistry(file: nil)
    let identityDown = self.identityDown
    let datapathDown = self.datapathDown
    manager = EndpointManager(
      configuration: .init(requestTimeout: .seconds(5), regenerationRetryDelay: .milliseconds(50)),
      metadata: MetadataResolver(source: workloads, workloadWait: .seconds(5)),
      identities: Identities(allocator: allocator, down: identityDown),
      policy: Policies(engine: engine, gate: computeGate),
      datapath: Datapaths(datapath: datapath, down: datapathDown),
      store: try stateDirectory.map { try EndpointStateStore(directory: $0) })
  }

  func spec(_ container: String, _ ip: String, _ labels: String..., pod: String = "") throws
    -> EndpointSpec
  {
    EndpointSpec(
      containerID: container, ips: [IPPrefix(ip)!], podName: pod,
      labels: try LabelSet(parsing: labels))
  }
}

extension InProcessNode {
  /// A node whose state directory and identity database outlive it, and a way
  /// to start it again on them and on the same datapath (a restarted endpoint service).
  static func withRestartable(
    _ body: (
      _ first: InProcessNode, _ stateDirectory: String, _ restart: () throws -> InProcessNode
    ) async throws -> Void
  ) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-ep-\(UUID().uuidString)"
    ).path
    let identityDB = directory + "-identity.db"
    defer {
      try? FileManager.default.removeItem(atPath: directory)
      try? FileManager.default.removeItem(atPath: identityDB)
    }
    let first = try InProcessNode(stateDirectory: directory, identityStore: identityDB)
    try await body(first, directory) {
      try InProcessNode(
        stateDirectory: directory, datapath: first.datapath, identityStore: identityDB)
    }
  }
}

/// Lets callers of ``pass()`` through while open; holds them while closed.
final class Gate: Sendable {
  private struct State {
    var closed = false
    var held: [CheckedContinuation<Void, Never>] = []
    var arrivals = 0
  }
  private let state = Mutex(State())

  /// Callers that reached the gate, held or not.
  var arrivals: Int { state.withLock { $0.arrivals } }
  func close() { state.withLock { $0.closed = true } }
  func open() {
    let held = state.withLock { state in
      state.closed = false
      defer { state.held = [] }
      return state.held
    }
    for continuation in held { continuation.resume() }
  }
  func pass() async {
    await withCheckedContinuation { continuation in
      let passes = state.withLock { state in
        state.arrivals += 1
        if state.closed { state.held.append(continuation) }
        return !state.closed
      }
      if passes { continuation.resume() }
    }
  }
}

final class Flag: Sendable {
  private let value = Mutex(false)
  var isOn: Bool { value.withLock { $0 } }
  func set(_ on: Bool) { value.withLock { $0 = on } }
}

let backendPolicy = """
  apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
  metadata: {name: backend, namespace: default}
  spec:
    endpointSelector: {matchLabels: {app: backend}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: frontend}}]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  """

@Suite("CreateEndpoint flow")
struct CreateEndpointTests {
  @Test("a synchronous create returns a ready endpoint whose policy is already realised")
  func createIsReady() async throws {
    let node = try InProcessNode()
    _ = try node.engine.importPolicies(sourceName: "p.yaml", content: Array(backendPolicy.utf8))
    let frontend = try await node.manager.createEndpoint(
      try node.spec("f", "10.0.0.1", "app=frontend"), sync: true)
    let backend = try await node.manager.createEndpoint(
      try node.spec("b", "10.0.0.2", "app=backend"), sync: true)
    #expect(backend.state == .ready)
    #expect(backend.policyRevision >= 1)
    let realized = try #require(node.datapath.endpoint(id: backend.id))
    #expect(realized.policy.ingressEnforced)
    #expect(
      realized.policy.verdict(peer: frontend.identity, direction: .ingress, proto: .tcp, port: 8080)
        == .allow)
    #expect(
      realized.policy.verdict(peer: frontend.identity, direction: .ingress, proto: .tcp, port: 9090)
        == .deny)
    #expect(backend.labels["io.kubernetes.pod.namespace"]?.value == "default")
  }

  @Test("duplicates and reserved labels are rejected")
  func rejects() async throws {
    let node = try InProcessNode()
    _ = try await node.manager.createEndpoint(try node.spec("a", "10.0.0.1", "app=x"), sync: true)
    await #expect(throws: EndpointError.self) {
      try await node.manager.createEndpoint(try node.spec("a", "10.0.0.9"), sync: true)
    }
    await #expect(throws: EndpointError.self) {
      try await node.manager.createEndpoint(try node.spec("b", "10.0.0.1"), sync: true)
    }
    await #expect(throws: EndpointError.self) {
      try await node.manager.createEndpoint(
        try node.spec("c", "10.0.0.3", "reserved:host"), sync: true)
    }
    await #expect(throws: EndpointError.self) {
      try await node.manager.createEndpoint(
        try node.spec("d", "10.0.0.4", "cidr:10.0.0.0/8="), sync: true)
    }
    #expect(node.manager.registry.all().count == 1)
  }

  @Test(
    "container IDs, interface names and addresses are checked as the CNI spec says",
    arguments: [
      ("a/../../etc/passwd", "eth0", "10.0.0.1/32"), ("-leading-dash", "eth0", "10.0.0.1/32"),
      ("bad id", "eth0", "10.0.0.1/32"),
      ("ok", "..", "10.0.0.1/32"), ("ok", "eth:0", "10.0.0.1/32"),
      ("ok", "a very long name", "10.0.0.1/32"),
      ("ok", "eth0", "0.0.0.0/32"), ("ok", "eth0", "127.0.0.1/32"), ("ok", "eth0", "::1/128"),
    ])
  func specChecks(container: String, interface: String, ip: String) throws {
    let spec = EndpointSpec(
      containerID: container, interfaceName: interface, ips: [try #require(IPPrefix(ip))])
    #expect(throws: EndpointError.self) { try spec.validate() }
    try EndpointSpec(
      containerID: "abc_1.2-3", interfaceName: "eth0", ips: [try #require(IPPrefix("10.0.0.1/32"))]
    ).validate()
  }

  @Test("an unreachable datapath fails the create and leaves nothing behind")
  func cleanUpOnFailure() async throws {
    let node = try InProcessNode()
    node.datapathDown.set(true)
    await #expect(throws: EndpointError.self) {
      try await node.manager.createEndpoint(try node.spec("a", "10.0.0.1", "app=x"), sync: true)
    }
    #expect(node.manager.registry.all().isEmpty)
    // The identity reference was released: nothing holds it any more.
    let stored = try await node.allocator.store.identities()
    #expect(stored.allSatisfy { $0.totalReferences == 0 })
    node.datapathDown.set(false)
    let retried = try await node.manager.createEndpoint(
      try node.spec("a", "10.0.0.1", "app=x"), sync: true)
    #expect(retried.state == .ready)
  }

  @Test(
    "relabelling resolves a new identity and releases the old one without recreating the endpoint")
  func relabel() async throws {
    let node = try InProcessNode()
    let endpoint = try await node.manager.createEndpoint(
      try node.spec("a", "10.0.0.1", "app=x"), sync: true)
    let updated = try await node.manager.updateLabels(
      endpointID: endpoint.id, requestLabels: try LabelSet(parsing: ["app=y"]), sync: true)
    #expect(updated.id == endpoint.id)
    #expect(updated.identity != endpoint.identity)
    #expect(updated.identityRevision == endpoint.identityRevision + 1)
    #expect(try await node.allocator.identity(id: endpoint.identity).totalReferences == 0)
    #expect(try await node.allocator.identity(id: updated.identity).totalReferences == 1)
    #expect(node.datapath.endpoint(id: endpoint.id)?.identity == updated.identity)
  }

  @Test(
    "a delete while the endpoint's policy is computed leaves nothing in the datapath once the regeneration ends"
  )
  func deleteDuringRegeneration() async throws {
    let node = try InProcessNode()
    node.computeGate.close()
    let create = Task {
      try await node.manager.createEndpoint(try node.spec("a", "10.0.0.1", "app=x"), sync: true)
    }
    while node.computeGate.arrivals == 0 { try await Task.sleep(for: .milliseconds(2)) }
    let id = try #require(
      node.manager.registry.endpoints(containerID: "a", interfaceName: nil).first
    ).id
    #expect(try await node.manager.deleteEndpoints(containerID: "a", interfaceName: nil).count == 1)
    #expect(node.datapath.endpoint(id: id) == nil)
    node.computeGate.open()
    _ = try? await create.value
    try await Task.sleep(for: .milliseconds(300))
    #expect(node.datapath.endpoint(id: id) == nil)
    #expect(try node.datapath.ipcacheEntries().allSatisfy { $0.prefix != IPPrefix("10.0.0.1/32")! })
  }

  @Test(
    "GC collects only its own network's endpoints, and never one whose ADD has not finished"
  )
  func garbageCollectPerNetwork() async throws {
    let node = try InProcessNode()
    func create(_ container: String, _ ip: String, network: String) async throws {
      var spec = try node.spec(container, ip, "app=x")
      spec.network = network
      _ = try await node.manager.createEndpoint(spec, sync: true)
    }
    try await create("a-keep", "10.0.0.1", network: "net-a")
    try await create("a-stale", "10.0.0.2", network: "net-a")
    try await create("b-pod", "10.0.0.3", network: "net-b")
    try await create("cli-pod", "10.0.0.4", network: "")
    // An ADD of net-a in progress: its policy is being computed.
    node.computeGate.close()
    let adding = Task {
      var spec = try node.spec("a-adding", "10.0.0.5", "app=x")
      spec.network = "net-a"
      return try await node.manager.createEndpoint(spec, sync: true)
    }
    while node.computeGate.arrivals == 0 { try await Task.sleep(for: .milliseconds(2)) }

    let removed = try await node.manager.garbageCollect(
      valid: [.init(containerID: "a-keep", interfaceName: "eth0")], network: "net-a")
    #expect(removed.map(\.containerID) == ["a-stale"])
    node.computeGate.open()
    #expect(try await adding.value.state == .ready)
    #expect(
      Set(node.manager.registry.all().map(\.containerID))
        == ["a-keep", "b-pod", "cli-pod", "a-adding"])
    // Endpoints created without a network are collected only by a GC without one.
    let legacy = try await node.manager.garbageCollect(valid: [], network: "")
    #expect(legacy.map(\.containerID) == ["cli-pod"])
  }

  @Test("delete is idempotent and releases the identity reference")
  func delete() async throws {
    let node = try InProcessNode()
    let endpoint = try await node.manager.createEndpoint(
      try node.spec("a", "10.0.0.1", "app=x"), sync: true)
    #expect(try await node.manager.deleteEndpoints(containerID: "a", interfaceName: nil).count == 1)
    #expect(try await node.manager.deleteEndpoints(containerID: "a", interfaceName: nil).isEmpty)
    #expect(try await node.allocator.identity(id: endpoint.identity).totalReferences == 0)
    #expect(node.datapath.endpoint(id: endpoint.id) == nil)
  }

  @Test("workload labels that arrive after the sandbox are waited for")
  func lateMetadata() async throws {
    let node = try InProcessNode()
    async let created = node.manager.createEndpoint(
      try node.spec("a", "10.0.0.1", pod: "web-1"), sync: true)
    try await Task.sleep(for: .milliseconds(50))
    try node.workloads.set(
      Workload(namespace: "default", podName: "web-1", labels: try LabelSet(parsing: ["app=web"])))
    let endpoint = try await created
    #expect(endpoint.labels["app"]?.value == "web")
  }

  @Test("a rule change regenerates affected endpoints")
  func ruleChange() async throws {
    let node = try InProcessNode()
    let frontend = try await node.manager.createEndpoint(
      try node.spec("f", "10.0.0.1", "app=frontend"), sync: true)
    let backend = try await node.manager.createEndpoint(
      try node.spec("b", "10.0.0.2", "app=backend"), sync: true)
    #expect(node.datapath.endpoint(id: backend.id)?.policy.ingressEnforced == false)
    let result = try node.engine.importPolicies(
      sourceName: "p.yaml", content: Array(backendPolicy.utf8))
    await node.manager.policyChanged(
      PolicyChange(
        revision: result.revision,
        affectedIdentities: {
          if case .some(let s) = result.affected { return s } else { return nil }
        }()))
    try await node.manager.waiters.wait(
      endpointID: backend.id, minimumGeneration: 2, deadline: .now + .seconds(5))
    let realized = try #require(node.datapath.endpoint(id: backend.id))
    #expect(realized.policy.revision == result.revision)
    #expect(
      realized.policy.verdict(peer: frontend.identity, direction: .ingress, proto: .tcp, port: 8080)
        == .allow)
    #expect(node.datapath.endpoint(id: frontend.id)?.policy.revision == 1)
  }

  @Test(
    "endpoints are restored from the state directory with the same IDs and identities, without regenerating"
  )
  func restore() async throws {
    try await InProcessNode.withRestartable { first, _, restart in
      let a = try await first.manager.createEndpoint(
        try first.spec("a", "10.0.0.1", "app=x"), sync: true)
      let restarted = try restart()
      let result = try await restarted.manager.restore()
      #expect(result.restored == 1)
      let back = try #require(restarted.manager.registry.endpoint(id: a.id))
      #expect(back.identity == a.identity)
      #expect(back.state == .ready)
      #expect(back.realizedGeneration == a.realizedGeneration)
      let next = try await restarted.manager.createEndpoint(
        try restarted.spec("b", "10.0.0.2", "app=y"), sync: true)
      #expect(next.id == a.id + 1)
    }
  }

  @Test("an unreadable state file is set aside and the other endpoints are still restored")
  func restoreSkipsUnreadableState() async throws {
    try await InProcessNode.withRestartable { first, directory, restart in
      let a = try await first.manager.createEndpoint(
        try first.spec("a", "10.0.0.1", "app=x"), sync: true)
      let b = try await first.manager.createEndpoint(
        try first.spec("b", "10.0.0.2", "app=y"), sync: true)
      // A power loss left b's file empty (state is not flushed to disk).
      try Data().write(to: URL(fileURLWithPath: "\(directory)/\(b.id).json"))
      let restarted = try restart()
      let result = try await restarted.manager.restore()
      #expect(result.restored == 1)
      #expect(restarted.manager.registry.endpoint(id: a.id)?.identity == a.identity)
      #expect(restarted.manager.registry.endpoint(id: b.id) == nil)
      #expect(FileManager.default.fileExists(atPath: "\(directory)/\(b.id).json.unreadable"))
    }
  }

  @Test(
    "a reference leaked by a crash between allocating and recording an endpoint is dropped on restore"
  )
  func restoreDropsLeakedReferences() async throws {
    try await InProcessNode.withRestartable { first, _, restart in
      let kept = try await first.manager.createEndpoint(
        try first.spec("a", "10.0.0.1", "app=x"), sync: true)
      // The endpoint service died right after these allocations, before recording any endpoint.
      let leaked = try await first.allocator.allocateIdentity(
        labels: try LabelSet(parsing: ["app=lost", "io.kubernetes.pod.namespace=default"]))
      _ = try await first.allocator.allocateIdentity(
        labels: try LabelSet(parsing: [
          "app=x", "io.kubernetes.pod.namespace=default",
          "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
        ]))
      #expect(try await first.allocator.identity(id: kept.identity).totalReferences == 2)

      let restarted = try restart()
      _ = try await restarted.manager.restore()
      #expect(try await restarted.allocator.identity(id: leaked.identity.id).totalReferences == 0)
      #expect(
        try await restarted.allocator.identity(id: kept.identity).totalReferences == 1,
        "one endpoint, one reference")
    }
  }
}
