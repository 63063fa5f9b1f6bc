import TesseraCore
import Testing

@testable import PolicyService

/// Cases from Cilium's policy language docs (docs.cilium.io, security/policy/language) and the
/// Kubernetes NetworkPolicy docs, checked through `EndpointPolicy.verdict`, the semantics the
/// datapath follows.
@Suite("Policy computation")
struct PolicyComputationTests {
  let backend = pod(1000, "role=backend")
  let frontend = pod(1001, "role=frontend")
  let frontendProd = pod(1002, namespace: "prod", "role=frontend")
  let other = pod(1003, "role=other")
  let world = NumericIdentity.world
  let host = NumericIdentity.host

  var all: [SecurityIdentity] { [backend, frontend, frontendProd, other] }

  @Test("L3: ingress from frontend to backend (Cilium \"Simple Ingress Allow\")")
  func l3Ingress() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: "cilium.io/v2"
      kind: CiliumNetworkPolicy
      metadata:
        name: "l3-rule"
      spec:
        endpointSelector:
          matchLabels:
            role: backend
        ingress:
        - fromEndpoints:
          - matchLabels:
              role: frontend
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(policy.revision == 2)
    #expect(policy.ingressEnforced && !policy.egressEnforced)
    #expect(policy.entries == [PolicyEntry(peer: frontend.id, direction: .ingress)])
    #expect(policy.ingress(from: frontend, .udp, 53) == .allow)
    #expect(policy.ingress(from: frontendProd) == .deny)  // other namespace
    #expect(policy.ingress(from: other) == .deny)
    #expect(policy.ingress(from: world) == .deny)
    #expect(policy.egress(to: world) == .allow)  // no egress section: default allow
    // Endpoints the rule does not select are unaffected.
    let frontendPolicy = engine.computePolicy(for: frontend)
    #expect(
      !frontendPolicy.ingressEnforced && !frontendPolicy.egressEnforced
        && frontendPolicy.entries.isEmpty)
  }

  @Test("L4: egress only on 80/TCP to anyone (Cilium \"Limit ingress/egress ports\")")
  func l4Egress() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: "cilium.io/v2"
      kind: CiliumNetworkPolicy
      metadata:
        name: "l4-rule"
      spec:
        endpointSelector:
          matchLabels:
            role: backend
        egress:
          - toPorts:
            - ports:
              - port: "80"
                protocol: TCP
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(!policy.ingressEnforced && policy.egressEnforced)
    #expect(
      policy.entries == [
        PolicyEntry(peer: .unknown, direction: .egress, proto: .tcp, ports: PortRange(single: 80))
      ])
    #expect(policy.egress(to: world, .tcp, 80) == .allow)
    #expect(policy.egress(to: frontend, .tcp, 80) == .allow)
    #expect(policy.egress(to: world, .tcp, 443) == .deny)
    #expect(policy.egress(to: world, .udp, 80) == .deny)
    #expect(policy.ingress(from: world, .tcp, 22) == .allow)
  }

  @Test("L3 + L4 and port ranges (Cilium \"Labels-dependent Layer 4 rule\", endPort)")
  func portRanges() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: "cilium.io/v2"
      kind: CiliumNetworkPolicy
      metadata:
        name: "l4-port-range-rule"
      spec:
        endpointSelector:
          matchLabels:
            role: backend
        ingress:
        - fromEndpoints:
          - matchLabels:
              role: frontend
          toPorts:
          - ports:
            - port: "80"
              endPort: 444
              protocol: TCP
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(
      policy.entries == [
        PolicyEntry(peer: frontend.id, direction: .ingress, proto: .tcp, ports: PortRange(80, 444))
      ])
    #expect(policy.ingress(from: frontend, .tcp, 80) == .allow)
    #expect(policy.ingress(from: frontend, .tcp, 443) == .allow)
    #expect(policy.ingress(from: frontend, .tcp, 445) == .deny)
    #expect(policy.ingress(from: frontend, .tcp, 79) == .deny)
    #expect(policy.ingress(from: other, .tcp, 80) == .deny)
  }

  @Test("deny beats allow (Cilium \"external-lockdown\": deny world, allow all)")
  func denyWinsOverAllow() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: "cilium.io/v2"
      kind: CiliumClusterwideNetworkPolicy
      metadata:
        name: "external-lockdown"
      spec:
        endpointSelector: {}
        ingressDeny:
        - fromEntities:
          - "world"
        ingress:
        - fromEntities:
          - "all"
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(policy.ingressEnforced)
    #expect(policy.ingress(from: world) == .deny)
    #expect(policy.ingress(from: .worldIPv4) == .deny)
    #expect(policy.ingress(from: frontendProd) == .allow)
    #expect(policy.ingress(from: host) == .allow)
    #expect(
      policy.entries == [
        PolicyEntry(peer: .unknown, direction: .ingress),
        PolicyEntry(peer: .world, direction: .ingress, verdict: .deny),
        PolicyEntry(peer: .worldIPv4, direction: .ingress, verdict: .deny),
        PolicyEntry(peer: .worldIPv6, direction: .ingress, verdict: .deny),
      ])
  }

  @Test("deny on a port over an L3 allow (Cilium deny docs table, second column)")
  func denyPortOverL3Allow() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: allow}
      spec:
        endpointSelector: {matchLabels: {role: backend}}
        ingress:
        - fromEndpoints: [{matchLabels: {role: frontend}}]
      ---
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: deny}
      spec:
        endpointSelector: {matchLabels: {role: backend}}
        ingressDeny:
        - fromEndpoints: [{matchLabels: {role: frontend}}]
          toPorts: [{ports: [{port: "80", protocol: TCP}]}]
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(policy.ingress(from: frontend, .tcp, 81) == .allow)
    #expect(policy.ingress(from: frontend, .tcp, 80) == .deny)
    #expect(policy.ingress(from: frontend, .udp, 80) == .allow)
  }

  @Test("a key both allowed and denied keeps only the deny; covered allows are dropped")
  func uniqueKeys() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: both}
      spec:
        endpointSelector: {matchLabels: {role: backend}}
        ingress:
        - fromEndpoints: [{matchLabels: {role: frontend}}]
          toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "8080", protocol: TCP}]}]
        ingressDeny:
        - fromEndpoints: [{matchLabels: {role: frontend}}]
          toPorts: [{ports: [{port: "80", protocol: TCP}]}]
        - fromEntities: [all]
          toPorts: [{ports: [{port: "8000", endPort: 8999}]}]
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(
      policy.entries == [
        PolicyEntry(
          peer: .unknown, direction: .ingress, proto: .tcp, ports: PortRange(8000, 8999),
          verdict: .deny),
        PolicyEntry(
          peer: .unknown, direction: .ingress, proto: .udp, ports: PortRange(8000, 8999),
          verdict: .deny),
        PolicyEntry(
          peer: .unknown, direction: .ingress, proto: .sctp, ports: PortRange(8000, 8999),
          verdict: .deny),
        PolicyEntry(
          peer: frontend.id, direction: .ingress, proto: .tcp, ports: PortRange(single: 80),
          verdict: .deny),
      ])
    #expect(Set(policy.entries.map(\.key)).count == policy.entries.count)
  }

  @Test("entities: world, host, cluster and all")
  func entities() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: to-world}
      spec:
        endpointSelector: {matchLabels: {role: frontend}}
        egress:
        - toEntities: [world]
      ---
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: from-cluster}
      spec:
        endpointSelector: {matchLabels: {role: backend}}
        ingress:
        - fromEntities: [cluster]
      ---
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: from-host}
      spec:
        endpointSelector: {matchLabels: {role: other}}
        ingress:
        - fromEntities: [host, remote-node]
        egress:
        - toEntities: [all]
      """)
    let toWorld = engine.computePolicy(for: frontend)
    #expect(toWorld.egressEnforced && !toWorld.ingressEnforced)
    #expect(toWorld.egress(to: world) == .allow && toWorld.egress(to: .worldIPv6) == .allow)
    #expect(toWorld.egress(to: backend) == .deny && toWorld.egress(to: host) == .deny)

    let fromCluster = engine.computePolicy(for: backend)
    for peer in [
      host, .remoteNode, .health, .initializing, .unmanaged, .ingress, frontend.id, frontendProd.id,
    ] {
      #expect(fromCluster.ingress(from: peer) == .allow, "cluster should include \(peer)")
    }
    // Cilium's cluster entity leaves out kube-apiserver (an API server outside the cluster).
    for peer in [world, .worldIPv4, .worldIPv6, .kubeAPIServer] {
      #expect(fromCluster.ingress(from: peer) == .deny, "cluster should exclude \(peer)")
    }

    let fromHost = engine.computePolicy(for: other)
    #expect(fromHost.ingress(from: host) == .allow && fromHost.ingress(from: .remoteNode) == .allow)
    #expect(fromHost.ingress(from: frontend) == .deny)
    #expect(fromHost.entries.contains(PolicyEntry(peer: .unknown, direction: .egress)))
    #expect(fromHost.egress(to: world) == .allow)

    // A new identity joins `cluster` incrementally.
    let newcomer = pod(2000, namespace: "late", "role=late")
    #expect(engine.computePolicy(for: backend).ingress(from: newcomer) == .deny)
    _ = engine.updateIdentities(added: [newcomer], deleted: [])
    #expect(engine.computePolicy(for: backend).ingress(from: newcomer) == .allow)
  }

  @Test("default-deny applies only to the directions a rule has; empty {} rule denies all")
  func defaultDenyPerSection() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: ingress-default-deny}
      spec:
        endpointSelector: {matchLabels: {role: backend}}
        ingress:
        - {}
      ---
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: deny-only}
      spec:
        endpointSelector: {matchLabels: {role: frontend}}
        egressDeny:
        - toEntities: [world]
      ---
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: opt-out}
      spec:
        endpointSelector: {matchLabels: {role: other}}
        enableDefaultDeny: {ingress: false}
        ingress:
        - fromEntities: [host]
        ingressDeny:
        - fromEntities: [world]
      """)
    let backendPolicy = engine.computePolicy(for: backend)
    #expect(
      backendPolicy.ingressEnforced && !backendPolicy.egressEnforced
        && backendPolicy.entries.isEmpty)
    #expect(
      backendPolicy.ingress(from: frontend) == .deny && backendPolicy.egress(to: world) == .allow)

    // Cilium: a policy with only egressDeny still puts egress into default deny.
    let frontendPolicy = engine.computePolicy(for: frontend)
    #expect(frontendPolicy.egressEnforced && !frontendPolicy.ingressEnforced)
    #expect(
      frontendPolicy.egress(to: world) == .deny && frontendPolicy.egress(to: backend) == .deny)

    // enableDefaultDeny.ingress: false keeps ingress default-allow; its deny still applies.
    let otherPolicy = engine.computePolicy(for: other)
    #expect(!otherPolicy.ingressEnforced)
    #expect(
      otherPolicy.ingress(from: frontend) == .allow && otherPolicy.ingress(from: world) == .deny)
  }

  @Test("CNP fromEndpoints [{}] is the policy's namespace; a namespace key opens it up")
  func emptyFromEndpoints() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: same-namespace}
      spec:
        endpointSelector: {matchLabels: {role: backend}}
        ingress:
        - fromEndpoints: [{}]
        - fromEndpoints:
          - matchLabels: {k8s:io.kubernetes.pod.namespace: prod, role: frontend}
          toPorts: [{ports: [{port: "443", protocol: TCP}]}]
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(policy.ingress(from: frontend) == .allow && policy.ingress(from: other) == .allow)
    #expect(policy.ingress(from: world) == .deny && policy.ingress(from: host) == .deny)
    #expect(policy.ingress(from: frontendProd, .tcp, 80) == .deny)
    #expect(policy.ingress(from: frontendProd, .tcp, 443) == .allow)
  }

  @Test("K8s NetworkPolicy: default-deny-ingress, allow-all-ingress, default-deny-egress")
  func kubernetesDefaults() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata:
        name: default-deny-ingress
      spec:
        podSelector: {}
        policyTypes:
        - Ingress
      ---
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata:
        name: default-deny-egress
        namespace: prod
      spec:
        podSelector: {}
        policyTypes:
        - Egress
      """)
    let defaultNamespace = engine.computePolicy(for: backend)
    #expect(
      defaultNamespace.ingressEnforced && !defaultNamespace.egressEnforced
        && defaultNamespace.entries.isEmpty)
    let prod = engine.computePolicy(for: frontendProd)
    #expect(!prod.ingressEnforced && prod.egressEnforced)
    #expect(prod.ingress(from: world) == .allow && prod.egress(to: world) == .deny)

    try engine.importYAML(
      """
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata:
        name: allow-all-ingress
      spec:
        podSelector: {}
        ingress:
        - {}
        policyTypes:
        - Ingress
      """)
    let allowAll = engine.computePolicy(for: backend)
    #expect(allowAll.entries == [PolicyEntry(peer: .unknown, direction: .ingress)])
    #expect(
      allowAll.ingress(from: world) == .allow
        && allowAll.ingress(from: frontendProd, .udp, 9) == .allow)
  }

  @Test("K8s policyTypes [Egress] ignores ingress rules; egress rules imply Egress when unset")
  func kubernetesPolicyTypes() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: egress-only}
      spec:
        podSelector: {matchLabels: {role: backend}}
        policyTypes: [Egress]
        ingress:
        - from: [{podSelector: {matchLabels: {role: frontend}}}]
        egress:
        - to: [{podSelector: {matchLabels: {role: other}}}]
          ports: [{port: 5432}]
      ---
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: implied}
      spec:
        podSelector: {matchLabels: {role: frontend}}
        egress:
        - ports: [{port: 53, protocol: UDP}]
      """)
    let backendPolicy = engine.computePolicy(for: backend)
    #expect(!backendPolicy.ingressEnforced && backendPolicy.egressEnforced)
    #expect(
      backendPolicy.entries == [
        PolicyEntry(peer: other.id, direction: .egress, proto: .tcp, ports: PortRange(single: 5432))
      ])
    #expect(
      backendPolicy.egress(to: other, .tcp, 5432) == .allow
        && backendPolicy.egress(to: other, .udp, 5432) == .deny)

    let frontendPolicy = engine.computePolicy(for: frontend)
    #expect(frontendPolicy.ingressEnforced && frontendPolicy.egressEnforced)
    #expect(
      frontendPolicy.egress(to: world, .udp, 53) == .allow
        && frontendPolicy.egress(to: world, .tcp, 53) == .deny)
  }

  @Test("K8s namespaceSelector AND podSelector vs two peers (OR)")
  func kubernetesNamespaceAndPod() throws {
    let aliceClient = pod(
      1100, namespace: "alice-ns", "role=client", "k8s:io.cilium.k8s.namespace.labels.user=alice")
    let aliceOther = pod(
      1101, namespace: "alice-ns", "role=db", "k8s:io.cilium.k8s.namespace.labels.user=alice")
    let bobClient = pod(
      1102, namespace: "bob-ns", "role=client", "k8s:io.cilium.k8s.namespace.labels.user=bob")
    let localClient = pod(1103, "role=client")
    let engine = try engine(all + [aliceClient, aliceOther, bobClient, localClient])
    try engine.importYAML(
      """
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: and}
      spec:
        podSelector: {matchLabels: {role: backend}}
        ingress:
        - from:
          - namespaceSelector:
              matchLabels:
                user: alice
            podSelector:
              matchLabels:
                role: client
      ---
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: or}
      spec:
        podSelector: {matchLabels: {role: other}}
        ingress:
        - from:
          - namespaceSelector:
              matchLabels:
                user: alice
          - podSelector:
              matchLabels:
                role: client
      """)
    let and = engine.computePolicy(for: backend)
    #expect(and.ingress(from: aliceClient) == .allow)
    #expect(and.ingress(from: aliceOther) == .deny)
    #expect(and.ingress(from: bobClient) == .deny)
    #expect(and.ingress(from: localClient) == .deny)

    let or = engine.computePolicy(for: other)
    #expect(or.ingress(from: aliceClient) == .allow)
    #expect(or.ingress(from: aliceOther) == .allow)
    #expect(or.ingress(from: bobClient) == .deny)
    #expect(or.ingress(from: localClient) == .allow)
  }

  @Test("K8s namespaceSelector {} is every namespace but not world; ipBlock 0.0.0.0/0 is world")
  func kubernetesAllNamespaces() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {name: all-namespaces}
      spec:
        podSelector: {matchLabels: {role: backend}}
        ingress:
        - from: [{namespaceSelector: {}}]
        egress:
        - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
          ports: [{port: 443}]
        policyTypes: [Ingress, Egress]
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(
      policy.ingress(from: frontendProd) == .allow && policy.ingress(from: frontend) == .allow)
    #expect(policy.ingress(from: world) == .deny && policy.ingress(from: host) == .deny)
    #expect(policy.egress(to: .worldIPv4, .tcp, 443) == .allow)
    #expect(policy.egress(to: .worldIPv6, .tcp, 443) == .deny)
    #expect(policy.egress(to: frontend, .tcp, 443) == .deny)
  }

  @Test("matchExpressions select peers across namespaces")
  func matchExpressionsPeers() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: expressions}
      spec:
        endpointSelector:
          matchExpressions:
          - {key: role, operator: In, values: [backend, other]}
        ingress:
        - fromEndpoints:
          - matchExpressions:
            - {key: k8s:io.kubernetes.pod.namespace, operator: Exists}
            - {key: role, operator: NotIn, values: [other, backend]}
      """)
    let policy = engine.computePolicy(for: backend)
    #expect(
      policy.ingress(from: frontend) == .allow && policy.ingress(from: frontendProd) == .allow)
    #expect(policy.ingress(from: other) == .deny && policy.ingress(from: world) == .deny)
    #expect(engine.computePolicy(for: other).ingressEnforced)
    #expect(!engine.computePolicy(for: frontend).ingressEnforced)
  }

  @Test("a cluster-wide policy selects in every namespace")
  func clusterwide() throws {
    let engine = try engine(all)
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumClusterwideNetworkPolicy
      metadata: {name: frontends}
      spec:
        endpointSelector: {matchLabels: {role: frontend}}
        ingress:
        - fromEndpoints: [{matchLabels: {role: backend}}]
      """)
    #expect(engine.computePolicy(for: frontend).ingress(from: backend) == .allow)
    #expect(engine.computePolicy(for: frontendProd).ingress(from: backend) == .allow)
    #expect(engine.computePolicy(for: frontendProd).ingress(from: other) == .deny)
    #expect(!engine.computePolicy(for: backend).ingressEnforced)
  }
}
