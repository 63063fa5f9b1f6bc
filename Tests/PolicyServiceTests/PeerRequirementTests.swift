import TesseraCore
import Testing

@testable import PolicyService

/// Cilium's `fromRequires`/`toRequires` (policy language docs, "Ingress/Egress Requires";
/// `pkg/policy/rules.go` `resolveL4IngressPolicy`): the requirements of every rule selecting
/// the subject are added to each `fromEndpoints` (`toEndpoints`) selector of its allow
/// sections (deny requirements to its deny sections), whichever policy those come from. They
/// grant nothing themselves and narrow no entity, CIDR or port-only peer.
///
/// The cluster: `default` holds `backend` (env=prod), `prodFrontend` (env=prod) and
/// `devFrontend` (env=dev); `prod` holds `otherFrontend` (env=prod).
@Suite("Peer requirements (fromRequires, toRequires)")
struct PeerRequirementTests {
  let backend = pod(1000, "app=backend", "env=prod")
  let prodFrontend = pod(1001, "app=frontend", "env=prod")
  let devFrontend = pod(1002, "app=frontend", "env=dev")
  let otherFrontend = pod(1003, namespace: "prod", "app=frontend", "env=prod")

  var identities: [SecurityIdentity] { [backend, prodFrontend, devFrontend, otherFrontend] }

  /// The docs' example: prod endpoints accept only prod sources, in a policy of its own.
  static let requiresProd = cnp(
    "endpointSelector: {matchLabels: {env: prod}}\ningress:\n- fromRequires: [{matchLabels: {env: prod}}]",
    name: "requires-rule")

  static func cnp(_ spec: String, name: String = "cnp", clusterwide: Bool = false) -> String {
    PolicySemanticsConformanceTests.cnp(spec, name: name, clusterwide: clusterwide)
  }

  func compute(_ yamls: String..., for subject: SecurityIdentity? = nil) throws -> EndpointPolicy {
    let engine = try engine(identities)
    for (index, yaml) in yamls.enumerated() { try engine.importYAML(yaml, name: "p\(index).yaml") }
    return engine.computePolicy(for: subject ?? backend)
  }

  @Test("a requirement in one policy narrows the fromEndpoints peers another policy allows")
  func narrowsOtherPolicies() throws {
    let allowFrontends = Self.cnp(
      "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEndpoints: [{matchLabels: {app: frontend}}]",
      name: "l3-rule")
    let policy = try compute(Self.requiresProd, allowFrontends)
    #expect(policy.ingressEnforced)
    #expect(policy.ingress(from: prodFrontend) == .allow)
    #expect(policy.ingress(from: devFrontend) == .deny)
    // Without the requirement, the dev frontend is allowed: the requirement did it.
    #expect(try compute(allowFrontends).ingress(from: devFrontend) == .allow)
  }

  @Test("a requirement alone grants nothing but makes the direction default-deny")
  func grantsNothing() throws {
    let policy = try compute(Self.requiresProd)
    #expect(policy.ingressEnforced)
    #expect(policy.entries.isEmpty)
    #expect(policy.ingress(from: prodFrontend) == .deny)
  }

  @Test("a requirement applies only to subjects of the rule that states it")
  func onlyForItsSubjects() throws {
    let allowDevToFrontend = Self.cnp(
      "endpointSelector: {matchLabels: {env: dev}}\ningress:\n- fromEndpoints: [{matchLabels: {app: backend}}]\n- fromEndpoints: [{matchLabels: {env: dev}}]"
    )
    let policy = try compute(Self.requiresProd, allowDevToFrontend, for: devFrontend)
    #expect(policy.ingress(from: backend) == .allow && policy.ingress(from: devFrontend) == .allow)
  }

  @Test(
    "entities, CIDRs and port-only peers are not narrowed (Cilium adds requirements to fromEndpoints only)"
  )
  func otherPeerKindsUntouched() throws {
    let others = Self.cnp(
      "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEntities: [world]\n- fromCIDR: [192.0.2.0/24]\n- toPorts: [{ports: [{port: \"443\"}]}]"
    )
    let policy = try compute(Self.requiresProd, others)
    #expect(policy.ingress(from: .world) == .allow)
    #expect(policy.ingress(from: devFrontend, .tcp, 443) == .allow)
    #expect(policy.ingress(from: devFrontend, .tcp, 80) == .deny)
    #expect(
      policy.entries.contains {
        $0.peer == CIDRIdentity.identity(for: IPPrefix("192.0.2.0/24")!).id
      }
    )
  }

  @Test("a cluster-wide fromEndpoints wildcard with a requirement selects only what it requires")
  func wildcardBecomesTheRequirement() throws {
    let policy = try compute(
      Self.cnp(
        "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEndpoints: [{}]\n  fromRequires: [{matchLabels: {env: prod}}]",
        clusterwide: true))
    #expect(!policy.entries.contains { $0.peer == .unknown }, "not the every-peer wildcard")
    #expect(policy.ingress(from: prodFrontend) == .allow)
    #expect(policy.ingress(from: otherFrontend) == .allow)
    #expect(policy.ingress(from: devFrontend) == .deny)
    #expect(policy.ingress(from: .world) == .deny)
  }

  @Test("a namespaced requirement holds within its namespace, as Cilium scopes fromRequires")
  func namespacedRequirementIsScoped() throws {
    let anyNamespace = Self.cnp(
      "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEndpoints: [{matchLabels: {app: frontend}}]",
      clusterwide: true)
    let policy = try compute(Self.requiresProd, anyNamespace)
    #expect(policy.ingress(from: prodFrontend) == .allow)
    #expect(policy.ingress(from: otherFrontend) == .deny, "env=prod, but in namespace prod")
  }

  @Test("deny requirements narrow deny sections, allow requirements allow sections")
  func denyAndAllowKeepTheirOwn() throws {
    let policy = try compute(
      Self.cnp(
        "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEndpoints: [{matchLabels: {app: frontend}}]\ningressDeny:\n- fromEndpoints: [{matchLabels: {app: frontend}}]\n  fromRequires: [{matchLabels: {env: dev}}]"
      ))
    #expect(policy.ingress(from: devFrontend) == .deny)
    #expect(
      policy.ingress(from: prodFrontend) == .allow, "the deny requirement left the allow alone")
  }

  @Test("toRequires narrows toEndpoints for egress")
  func egressRequirement() throws {
    let policy = try compute(
      Self.cnp(
        "endpointSelector: {matchLabels: {app: backend}}\negress:\n- toEndpoints: [{matchLabels: {app: frontend}}]\n- toRequires: [{matchLabels: {env: prod}}]"
      ))
    #expect(policy.egressEnforced)
    #expect(policy.egress(to: prodFrontend) == .allow)
    #expect(policy.egress(to: devFrontend) == .deny)
  }

  @Test("an identity that arrives later is admitted only if it meets the requirement")
  func laterIdentities() throws {
    let engine = try engine(identities)
    try engine.importYAML(Self.requiresProd, name: "a.yaml")
    try engine.importYAML(
      Self.cnp(
        "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEndpoints: [{matchLabels: {app: frontend}}]",
        name: "b"),
      name: "b.yaml")
    let laterProd = pod(1010, "app=frontend", "env=prod")
    let laterDev = pod(1011, "app=frontend", "env=dev")
    let changed = engine.updateIdentities(added: [laterProd, laterDev], deleted: [])
    #expect(changed.affected.contains(backend.id), "the backend's policy is recomputed")
    let policy = engine.computePolicy(for: backend)
    #expect(policy.ingress(from: laterProd) == .allow)
    #expect(policy.ingress(from: laterDev) == .deny)
  }

  @Test("removing the policy with the requirement widens the others again")
  func removal() throws {
    let engine = try engine(identities)
    try engine.importYAML(Self.requiresProd, name: "a.yaml")
    try engine.importYAML(
      Self.cnp(
        "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEndpoints: [{matchLabels: {app: frontend}}]",
        name: "b"),
      name: "b.yaml")
    #expect(engine.computePolicy(for: backend).ingress(from: devFrontend) == .deny)
    _ = try engine.deletePolicy(namespace: "default", name: "requires-rule")
    #expect(engine.computePolicy(for: backend).ingress(from: devFrontend) == .allow)
  }

  @Test("the trace shows a section only for peers the requirements admit")
  func trace() throws {
    let engine = try engine(identities)
    try engine.importYAML(Self.requiresProd, name: "a.yaml")
    try engine.importYAML(
      Self.cnp(
        "endpointSelector: {matchLabels: {app: backend}}\ningress:\n- fromEndpoints: [{matchLabels: {app: frontend}}]",
        name: "b"),
      name: "b.yaml")
    let dev = engine.trace(from: devFrontend, to: backend, proto: .tcp, port: 80).ingress
    #expect(dev.matches.isEmpty && dev.computed == .deny)
    let prod = engine.trace(from: prodFrontend, to: backend, proto: .tcp, port: 80).ingress
    #expect(prod.matches.count == 1 && prod.computed == .allow)
  }

  @Test("a malformed requirement is refused with its field")
  func malformed() {
    let message = policyError {
      _ = try PolicyManifest.parse(
        sourceName: "p.yaml",
        content: Array(
          Self.cnp(
            "endpointSelector: {}\ningress:\n- fromRequires: [{matchExpressions: [{key: env, operator: Bogus}]}]"
          ).utf8))
    }?.message
    #expect(message?.contains("spec.ingress[0].fromRequires[0]") == true, "\(message ?? "")")
  }
}
