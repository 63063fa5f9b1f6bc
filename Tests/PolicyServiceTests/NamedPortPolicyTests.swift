import TesseraCore
import Testing

@testable import PolicyService

/// Named ports (`port: http`): the policy service keeps the name in a ``NamedPortEntry`` and the
/// node resolves it (``EndpointPolicy/resolvingNamedPorts(own:declared:)``), ingress through the
/// subject's own ports, egress through the ports the peer's endpoints declare. Each case
/// asserts the verdict after that resolution, as the datapath would hold it.
@Suite("Named ports")
struct NamedPortPolicyTests {
  let api = pod(1000, namespace: "default", "app=api")
  let client = pod(1001, namespace: "default", "app=client")
  let other = pod(1002, namespace: "default", "app=other")

  func compute(_ yaml: String, for subject: SecurityIdentity) throws -> EndpointPolicy {
    let engine = try engine([api, client, other])
    try engine.importYAML(yaml)
    return engine.computePolicy(for: subject)
  }

  static let http = NamedPort(name: "http", proto: .tcp, port: 8080)

  @Test("NetworkPolicy ingress on a named port: the pod's own port of that name, TCP by default")
  func kubernetesIngress() throws {
    let policy = try compute(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: api}}
        ingress:
        - from: [{podSelector: {matchLabels: {app: client}}}]
          ports: [{port: http}]
        """), for: api)
    #expect(policy.entries.isEmpty)
    #expect(
      policy.namedPortEntries == [
        NamedPortEntry(peer: client.id, direction: .ingress, proto: .tcp, portName: "http")
      ])
    let resolved = policy.resolvingNamedPorts(own: [Self.http]) { [:] }
    #expect(resolved.namedPortEntries.isEmpty)
    #expect(
      resolved.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 8080) == .allow)
    #expect(resolved.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 80) == .deny)
    #expect(
      resolved.verdict(peer: client.id, direction: .ingress, proto: .udp, port: 8080) == .deny)
    #expect(resolved.verdict(peer: other.id, direction: .ingress, proto: .tcp, port: 8080) == .deny)
    // A pod that declares no such port admits nothing through the rule.
    let undeclared = policy.resolvingNamedPorts(own: []) { [self.api.id: [Self.http]] }
    #expect(
      undeclared.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 8080) == .deny)
  }

  @Test("a rule protocol other than the named port's matches nothing; ANY takes the port's own")
  func protocols() throws {
    let dns = NamedPort(name: "dns", proto: .udp, port: 53)
    let udpOnly = try compute(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: api}}
        ingress:
        - ports: [{port: dns, protocol: TCP}]
        """), for: api
    ).resolvingNamedPorts(own: [dns]) { [:] }
    #expect(udpOnly.verdict(peer: client.id, direction: .ingress, proto: .udp, port: 53) == .deny)
    #expect(udpOnly.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 53) == .deny)
    let any = try compute(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: dns}]}]
        """), for: api)
    #expect(any.namedPortEntries.map(\.proto) == [.any])
    let resolved = any.resolvingNamedPorts(own: [dns]) { [:] }
    #expect(resolved.verdict(peer: client.id, direction: .ingress, proto: .udp, port: 53) == .allow)
    #expect(resolved.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 53) == .deny)
    #expect(resolved.verdict(peer: client.id, direction: .ingress, proto: .sctp, port: 53) == .deny)
  }

  @Test("egress on a named port: the ports the peer's endpoints declare, not other pods'")
  func egress() throws {
    let policy = try compute(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: client}}
        policyTypes: [Egress]
        egress:
        - to: [{podSelector: {matchLabels: {app: api}}}]
          ports: [{port: http}]
        - ports: [{port: metrics}]
        """), for: client)
    let declared: [NumericIdentity: Set<NamedPort>] = [
      api.id: [Self.http, NamedPort(name: "http", port: 9090)],
      // Another pod naming port 22 "http" or "metrics" must not open 22 towards api.
      other.id: [NamedPort(name: "http", port: 22), NamedPort(name: "metrics", port: 9100)],
    ]
    var reads = 0
    // The ingress list does not feed egress rows.
    let resolved = policy.resolvingNamedPorts(own: [NamedPort(name: "http", port: 1)]) {
      reads += 1
      return declared
    }
    #expect(reads == 1)
    #expect(resolved.verdict(peer: api.id, direction: .egress, proto: .tcp, port: 8080) == .allow)
    #expect(resolved.verdict(peer: api.id, direction: .egress, proto: .tcp, port: 9090) == .allow)
    #expect(resolved.verdict(peer: api.id, direction: .egress, proto: .tcp, port: 22) == .deny)
    #expect(resolved.verdict(peer: api.id, direction: .egress, proto: .tcp, port: 1) == .deny)
    #expect(resolved.verdict(peer: other.id, direction: .egress, proto: .tcp, port: 8080) == .deny)
    // A row towards every peer (ports without `to`): each identity's own ports, towards it
    // only, as Kubernetes resolves the name on the destination pod.
    #expect(resolved.verdict(peer: other.id, direction: .egress, proto: .tcp, port: 9100) == .allow)
    #expect(resolved.verdict(peer: api.id, direction: .egress, proto: .tcp, port: 9100) == .deny)
    #expect(
      resolved.verdict(
        peer: ReservedIdentity.world.identity, direction: .egress, proto: .tcp, port: 9100)
        == .deny)
  }

  @Test(
    "a deny towards every peer on a named port denies every declared port of the name, to everyone")
  func wildcardDeny() throws {
    let policy = try compute(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: client}}
        egress:
        - toEntities: [all]
        egressDeny:
        - toPorts: [{ports: [{port: http, protocol: TCP}]}]
        """), for: client)
    let resolved = policy.resolvingNamedPorts(own: []) {
      [api.id: [Self.http], other.id: [NamedPort(name: "http", port: 22)]]
    }
    for peer in [api.id, other.id, ReservedIdentity.world.identity] {
      #expect(resolved.verdict(peer: peer, direction: .egress, proto: .tcp, port: 8080) == .deny)
      #expect(resolved.verdict(peer: peer, direction: .egress, proto: .tcp, port: 22) == .deny)
      #expect(resolved.verdict(peer: peer, direction: .egress, proto: .tcp, port: 443) == .allow)
    }
  }

  @Test(
    "a deny on a named port beats an allow of the same port by number, and denies nothing unresolved"
  )
  func denyWins() throws {
    let policy = try compute(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
        ingressDeny:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: http, protocol: TCP}]}]
        """), for: api)
    #expect(policy.namedPortEntries.map(\.verdict) == [.deny])
    let resolved = policy.resolvingNamedPorts(own: [Self.http]) { [:] }
    #expect(
      resolved.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 8080) == .deny)
    #expect(resolved.entries.count == 1)
    let unresolved = policy.resolvingNamedPorts(own: [NamedPort(name: "http", port: 80)]) { [:] }
    #expect(
      unresolved.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 8080) == .allow)
    #expect(
      unresolved.verdict(peer: client.id, direction: .ingress, proto: .tcp, port: 80) == .deny)
  }

  @Test(
    "the trace resolves named ports on the destination pod, in both directions, and agrees with the resolved policy"
  )
  func trace() throws {
    let engine = try engine([api, client, other])
    try engine.importYAML(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: api}}
        ingress:
        - from: [{podSelector: {matchLabels: {app: client}}}]
          ports: [{port: http}]
        """, name: "api-in"))
    try engine.importYAML(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: client}}
        policyTypes: [Egress]
        egress:
        - to: [{podSelector: {matchLabels: {app: api}}}]
          ports: [{port: http}]
        """, name: "client-out"), name: "out.yaml")
    let ports = [Self.http]
    let allowed = engine.trace(
      from: client, to: api, proto: .tcp, port: 8080, destinationPorts: ports)
    #expect(allowed.allowed)
    #expect(allowed.ingress.matches.map(\.policy.name) == ["api-in"])
    #expect(allowed.egress.matches.map(\.policy.name) == ["client-out"])
    for port: UInt16 in [8080, 9090] {
      for destinationPorts in [ports, []] {
        for (source, destination) in [(client, api), (other, api), (client, other)] {
          let trace = engine.trace(
            from: source, to: destination, proto: .tcp, port: port,
            destinationPorts: destinationPorts)
          for direction in [trace.egress, trace.ingress] {
            #expect(
              direction.verdict == direction.computed,
              "\(source.id) -> \(destination.id):\(port) ports \(destinationPorts) \(direction.direction)"
            )
          }
        }
      }
    }
    // Another port, or no ports known (a trace by identity or labels): no named section.
    #expect(
      !engine.trace(from: client, to: api, proto: .tcp, port: 9090, destinationPorts: ports).allowed
    )
    let unknown = engine.trace(from: client, to: api, proto: .tcp, port: 8080)
    #expect(unknown.ingress.matches.isEmpty && unknown.egress.matches.isEmpty && !unknown.allowed)
    // The protocol counts: http is TCP.
    #expect(
      !engine.trace(from: client, to: api, proto: .udp, port: 8080, destinationPorts: ports).allowed
    )
  }

  @Test("the same row from an allow and a deny keeps the deny")
  func sameRow() throws {
    let policy = try compute(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: http}]}]
        ingressDeny:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: http}]}]
        """), for: api)
    #expect(policy.namedPortEntries.count == 1 && policy.namedPortEntries.first?.verdict == .deny)
  }
}
