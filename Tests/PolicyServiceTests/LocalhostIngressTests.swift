import TesseraCore
import Testing

@testable import PolicyService

/// The node reaching its own pods (kubelet's probes) whatever their ingress rules, as
/// Kubernetes requires and Cilium's agent does in Kubernetes mode; `policy` judges it by
/// the rules like any peer.
@Suite("The node reaching its pods (--allow-localhost)")
struct LocalhostIngressTests {
  let api = pod(300, "app=api")
  let client = pod(301, "app=client")
  var identities: [SecurityIdentity] { [api, client] }
  let node = SecurityIdentity(id: .host, labels: ReservedIdentity.host.labels)

  func engine(_ mode: LocalhostIngress, _ spec: String) throws -> PolicyEngine {
    let engine = try PolicyServiceTests.engine(identities, localhostIngress: mode)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: p, namespace: default}
      spec:
        endpointSelector: {matchLabels: {app: api}}
      \(spec.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
      """)
    return engine
  }

  @Test(
    "always (the default): an endpoint isolated for ingress admits the node on every protocol and port, and nobody else; trace says allow-node"
  )
  func nodeAdmitted() throws {
    #expect(try PolicyEngine(database: nil).computePolicy(for: api).entries.isEmpty)
    let engine = try engine(
      .always,
      """
      ingress:
      - fromEndpoints: [{matchLabels: {app: client}}]
        toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
      """)
    let policy = engine.computePolicy(for: api)
    #expect(policy.ingressEnforced)
    #expect(policy.ingress(from: .host, .tcp, 10250) == .allow)
    #expect(policy.ingress(from: .host, .udp, 53) == .allow)
    #expect(policy.ingress(from: .host, .icmp, 8) == .allow)
    #expect(policy.ingress(from: client, .tcp, 8080) == .allow)
    #expect(policy.ingress(from: client, .tcp, 10250) == .deny)
    #expect(policy.ingress(from: .world, .tcp, 10250) == .deny)
    let trace = engine.trace(from: node, to: api, proto: .tcp, port: 10250)
    #expect(trace.ingress.decision == .allowNode && trace.allowed)
    #expect(trace.ingress.computed == .allow)
    #expect(
      engine.trace(from: client, to: api, proto: .tcp, port: 10250).ingress.decision == .defaultDeny
    )
  }

  @Test("a deny naming the node wins, on its ports only; egress to the node is judged by the rules")
  func denyWins() throws {
    let engine = try engine(
      .always,
      """
      ingressDeny:
      - fromEntities: [host]
        toPorts: [{ports: [{port: "22", protocol: TCP}]}]
      egress:
      - toEndpoints: [{matchLabels: {app: client}}]
      """)
    let policy = engine.computePolicy(for: api)
    #expect(policy.ingress(from: .host, .tcp, 22) == .deny)
    #expect(policy.ingress(from: .host, .tcp, 10250) == .allow)
    #expect(policy.egress(to: .host) == .deny)
    #expect(engine.trace(from: node, to: api, proto: .tcp, port: 22).ingress.decision == .deny)
    let denied = try self.engine(.always, "ingressDeny:\n- fromEntities: [all]")
    #expect(denied.computePolicy(for: api).ingress(from: .host, .tcp, 10250) == .deny)
  }

  @Test("an endpoint whose ingress nothing enforces gets no entry for the node")
  func nothingEnforced() throws {
    let engine = try engine(.always, "egress:\n- toEndpoints: [{matchLabels: {app: client}}]")
    let policy = engine.computePolicy(for: api)
    #expect(!policy.ingressEnforced && policy.entries.allSatisfy { $0.direction == .egress })
  }

  @Test("policy: the node is a peer like any other; fromEntities [host] admits it")
  func judgedByRules() throws {
    let isolated = try engine(.policy, "ingress:\n- {}")
    #expect(isolated.computePolicy(for: api).ingress(from: .host, .tcp, 10250) == .deny)
    #expect(
      isolated.trace(from: node, to: api, proto: .tcp, port: 10250).ingress.decision
        == .defaultDeny)
    let admitted = try engine(.policy, "ingress:\n- fromEntities: [host]")
    #expect(admitted.computePolicy(for: api).ingress(from: .host, .tcp, 10250) == .allow)
  }
}
