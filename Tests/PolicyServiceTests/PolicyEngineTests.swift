import Foundation
import TesseraCore
import Testing

@testable import PolicyService

@Suite("PolicyEngine")
struct PolicyEngineTests {
  let backend = pod(1000, "app=backend")
  let frontend = pod(1001, "app=frontend")
  let frontendProd = pod(1002, namespace: "prod", "app=frontend")

  static let backendPolicy = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: backend}
    spec:
      podSelector: {matchLabels: {app: backend}}
      ingress:
      - from: [{podSelector: {matchLabels: {app: frontend}}}]
    """

  @Test("the revision starts at 1 and goes up once per import and per delete")
  func revisions() throws {
    let engine = try engine([backend, frontend])
    #expect(engine.revision == 1)
    let first = try engine.importYAML(Self.backendPolicy + "\n---\n" + PolicyManifestTests.cnp)
    #expect(first.revision == 2 && engine.revision == 2)
    #expect(first.policies.map(\.name) == ["backend", "web"])
    #expect(try engine.importYAML(Self.backendPolicy).revision == 3)
    #expect(engine.policies().map(\.revision) == [3, 2])
    #expect(engine.policy(namespace: "default", name: "web")?.ruleCount == 1)

    let deleted = try engine.deletePolicy(namespace: "default", name: "web")
    #expect(deleted.revision == 4)
    #expect(engine.policy(namespace: "default", name: "web") == nil)
    #expect(engine.computePolicy(for: backend).revision == 4)

    let missing = policyError { _ = try engine.deletePolicy(namespace: "default", name: "web") }
    #expect(missing?.code == .notFound)
    #expect(missing?.message == "policy default/web not found")
    #expect(engine.revision == 4)
  }

  @Test("an import is all or nothing")
  func allOrNothing() throws {
    let engine = try engine([backend, frontend])
    let error = policyError {
      try engine.importYAML(
        Self.backendPolicy
          + "\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {}\n",
        name: "two.yaml")
    }
    #expect(
      error?.message == "two.yaml: document 2: spec.endpointSelector: required field is missing")
    #expect(engine.revision == 1)
    #expect(engine.policies().isEmpty)
    #expect(!engine.computePolicy(for: backend).ingressEnforced)
  }

  @Test("importing the same namespace/name replaces the policy")
  func replace() throws {
    let engine = try engine([backend, frontend])
    try engine.importYAML(Self.backendPolicy)
    #expect(engine.computePolicy(for: backend).ingress(from: frontend) == .allow)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: backend}
      spec:
        endpointSelector: {matchLabels: {app: backend}}
        ingress: [{}]
      """)
    #expect(
      engine.policies().map(\.ref) == [
        PolicyRef(namespace: "default", name: "backend", kind: "CiliumNetworkPolicy")
      ])
    #expect(engine.computePolicy(for: backend).ingress(from: frontend) == .deny)
    // The NetworkPolicy's peer selector left the cache with its last user.
    #expect(!engine.selectors().contains { $0.selector.contains("frontend") })
  }

  @Test("rule changes affect the identities the old or new subject selects")
  func affectedByRules() throws {
    let backend2 = pod(1010, "app=backend", "version=2")
    let engine = try engine([backend, backend2, frontend, frontendProd])
    #expect(try engine.importYAML(Self.backendPolicy).affected == .some([backend.id, backend2.id]))
    let replaced = try engine.importYAML(
      """
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: backend}
      spec:
        podSelector: {matchLabels: {app: frontend}}
      """)
    #expect(replaced.affected == .some([backend.id, backend2.id, frontend.id]))
    #expect(
      try engine.deletePolicy(namespace: "default", name: "backend").affected
        == .some([frontend.id]))
    let clusterwide = try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumClusterwideNetworkPolicy
      metadata: {name: everyone}
      spec:
        endpointSelector: {}
        egress: [{toEntities: [world]}]
      """)
    #expect(clusterwide.affected == .all)
  }

  @Test(
    "identity deltas affect subjects of rules whose peer selections changed, and selected newcomers"
  )
  func affectedByIdentities() throws {
    let engine = try engine([backend, frontend, frontendProd])
    try engine.importYAML(Self.backendPolicy)

    let newFrontend = pod(1020, "app=frontend", "version=2")
    let added = engine.updateIdentities(added: [newFrontend], deleted: [])
    #expect(added.selectorsChanged == 1)
    #expect(added.affected == .some([backend.id]))
    #expect(engine.computePolicy(for: backend).ingress(from: newFrontend) == .allow)

    // A frontend in another namespace is not a peer of the namespaced policy.
    #expect(
      engine.updateIdentities(
        added: [pod(1021, namespace: "prod", "app=frontend", "x=y")], deleted: []) == (0, .some([]))
    )

    // A new backend is itself a subject.
    let newBackend = pod(1022, "app=backend", "version=2")
    let subject = engine.updateIdentities(added: [newBackend], deleted: [])
    #expect(subject.selectorsChanged == 1 && subject.affected == .some([newBackend.id]))

    // Idempotent.
    #expect(
      engine.updateIdentities(added: [newFrontend, newBackend], deleted: []) == (0, .some([])))

    let removed = engine.updateIdentities(added: [], deleted: [newFrontend.id])
    #expect(
      removed.selectorsChanged == 1 && removed.affected == .some([backend.id, newBackend.id]))
    #expect(engine.computePolicy(for: backend).ingress(from: newFrontend) == .deny)
  }

  @Test("reserved identities are pre-seeded and cannot be deleted")
  func reservedIdentities() throws {
    let engine = try PolicyEngine(database: nil)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: world}
      spec:
        endpointSelector: {}
        egress: [{toEntities: [world, host]}]
      """)
    #expect(
      engine.selectors().map(\.selector) == [
        "k8s:io.kubernetes.pod.namespace=default", "reserved:host=", "reserved:world-ipv4=",
        "reserved:world-ipv6=", "reserved:world=",
      ])
    #expect(engine.updateIdentities(added: [], deleted: [.world, .host]) == (0, .some([])))
    let policy = engine.computePolicy(for: pod(1000))
    #expect(
      policy.egress(to: .world) == .allow && policy.egress(to: .host) == .allow
        && policy.egress(to: .health) == .deny)
  }

  @Test("selectors read the Kubernetes way with their identities and users")
  func selectorSnapshots() throws {
    let engine = try engine([backend, frontend, frontendProd])
    try engine.importYAML(Self.backendPolicy)
    try engine.importYAML(
      Self.backendPolicy.replacingOccurrences(of: "name: backend", with: "name: backend-copy"))
    #expect(
      engine.selectors() == [
        SelectorSnapshot(
          selector: "k8s:app=backend,k8s:io.kubernetes.pod.namespace=default",
          identities: [backend.id], users: 2),
        SelectorSnapshot(
          selector: "k8s:app=frontend,k8s:io.kubernetes.pod.namespace=default",
          identities: [frontend.id], users: 2),
      ])
  }

  @Test("policies and the revision survive reopening the database file")
  func persistence() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tessera-policy-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("policy.sqlite").path

    var before: EndpointPolicy
    do {
      let engine = try engine([backend, frontend], database: PolicyDatabase(path: path))
      #expect(engine.revision == 1)
      try engine.importYAML(Self.backendPolicy + "\n---\n" + PolicyManifestTests.cnp)
      try engine.importYAML(
        """
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: lockdown}
        spec:
          endpointSelector: {}
          ingressDeny: [{fromEntities: [world]}]
        """)
      _ = try engine.deletePolicy(namespace: "default", name: "web")
      #expect(engine.revision == 4)
      before = engine.computePolicy(for: backend)
    }

    let reopened = try engine([backend, frontend], database: PolicyDatabase(path: path))
    #expect(reopened.revision == 4)
    #expect(
      reopened.policies().map { "\($0.ref.kind) \($0.ref) @\($0.revision) rules=\($0.ruleCount)" }
        == [
          "CiliumClusterwideNetworkPolicy lockdown @3 rules=1",
          "NetworkPolicy default/backend @2 rules=1",
        ])
    #expect(reopened.computePolicy(for: backend) == before)
    #expect(before.ingress(from: frontend) == .allow && before.ingress(from: .world) == .deny)
    #expect(try reopened.importYAML(PolicyManifestTests.cnp).revision == 5)
  }

  @Test(
    "stored forms older versions accepted still load with their meaning; importing them again is refused"
  )
  func storedLegacyFormsLoad() throws {
    let database = try PolicyDatabase.inMemory()
    let empty =
      #"{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"empty","namespace":"default"},"spec":{"endpointSelector":{"matchLabels":{"app":"backend"}},"ingress":[]}}"#
    let mixed =
      #"{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"mixed","namespace":"default"},"spec":{"endpointSelector":{"matchLabels":{"app":"frontend"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"backend"}}],"fromEntities":["host"],"toPorts":[{}]}]}}"#
    try database.commit(
      revision: 2,
      upserting: [
        PolicyRecord(
          namespace: "default", name: "empty", kind: "CiliumNetworkPolicy", revision: 2,
          sourceJSON: empty, ruleCount: 1),
        PolicyRecord(
          namespace: "default", name: "mixed", kind: "CiliumNetworkPolicy", revision: 2,
          sourceJSON: mixed, ruleCount: 1),
      ],
      deleting: [])
    let engine = try engine([backend, frontend], database: database)
    #expect(engine.policies().map(\.ref.name) == ["empty", "mixed"])
    let emptyPolicy = engine.computePolicy(for: backend)
    #expect(
      !emptyPolicy.ingressEnforced && !emptyPolicy.egressEnforced && emptyPolicy.entries.isEmpty)
    // The union of both peer kinds, on every port, as before.
    let mixedPolicy = engine.computePolicy(for: frontend)
    #expect(
      mixedPolicy.ingress(from: backend, .udp, 9) == .allow
        && mixedPolicy.ingress(from: .host) == .allow)
    #expect(mixedPolicy.ingress(from: .world) == .deny)
    for json in [empty, mixed] {
      #expect(throws: PolicyError.self) {
        try engine.importPolicies(sourceName: "again.json", content: Array(json.utf8))
      }
    }
  }

  @Test("a subject unknown to the SelectorCache still gets its policy")
  func unknownSubject() throws {
    let engine = try engine([frontend])
    try engine.importYAML(Self.backendPolicy)
    let policy = engine.computePolicy(for: backend)
    #expect(policy.ingressEnforced && policy.ingress(from: frontend) == .allow)
  }
}
