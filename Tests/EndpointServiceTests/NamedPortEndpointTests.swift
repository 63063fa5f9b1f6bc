import TesseraCore
import Testing

@testable import EndpointService

/// Named ports end to end through the endpoint service, on the in-process node: the policy
/// service's named rows become port entries in each endpoint's realised policy.
@Suite("Named ports on the node")
struct NamedPortEndpointTests {
  static let ingressPolicy = """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: backend, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: backend}}
      ingress:
      - fromEndpoints: [{matchLabels: {app: frontend}}]
        toPorts: [{ports: [{port: http, protocol: TCP}]}]
    """

  static let egressPolicy = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: client, namespace: default}
    spec:
      podSelector: {matchLabels: {app: client}}
      policyTypes: [Egress]
      egress:
      - to: [{podSelector: {matchLabels: {app: backend}}}]
        ports: [{port: http}]
    """

  func spec(
    _ node: InProcessNode, _ container: String, _ ip: String, _ label: String,
    ports: [NamedPort] = []
  ) throws -> EndpointSpec {
    var spec = try node.spec(container, ip, label)
    spec.namedPorts = ports
    return spec
  }

  func verdict(
    _ node: InProcessNode, _ endpoint: Endpoint, _ direction: TrafficDirection,
    peer: NumericIdentity, port: UInt16
  ) -> PolicyVerdict? {
    node.datapath.endpoint(id: endpoint.id)?.policy.verdict(
      peer: peer, direction: direction, proto: .tcp, port: port)
  }

  /// A node with the egress policy, a backend declaring http=8080 and a client it applies to.
  func egressNode() async throws -> (node: InProcessNode, backend: Endpoint, client: Endpoint) {
    let node = try InProcessNode()
    _ = try node.engine.importPolicies(sourceName: "p.yaml", content: Array(Self.egressPolicy.utf8))
    let backend = try await node.manager.createEndpoint(
      try spec(node, "b1", "10.0.0.2", "app=backend", ports: [NamedPort(name: "http", port: 8080)]),
      sync: true)
    let client = try await node.manager.createEndpoint(
      try spec(node, "c", "10.0.0.1", "app=client"), sync: true)
    return (node, backend, client)
  }

  /// Polls until `condition` holds (a regeneration another endpoint triggered is asynchronous).
  func eventually(_ condition: () -> Bool) async -> Bool {
    for _ in 0..<200 {
      if condition() { return true }
      try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
  }

  @Test("ingress: each endpoint's own port of the name, also for endpoints of one identity")
  func ingressPerEndpoint() async throws {
    let node = try InProcessNode()
    _ = try node.engine.importPolicies(
      sourceName: "p.yaml", content: Array(Self.ingressPolicy.utf8))
    let frontend = try await node.manager.createEndpoint(
      try spec(node, "f", "10.0.0.1", "app=frontend"), sync: true)
    let first = try await node.manager.createEndpoint(
      try spec(node, "b1", "10.0.0.2", "app=backend", ports: [NamedPort(name: "http", port: 8080)]),
      sync: true)
    let second = try await node.manager.createEndpoint(
      try spec(node, "b2", "10.0.0.3", "app=backend", ports: [NamedPort(name: "http", port: 7070)]),
      sync: true)
    #expect(first.identity == second.identity)
    #expect(verdict(node, first, .ingress, peer: frontend.identity, port: 8080) == .allow)
    #expect(verdict(node, first, .ingress, peer: frontend.identity, port: 7070) == .deny)
    #expect(verdict(node, second, .ingress, peer: frontend.identity, port: 7070) == .allow)
    #expect(verdict(node, second, .ingress, peer: frontend.identity, port: 8080) == .deny)
    #expect(node.datapath.endpoint(id: first.id)?.policy.namedPortEntries.isEmpty == true)
  }

  @Test("egress: the peer's ports of the name; a peer declaring a new one regenerates its clients")
  func egressFollowsTheNode() async throws {
    let (node, backend, client) = try await egressNode()
    #expect(verdict(node, client, .egress, peer: backend.identity, port: 8080) == .allow)
    #expect(verdict(node, client, .egress, peer: backend.identity, port: 6060) == .deny)

    // Same identity, so no policy event: only the named-port change can regenerate the client.
    let later = try await node.manager.createEndpoint(
      try spec(node, "b3", "10.0.0.3", "app=backend", ports: [NamedPort(name: "http", port: 6060)]),
      sync: true)
    #expect(later.identity == backend.identity)
    #expect(
      await eventually {
        verdict(node, client, .egress, peer: backend.identity, port: 6060) == .allow
      })

    _ = try await node.manager.deleteEndpoint(id: later.id)
    #expect(
      await eventually {
        verdict(node, client, .egress, peer: backend.identity, port: 6060) == .deny
      })
    #expect(verdict(node, client, .egress, peer: backend.identity, port: 8080) == .allow)
  }

  @Test("a pod of another identity naming a port cannot open it towards the peer")
  func otherPodsCannotWiden() async throws {
    let (node, backend, client) = try await egressNode()
    let intruder = try await node.manager.createEndpoint(
      try spec(node, "i", "10.0.0.4", "app=other", ports: [NamedPort(name: "http", port: 22)]),
      sync: true)
    // Give a (wrong) regeneration of the client every chance to happen first.
    try await Task.sleep(for: .milliseconds(200))
    #expect(verdict(node, client, .egress, peer: backend.identity, port: 22) == .deny)
    #expect(verdict(node, client, .egress, peer: intruder.identity, port: 22) == .deny)
    #expect(verdict(node, client, .egress, peer: backend.identity, port: 8080) == .allow)
  }

  @Test("bad named ports are refused before anything is registered")
  func refused() async throws {
    let node = try InProcessNode()
    for ports in [
      [NamedPort(name: "http", port: 80), NamedPort(name: "http", port: 81)],
      [NamedPort(name: "HTTP", port: 80)], [NamedPort(name: "http", port: 0)],
      [NamedPort(name: "ping", proto: .icmp, port: 8)],
    ] {
      await #expect(throws: EndpointError.self) {
        try await node.manager.createEndpoint(
          try spec(node, "x", "10.0.0.9", "app=x", ports: ports), sync: true)
      }
    }
    #expect(node.manager.registry.all().isEmpty)
  }

  @Test("named ports survive a restart of the endpoint service")
  func restored() async throws {
    try await InProcessNode.withRestartable { first, _, restart in
      let ports = [
        NamedPort(name: "dns", proto: .udp, port: 53), NamedPort(name: "http", port: 80),
      ]
      let created = try await first.manager.createEndpoint(
        try spec(first, "a", "10.0.0.1", "app=x", ports: ports), sync: true)
      let restarted = try restart()
      _ = try await restarted.manager.restore()
      #expect(restarted.manager.registry.endpoint(id: created.id)?.namedPorts == ports)
      #expect(restarted.manager.registry.namedPortsByIdentity()[created.identity] == Set(ports))
    }
  }
}
