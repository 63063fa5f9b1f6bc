import TesseraCore
import Testing

@testable import PolicyService

/// `policy trace` explains verdicts rule by rule; it must agree with the endpoint
/// policy the datapath is given, on every case.
@Suite("Policy trace")
struct PolicyTraceTests {
  let backend = pod(1000, "app=backend")
  let frontend = pod(1001, "app=frontend")
  let other = pod(1002, "app=other")
  let admin = pod(1003, namespace: "ops", "app=admin")

  var identities: [SecurityIdentity] { [backend, frontend, other, admin] }

  /// Policies with allows, denies, wildcard peers, port ranges, and entities.
  let manifests = """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: backend-in, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: backend}}
      ingress:
      - fromEndpoints: [{matchLabels: {app: frontend}}]
        toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
      - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": ops}}]
      ingressDeny:
      - fromEndpoints: [{matchLabels: {app: frontend}}]
        toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
    ---
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: frontend-out, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: frontend}}
      egress:
      - toEndpoints: [{matchLabels: {app: backend}}]
        toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}]}]
      - toEntities: [world]
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: other-in, namespace: default}
    spec:
      podSelector: {matchLabels: {app: other}}
      policyTypes: [Ingress]
      ingress:
      - ports: [{port: 53, protocol: UDP}]
    """

  @Test("names the rules and sections that decide each direction")
  func explains() throws {
    let engine = try engine(identities)
    try engine.importYAML(manifests)
    let allowed = engine.trace(from: frontend, to: backend, proto: .tcp, port: 8080)
    #expect(allowed.allowed)
    #expect(allowed.egress.decision == .allow && allowed.ingress.decision == .allow)
    #expect(allowed.ingress.matches.map(\.policy.name) == ["backend-in"])
    #expect(allowed.ingress.matches.first?.section == 0)
    #expect(allowed.ingress.enforcedBy.map(\.policy.name) == ["backend-in"])

    let denied = engine.trace(from: frontend, to: backend, proto: .tcp, port: 8081)
    #expect(!denied.allowed && denied.ingress.decision == .deny)
    #expect(
      denied.ingress.matches.contains { $0.verdict == .deny && $0.policy.name == "backend-in" })

    let egressOutOfRange = engine.trace(from: frontend, to: backend, proto: .tcp, port: 9000)
    #expect(egressOutOfRange.egress.decision == .defaultDeny)
    #expect(egressOutOfRange.egress.enforcedBy.map(\.policy.name) == ["frontend-out"])

    let unselected = engine.trace(from: other, to: frontend, proto: .tcp, port: 80)
    #expect(
      unselected.ingress.decision == .defaultAllow && unselected.egress.decision == .defaultAllow)
  }

  @Test("agrees with the computed endpoint policy on every generated case")
  func agreesWithEndpointPolicy() throws {
    let engine = try engine(identities)
    try engine.importYAML(manifests)
    let world = SecurityIdentity(id: .world, labels: try #require(engine.labels(of: .world)))
    let everyone = identities + [world]
    var cases = 0
    for source in everyone {
      for destination in everyone where destination.id != source.id {
        for proto in [L4Protocol.tcp, .udp, .sctp] {
          for port: UInt16 in [0, 53, 80, 7999, 8000, 8050, 8080, 8081, 8100, 8101, 65535] {
            let trace = engine.trace(from: source, to: destination, proto: proto, port: port)
            for direction in [trace.egress, trace.ingress] {
              #expect(
                direction.verdict == direction.computed,
                "\(source.id) -> \(destination.id) \(proto)/\(port) \(direction.direction): trace \(direction.decision), policy \(direction.computed)"
              )
            }
            cases += 1
          }
        }
      }
    }
    #expect(cases == 5 * 4 * 3 * 11)
  }
}
