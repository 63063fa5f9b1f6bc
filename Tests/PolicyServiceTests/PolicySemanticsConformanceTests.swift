import TesseraCore
import Testing

@testable import PolicyService

/// Policy semantics checked against what Kubernetes (NetworkPolicy docs and the e2e suite's
/// `[Feature:NetworkPolicy]` cases) and Cilium (policy language docs, `pkg/policy` tests)
/// document. Every case imports a manifest and asserts the verdict for concrete peer
/// identities and ports through `EndpointPolicy.verdict`, the semantics the datapath follows.
///
/// The cluster: namespace `default` (namespace label team=a) holds `api` and `client`,
/// `prod` (team=b) holds `prodClient`, `kube-system` holds `dns`. `bare` is an allocated
/// identity that is no pod (no namespace label). Then every reserved identity.
@Suite("Policy semantics conformance")
struct PolicySemanticsConformanceTests {
  let api = pod(1000, namespace: "default", "app=api", "io.cilium.k8s.namespace.labels.team=a")
  let client = pod(
    1001, namespace: "default", "app=client", "io.cilium.k8s.namespace.labels.team=a")
  let prodClient = pod(
    1002, namespace: "prod", "app=client", "io.cilium.k8s.namespace.labels.team=b")
  let dns = pod(1003, namespace: "kube-system", "k8s-app=kube-dns")
  let bare = SecurityIdentity(id: NumericIdentity(1004), labels: labels(["container:app=client"]))

  var pods: [SecurityIdentity] { [api, client, prodClient, dns] }
  var identities: [SecurityIdentity] { pods + [bare] }
  static let reserved = ReservedIdentity.allCases.map(\.identity)

  func compute(_ yaml: String, for subject: SecurityIdentity? = nil) throws -> EndpointPolicy {
    let engine = try engine(identities)
    try engine.importYAML(yaml)
    return engine.computePolicy(for: subject ?? api)
  }

  func rejection(_ yaml: String) -> String? {
    policyError { _ = try PolicyManifest.parse(sourceName: "p.yaml", content: Array(yaml.utf8)) }?
      .message
  }

  static func knp(_ spec: String, name: String = "np", namespace: String = "default") -> String {
    """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: \(name), namespace: \(namespace)}
    spec:
    \(spec.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n"))
    """
  }

  static func cnp(_ spec: String, name: String = "cnp", clusterwide: Bool = false) -> String {
    """
    apiVersion: cilium.io/v2
    kind: \(clusterwide ? "CiliumClusterwideNetworkPolicy" : "CiliumNetworkPolicy")
    metadata: {name: \(name)\(clusterwide ? "" : ", namespace: default")}
    spec:
    \(spec.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n"))
    """
  }

  // MARK: Item 4: a peer selector never selects what it must not

  /// Every form a NetworkPolicy peer can take without ipBlock, in both directions.
  static let networkPolicyPeers = [
    "podSelector: {}",
    "podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [nothing]}]}",
    "podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}",
    "podSelector: {matchExpressions: [{key: io.kubernetes.pod.namespace, operator: NotIn, values: [x]}]}",
    "namespaceSelector: {}",
    "namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [nothing]}]}",
    "namespaceSelector: {matchExpressions: [{key: team, operator: DoesNotExist}]}",
    "namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system]}]}",
    "namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: DoesNotExist}]}",
    "namespaceSelector: {matchLabels: {team: a}}",
    "namespaceSelector: {}\npodSelector: {}",
    "namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [x]}]}\npodSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}",
    "namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}\npodSelector: {matchExpressions: [{key: app, operator: NotIn, values: [x]}]}",
  ]

  @Test(
    "a NetworkPolicy peer selects only pods: never world, host or any reserved identity",
    arguments: networkPolicyPeers)
  func networkPolicyPeerSelectsOnlyPods(peer: String) throws {
    let peer = peer.split(separator: "\n").joined(separator: "\n    ")
    let ingress = try compute(Self.knp("podSelector: {}\ningress:\n- from:\n  - \(peer)"))
    let egress = try compute(
      Self.knp("podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - \(peer)"))
    for identity in Self.reserved + [bare.id] {
      #expect(ingress.ingress(from: identity) == .deny, "from \(identity) via \(peer)")
      #expect(egress.egress(to: identity) == .deny, "to \(identity) via \(peer)")
    }
  }

  @Test(
    "the NotIn namespaceSelector of issue 13 admits pods of other namespaces, nothing else (e2e: traffic only from a different namespace)"
  )
  func namespaceNotInStillRequiresAPod() throws {
    let policy = try compute(
      Self.knp(
        """
        podSelector: {matchLabels: {app: api}}
        ingress:
        - from:
          - namespaceSelector:
              matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [default]}]
        """))
    #expect(policy.ingress(from: prodClient) == .allow && policy.ingress(from: dns) == .allow)
    #expect(policy.ingress(from: client) == .deny)
    for identity in Self.reserved {
      #expect(policy.ingress(from: identity) == .deny, "\(identity)")
    }
  }

  /// Every form a Cilium endpoint selector peer can take without naming a `reserved:` label.
  static let ciliumPeers = [
    "{}",
    "{matchExpressions: [{key: app, operator: NotIn, values: [nothing]}]}",
    "{matchExpressions: [{key: app, operator: DoesNotExist}]}",
    "{matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: NotIn, values: [kube-system]}]}",
    "{matchExpressions: [{key: io.kubernetes.pod.namespace, operator: DoesNotExist}]}",
    "{matchExpressions: [{key: io.cilium.k8s.namespace.labels.team, operator: NotIn, values: [nothing]}]}",
    "{matchExpressions: [{key: k8s:io.cilium.k8s.namespace.labels.team, operator: DoesNotExist}]}",
    "{matchLabels: {app: client}}",
  ]

  @Test(
    "a Cilium fromEndpoints/toEndpoints selector selects only endpoints (CNP and CCNP)",
    arguments: ciliumPeers, [false, true])
  func ciliumPeerSelectsOnlyEndpoints(peer: String, clusterwide: Bool) throws {
    let ingress = try compute(
      Self.cnp(
        "endpointSelector: {}\ningress:\n- fromEndpoints: [\(peer)]", clusterwide: clusterwide))
    let egress = try compute(
      Self.cnp("endpointSelector: {}\negress:\n- toEndpoints: [\(peer)]", clusterwide: clusterwide))
    for identity in Self.reserved + [bare.id] {
      #expect(ingress.ingress(from: identity) == .deny, "from \(identity) via \(peer)")
      #expect(egress.egress(to: identity) == .deny, "to \(identity) via \(peer)")
    }
  }

  @Test(
    "CNP fromEndpoints [{}] is every endpoint of the namespace; in a CCNP every endpoint of the cluster, not host"
  )
  func emptyEndpointSelector() throws {
    let namespaced = try compute(Self.cnp("endpointSelector: {}\ningress:\n- fromEndpoints: [{}]"))
    #expect(namespaced.ingress(from: client) == .allow && namespaced.ingress(from: api) == .allow)
    #expect(namespaced.ingress(from: prodClient) == .deny && namespaced.ingress(from: dns) == .deny)
    let clusterwide = try compute(
      Self.cnp("endpointSelector: {}\ningress:\n- fromEndpoints: [{}]", clusterwide: true))
    for peer in pods { #expect(clusterwide.ingress(from: peer) == .allow) }
    for identity in Self.reserved {
      #expect(clusterwide.ingress(from: identity) == .deny, "\(identity)")
    }
  }

  @Test("a selector naming a reserved: label selects that reserved identity (Cilium)")
  func reservedLabelSelector() throws {
    let policy = try compute(
      Self.cnp(
        #"endpointSelector: {}\#ningress:\#n- fromEndpoints: [{matchLabels: {"reserved:host": ""}}]"#
      ))
    #expect(policy.ingress(from: .host) == .allow)
    #expect(policy.ingress(from: .world) == .deny && policy.ingress(from: client) == .deny)
  }

  // MARK: Item 9: empty rules are refused

  @Test(
    "a Cilium rule without ingress, ingressDeny, egress or egressDeny entries is refused (Cilium ≥ 1.17)",
    arguments: [
      ("endpointSelector: {}", "spec"),
      ("endpointSelector: {matchLabels: {app: api}}\ningress: []", "spec"),
      ("endpointSelector: {}\ningress: []\negress: []\ningressDeny: []\negressDeny: []", "spec"),
      ("endpointSelector: {}\nenableDefaultDeny: {ingress: true, egress: true}", "spec"),
      ("endpointSelector: {}\ningress:\negress: null", "spec"),
    ])
  func emptyRuleRefused(spec: String, path: String) {
    for clusterwide in [false, true] {
      #expect(
        rejection(Self.cnp(spec, clusterwide: clusterwide))
          == "p.yaml: document 1: \(path): rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny"
      )
    }
  }

  @Test("an empty rule among specs is refused at its index")
  func emptySpecsEntryRefused() {
    let yaml = """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: x}
      specs:
      - endpointSelector: {}
        ingress: [{}]
      - endpointSelector: {matchLabels: {app: api}}
        egress: []
      """
    #expect(
      rejection(yaml)
        == "p.yaml: document 1: specs[1]: rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny"
    )
  }

  @Test("a rule with one empty entry ({}) is accepted and is default-deny for its direction")
  func emptyEntryIsDefaultDeny() throws {
    let policy = try compute(Self.cnp("endpointSelector: {}\ningress:\n- {}"))
    #expect(policy.ingressEnforced && !policy.egressEnforced && policy.entries.isEmpty)
    #expect(policy.ingress(from: client) == .deny && policy.ingress(from: .world) == .deny)
    #expect(policy.egress(to: .world) == .allow)
  }

  // MARK: Kubernetes NetworkPolicy (docs and e2e)

  @Test("default deny all ingress: every pod of the namespace is isolated for ingress only")
  func defaultDenyIngress() throws {
    let yaml = Self.knp("podSelector: {}\npolicyTypes: [Ingress]", name: "default-deny-ingress")
    let policy = try compute(yaml)
    #expect(policy.ingressEnforced && !policy.egressEnforced)
    for peer in [client.id, prodClient.id, NumericIdentity.world, .host] {
      #expect(policy.ingress(from: peer) == .deny)
    }
    #expect(policy.egress(to: prodClient) == .allow && policy.egress(to: .world) == .allow)
    // Pods of other namespaces are not selected.
    let engine = try engine(identities)
    try engine.importYAML(yaml)
    #expect(!engine.computePolicy(for: prodClient).ingressEnforced)
    // policyTypes unset: Ingress is implied, so `ingress: []` or no rules at all isolate ingress too.
    for spec in ["podSelector: {}", "podSelector: {}\ningress: []"] {
      let implied = try compute(Self.knp(spec))
      #expect(
        implied.ingressEnforced && !implied.egressEnforced
          && implied.ingress(from: client) == .deny, "\(spec)")
    }
  }

  @Test("allow all ingress: ingress [{}] admits every source, inside the cluster or not")
  func allowAllIngress() throws {
    for rule in ["- {}", "- from: []", "- from: []\n  ports: []"] {
      let policy = try compute(
        Self.knp("podSelector: {}\ningress:\n\(rule)\npolicyTypes: [Ingress]"))
      #expect(policy.ingressEnforced)
      for peer in [client.id, prodClient.id, bare.id] + Self.reserved {
        #expect(policy.ingress(from: peer, .udp, 53) == .allow, "\(peer) with \(rule)")
      }
    }
  }

  @Test("default deny all egress, and deny all ingress and egress")
  func defaultDenyEgressAndAll() throws {
    let egressOnly = try compute(Self.knp("podSelector: {}\npolicyTypes: [Egress]"))
    #expect(egressOnly.egressEnforced && !egressOnly.ingressEnforced)
    #expect(egressOnly.egress(to: client) == .deny && egressOnly.egress(to: .world) == .deny)
    #expect(egressOnly.ingress(from: client) == .allow)

    let both = try compute(Self.knp("podSelector: {}\npolicyTypes: [Ingress, Egress]"))
    #expect(both.ingress(from: client) == .deny && both.egress(to: dns, .udp, 53) == .deny)

    let allowAllEgress = try compute(
      Self.knp("podSelector: {}\negress:\n- {}\npolicyTypes: [Egress]"))
    #expect(
      allowAllEgress.egress(to: .world, .tcp, 443) == .allow
        && allowAllEgress.ingress(from: .world) == .allow)
  }

  @Test(
    "policyTypes: [Egress] does not isolate ingress; unset policyTypes with egress rules isolates both"
  )
  func policyTypesInference() throws {
    let explicit = try compute(
      Self.knp(
        "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - podSelector: {matchLabels: {app: client}}"
      ))
    #expect(!explicit.ingressEnforced && explicit.ingress(from: prodClient) == .allow)
    #expect(explicit.egress(to: client) == .allow && explicit.egress(to: prodClient) == .deny)

    // Kubernetes defaults policyTypes to Ingress, plus Egress when there are egress rules.
    let inferred = try compute(
      Self.knp("podSelector: {}\negress:\n- to:\n  - podSelector: {matchLabels: {app: client}}"))
    #expect(inferred.ingressEnforced && inferred.egressEnforced)
    #expect(inferred.ingress(from: client) == .deny && inferred.egress(to: client) == .allow)

    // Ingress rules with policyTypes [Egress] are ignored entirely.
    let ignored = try compute(Self.knp("podSelector: {}\npolicyTypes: [Egress]\ningress:\n- {}"))
    #expect(
      !ignored.ingressEnforced && ignored.entries.isEmpty && ignored.egress(to: client) == .deny)
  }

  @Test(
    "podSelector peer: pods of the policy's namespace only (e2e: allow traffic from pods within server namespace)"
  )
  func podSelectorPeerIsNamespaced() throws {
    let policy = try compute(
      Self.knp(
        "podSelector: {matchLabels: {app: api}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: client}}"
      ))
    #expect(policy.ingress(from: client) == .allow)
    #expect(policy.ingress(from: prodClient) == .deny)  // same labels, other namespace
    #expect(policy.ingress(from: bare) == .deny)  // same app label, not a pod
    let all = try compute(Self.knp("podSelector: {}\ningress:\n- from:\n  - podSelector: {}"))
    #expect(
      all.ingress(from: client) == .allow && all.ingress(from: api) == .allow
        && all.ingress(from: dns) == .deny)
  }

  @Test(
    "namespaceSelector {} is every pod in every namespace; matchLabels and the default name label select namespaces"
  )
  func namespaceSelectors() throws {
    let any = try compute(Self.knp("podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {}"))
    for peer in pods { #expect(any.ingress(from: peer) == .allow) }
    #expect(any.ingress(from: bare) == .deny)
    for identity in Self.reserved { #expect(any.ingress(from: identity) == .deny) }

    let team = try compute(
      Self.knp(
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {team: b}}"))
    #expect(team.ingress(from: prodClient) == .allow && team.ingress(from: client) == .deny)

    let byName = try compute(
      Self.knp(
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}"
      ))
    #expect(byName.ingress(from: dns) == .allow && byName.ingress(from: client) == .deny)

    let expressions = try compute(
      Self.knp(
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: team, operator: In, values: [a, b]}]"
      ))
    #expect(
      expressions.ingress(from: prodClient) == .allow && expressions.ingress(from: client) == .allow
    )
    #expect(expressions.ingress(from: dns) == .deny)
  }

  @Test("namespaceSelector and podSelector in one peer is AND; as two peers it is OR")
  func andVersusOr() throws {
    let and = try compute(
      Self.knp(
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {team: b}}\n    podSelector: {matchLabels: {app: client}}"
      ))
    #expect(and.ingress(from: prodClient) == .allow)
    #expect(and.ingress(from: client) == .deny)  // right pod, wrong namespace
    let or = try compute(
      Self.knp(
        "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {team: b}}\n  - podSelector: {matchLabels: {app: client}}"
      ))
    #expect(or.ingress(from: prodClient) == .allow && or.ingress(from: client) == .allow)
    #expect(or.ingress(from: api) == .deny && or.ingress(from: dns) == .deny)
  }

  @Test(
    "ports: protocol defaults to TCP, endPort is a range, a port-less entry is every port of its protocol"
  )
  func kubernetesPorts() throws {
    let policy = try compute(
      Self.knp(
        """
        podSelector: {}
        ingress:
        - ports:
          - port: 53
          - protocol: UDP
            port: 32000
            endPort: 32768
          - protocol: SCTP
        """))
    #expect(
      policy.ingress(from: client, .tcp, 53) == .allow
        && policy.ingress(from: client, .udp, 53) == .deny)
    #expect(
      policy.ingress(from: .world, .udp, 32000) == .allow
        && policy.ingress(from: .world, .udp, 32768) == .allow)
    #expect(
      policy.ingress(from: .world, .udp, 32769) == .deny
        && policy.ingress(from: .world, .tcp, 32000) == .deny)
    #expect(
      policy.ingress(from: client, .sctp, 9) == .allow
        && policy.ingress(from: client, .tcp, 9) == .deny)
  }

  @Test("e2e: a policy for UDP only does not allow TCP; ports and peers combine per rule")
  func udpOnly() throws {
    let policy = try compute(
      Self.knp(
        "podSelector: {}\ningress:\n- from:\n  - podSelector: {}\n  ports:\n  - {protocol: UDP, port: 81}"
      ))
    #expect(policy.ingress(from: client, .udp, 81) == .allow)
    #expect(
      policy.ingress(from: client, .tcp, 81) == .deny
        && policy.ingress(from: prodClient, .udp, 81) == .deny)
  }

  @Test("multiple policies selecting the same pod are additive (e2e: multiple, stacked policies)")
  func policiesAreAdditive() throws {
    let engine = try engine(identities)
    try engine.importYAML(
      Self.knp(
        "podSelector: {matchLabels: {app: api}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: client}}\n  ports: [{port: 80}]",
        name: "a")
        + "\n---\n"
        + Self.knp(
          "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {team: b}}\n  ports: [{port: 81}]",
          name: "b"))
    let policy = engine.computePolicy(for: api)
    #expect(
      policy.ingress(from: client, .tcp, 80) == .allow
        && policy.ingress(from: client, .tcp, 81) == .deny)
    #expect(
      policy.ingress(from: prodClient, .tcp, 81) == .allow
        && policy.ingress(from: prodClient, .tcp, 80) == .deny)
    // A policy that isolates ingress only never restricts what another policy allows for egress.
    #expect(policy.egress(to: .world) == .allow)
  }

  @Test("ipBlock 0.0.0.0/0 is the IPv4 world: not IPv6 addresses, not the cluster's pods")
  func ipBlockWorld() throws {
    let policy = try compute(
      Self.knp(
        "podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 0.0.0.0/0}\npolicyTypes: [Egress]"))
    #expect(policy.egress(to: .worldIPv4) == .allow)
    #expect(policy.egress(to: .worldIPv6) == .deny)
    #expect(policy.egress(to: client) == .deny && policy.egress(to: .host) == .deny)
  }

  @Test(
    "Kubernetes forms that are not supported are refused with the field that holds them",
    arguments: [
      (
        "podSelector: {}\ningress:\n- ports:\n  - port: HTTP", "spec.ingress[0].ports[0].port",
        #"port name "HTTP" must be an IANA service name: 1-15 characters of a-z, 0-9 and '-', with at least one letter, not beginning or ending with '-' and without "--""#
      ),
      (
        "podSelector: {}\ningress:\n- ports:\n  - {port: http, endPort: 90}",
        "spec.ingress[0].ports[0].endPort", #"may not be specified when port is a name ("http")"#
      ),
      (
        "podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}",
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "192.168.0.0/16 must be a strict subset of 10.0.0.0/8"
      ),
      (
        "podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}",
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "10.0.0.0/8 must be a strict subset of 10.0.0.0/8"
      ),
      (
        "podSelector: {}\ningress:\n- from:\n  - {}", "spec.ingress[0].from[0]",
        "must specify a peer (podSelector, namespaceSelector or ipBlock)"
      ),
      (
        "podSelector: {}\ningress:\n- ports:\n  - {protocol: TCP, endPort: 90}",
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when port is not specified"
      ),
    ])
  func kubernetesRefusals(spec: String, path: String, problem: String) {
    #expect(rejection(Self.knp(spec)) == "p.yaml: document 1: \(path): \(problem)")
  }

  @Test("e2e: should enforce updated policy, and stop enforcing policies after they are deleted")
  func updatedAndDeleted() throws {
    let engine = try engine(identities)
    try engine.importYAML(
      Self.knp(
        "podSelector: {matchLabels: {app: api}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: client}}"
      ))
    #expect(engine.computePolicy(for: api).ingress(from: client) == .allow)
    try engine.importYAML(
      Self.knp(
        "podSelector: {matchLabels: {app: api}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {team: b}}"
      ))
    let updated = engine.computePolicy(for: api)
    #expect(updated.ingress(from: client) == .deny && updated.ingress(from: prodClient) == .allow)
    _ = try engine.deletePolicy(namespace: "default", name: "np")
    let deleted = engine.computePolicy(for: api)
    #expect(!deleted.ingressEnforced && deleted.ingress(from: .world) == .allow)
  }

  @Test("e2e: multiple ingress policies with an allow-all policy taking precedence")
  func allowAllTakesPrecedence() throws {
    let engine = try engine(identities)
    try engine.importYAML(
      Self.knp(
        "podSelector: {matchLabels: {app: api}}\ningress:\n- ports: [{port: 80}]", name: "port-80")
        + "\n---\n"
        + Self.knp("podSelector: {matchLabels: {app: api}}\ningress:\n- {}", name: "allow-all"))
    let policy = engine.computePolicy(for: api)
    #expect(
      policy.ingress(from: client, .tcp, 81) == .allow
        && policy.ingress(from: .world, .udp, 53) == .allow)
  }

  @Test(
    "e2e: denying egress on the client side holds even if the server explicitly allows the traffic")
  func clientSideEgressDeny() throws {
    let engine = try engine(identities)
    try engine.importYAML(
      Self.knp(
        "podSelector: {matchLabels: {app: api}}\ningress:\n- from:\n  - podSelector: {matchLabels: {app: client}}",
        name: "server")
        + "\n---\n"
        + Self.knp(
          "podSelector: {matchLabels: {app: client}}\npolicyTypes: [Egress]", name: "client"))
    #expect(engine.computePolicy(for: api).ingress(from: client) == .allow)
    #expect(engine.computePolicy(for: client).egress(to: api) == .deny)
  }

  @Test(
    "e2e: a pod that gets a selected label (a new identity) is isolated; the old identity is not")
  func updatedPod() throws {
    let relabelled = pod(
      1010, namespace: "default", "app=api", "io.cilium.k8s.namespace.labels.team=a", "tier=db")
    let engine = try engine(identities + [relabelled])
    try engine.importYAML(
      Self.knp("podSelector: {matchLabels: {tier: db}}\npolicyTypes: [Ingress]"))
    #expect(engine.computePolicy(for: relabelled).ingress(from: client) == .deny)
    #expect(engine.computePolicy(for: api).ingress(from: client) == .allow)
  }

  @Test("e2e: protocol SCTP is not TCP, and a policy allowing SCTP isolates the pod for TCP")
  func sctpIsNotTCP() throws {
    let policy = try compute(
      Self.knp("podSelector: {}\ningress:\n- ports: [{protocol: SCTP, port: 80}]"))
    #expect(policy.ingress(from: client, .sctp, 80) == .allow)
    #expect(
      policy.ingress(from: client, .tcp, 80) == .deny
        && policy.ingress(from: client, .udp, 80) == .deny)
  }

  @Test(
    "e2e: multiple podSelectors and namespaceSelectors (matchExpressions in both halves of one peer)"
  )
  func multipleSelectors() throws {
    let policy = try compute(
      Self.knp(
        """
        podSelector: {}
        ingress:
        - from:
          - namespaceSelector:
              matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [default]}]
            podSelector:
              matchExpressions: [{key: app, operator: In, values: [client, api]}]
        """))
    #expect(policy.ingress(from: prodClient) == .allow)
    #expect(policy.ingress(from: client) == .deny && policy.ingress(from: dns) == .deny)
    for identity in Self.reserved { #expect(policy.ingress(from: identity) == .deny) }
  }

  // MARK: Cilium (policy language docs)

  @Test(
    "cilium-cli allow-all-except-world: every entity but world, and every endpoint of the namespace"
  )
  func ciliumAllowAllExceptWorld() throws {
    let policy = try compute(
      Self.cnp(
        """
        endpointSelector: {}
        egress:
        - toEntities: [host, remote-node, cluster, init, health, kube-apiserver]
        - toEndpoints:
            - {}
        ingress:
        - fromEntities: [host, remote-node, cluster, init, health, kube-apiserver]
        - fromEndpoints:
          - {}
        """))
    for peer in [
      NumericIdentity.host, .remoteNode, .initializing, .health, .kubeAPIServer, client.id,
      prodClient.id, dns.id,
    ] {
      #expect(policy.ingress(from: peer) == .allow && policy.egress(to: peer) == .allow, "\(peer)")
    }
    for peer in [NumericIdentity.world, .worldIPv4, .worldIPv6] {
      #expect(policy.ingress(from: peer) == .deny && policy.egress(to: peer) == .deny, "\(peer)")
    }
  }

  @Test("Cilium docs' ICMP rule: echo requests of both families go out, nothing else does")
  func ciliumICMPEgress() throws {
    let policy = try compute(
      Self.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        egress:
        - icmps:
          - fields:
            - type: 8
              family: IPv4
            - type: EchoRequest
              family: IPv6
        """))
    for peer in [client.id, dns.id, NumericIdentity.worldIPv4, .host] {
      #expect(policy.egress(to: peer, .icmp, 8) == .allow, "\(peer)")
      #expect(policy.egress(to: peer, .icmpv6, 128) == .allow, "\(peer)")
      #expect(policy.egress(to: peer, .icmpv6, 8) == .deny, "\(peer)")
      #expect(policy.egress(to: peer, .icmp, 128) == .deny, "\(peer)")
      #expect(policy.egress(to: peer, .icmp, 13) == .deny, "\(peer)")
      #expect(policy.egress(to: peer, .tcp, 8) == .deny, "\(peer)")
      #expect(policy.egress(to: peer, .udp, 53) == .deny, "\(peer)")
    }
    // Ingress is untouched.
    #expect(policy.ingress(from: client, .icmp, 8) == .allow)
  }

  @Test("ICMP rules from named peers, by name or number; a deny of a type over an allow-all")
  func ciliumICMPIngressAndDeny() throws {
    let policy = try compute(
      Self.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
          icmps:
          - fields: [{type: "13"}, {type: Timestamp}, {type: EchoReply}]
        - fromEntities: [world]
        ingressDeny:
        - fromEntities: [world]
          icmps:
          - fields: [{type: Echo}, {type: DestinationUnreachable, family: IPv4}]
        """))
    #expect(policy.ingress(from: client, .icmp, 13) == .allow)
    #expect(policy.ingress(from: client, .icmp, 0) == .allow)
    #expect(policy.ingress(from: client, .icmp, 8) == .deny)
    #expect(policy.ingress(from: client, .tcp, 80) == .deny)
    #expect(policy.ingress(from: prodClient, .icmp, 13) == .deny)
    // world: everything but the denied types.
    #expect(policy.ingress(from: NumericIdentity.worldIPv4, .tcp, 80) == .allow)
    #expect(policy.ingress(from: NumericIdentity.worldIPv4, .icmp, 13) == .allow)
    #expect(policy.ingress(from: NumericIdentity.worldIPv4, .icmp, 8) == .deny)
    #expect(policy.ingress(from: NumericIdentity.worldIPv4, .icmp, 3) == .deny)
    #expect(policy.ingress(from: NumericIdentity.worldIPv6, .icmpv6, 128) == .allow)
  }

  @Test(
    "a port rule of protocol ANY is TCP, UDP and SCTP (Cilium): port 0 and ranges cover no ICMP; a rule without toPorts covers ICMP"
  )
  func anyProtocolAndICMP() throws {
    let policy = try compute(
      Self.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
        - fromEntities: [world]
          toPorts: [{ports: [{port: "1", endPort: 1024, protocol: ANY}]}]
        ingressDeny:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: "1", endPort: 200, protocol: ANY}]}]
        """))
    // The client's L3 allow covers ICMP; its ANY 1-200 deny does not reach type 8.
    #expect(policy.ingress(from: client, .icmp, 8) == .allow)
    #expect(policy.ingress(from: client, .tcp, 80) == .deny)
    #expect(policy.ingress(from: client, .tcp, 8080) == .allow)
    // world: TCP/UDP/SCTP 1-1024, no ICMP type.
    #expect(policy.ingress(from: NumericIdentity.worldIPv4, .udp, 53) == .allow)
    #expect(policy.ingress(from: NumericIdentity.worldIPv4, .icmp, 8) == .deny)
    // port "0" with ANY (or no protocol): every port of TCP, UDP and SCTP, still no ICMP,
    // in an allow and in a deny.
    let everyPort = try compute(
      Self.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: "0"}]}]
        - fromEntities: [world]
        ingressDeny:
        - fromEntities: [world]
          toPorts: [{ports: [{port: "0", protocol: ANY}]}]
        """))
    #expect(everyPort.ingress(from: client, .tcp, 443) == .allow)
    #expect(everyPort.ingress(from: client, .sctp, 9) == .allow)
    #expect(everyPort.ingress(from: client, .icmp, 8) == .deny)
    #expect(everyPort.ingress(from: NumericIdentity.worldIPv4, .udp, 53) == .deny)
    #expect(everyPort.ingress(from: NumericIdentity.worldIPv4, .icmp, 8) == .allow)
  }

  @Test("cilium-cli client-egress-to-echo-expression-deny over an allow-all egress policy")
  func ciliumExpressionDeny() throws {
    let clientPod = pod(1020, namespace: "cilium-test", "kind=client")
    let echo = pod(1021, namespace: "cilium-test", "kind=echo")
    let coredns = pod(1022, namespace: "kube-system", "k8s-app=coredns")
    let engine = try engine(identities + [clientPod, echo, coredns])
    try engine.importYAML(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata:
        namespace: cilium-test
        name: client-egress-to-echo-expression
      spec:
        endpointSelector:
          matchExpressions:
            - {key: 'kind', operator: Exists}
        egressDeny:
        - toPorts:
          - ports:
            - port: "8080"
              protocol: TCP
          toEndpoints:
          - matchLabels:
              io.kubernetes.pod.namespace: cilium-test
              kind: echo
        - toPorts:
          - ports:
            - port: "53"
              protocol: ANY
          toEndpoints:
          - matchLabels:
              io.kubernetes.pod.namespace: kube-system
              k8s-app: kube-dns
          - matchLabels:
              io.kubernetes.pod.namespace: kube-system
              k8s-app: coredns
      ---
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {namespace: cilium-test, name: allow-all-egress}
      spec:
        endpointSelector: {}
        egress:
        - toEntities: [all]
      """)
    let policy = engine.computePolicy(for: clientPod)
    #expect(
      policy.egress(to: echo, .tcp, 8080) == .deny && policy.egress(to: echo, .tcp, 8081) == .allow)
    #expect(
      policy.egress(to: dns, .udp, 53) == .deny && policy.egress(to: coredns, .tcp, 53) == .deny)
    #expect(
      policy.egress(to: .world, .udp, 53) == .allow
        && policy.egress(to: client, .tcp, 8080) == .allow)
  }

  @Test("toCIDR 0.0.0.0/0 and ::/0 are their family's world (Cilium dual-stack)")
  func ciliumWorldCIDRs() throws {
    let v6 = try compute(Self.cnp("endpointSelector: {}\negress:\n- toCIDR: [\"::/0\"]"))
    #expect(v6.egress(to: .worldIPv6) == .allow)
    #expect(v6.egress(to: .worldIPv4) == .deny && v6.egress(to: client) == .deny)
    let set = try compute(
      Self.cnp("endpointSelector: {}\negress:\n- toCIDRSet: [{cidr: 0.0.0.0/0}]"))
    #expect(set.egress(to: .worldIPv4) == .allow && set.egress(to: .host) == .deny)
  }

  @Test("egress [{}] is default-deny egress with nothing allowed (Cilium egress default deny)")
  func ciliumEgressDefaultDeny() throws {
    let policy = try compute(Self.cnp("endpointSelector: {matchLabels: {app: api}}\negress:\n- {}"))
    #expect(policy.egressEnforced && !policy.ingressEnforced && policy.entries.isEmpty)
    #expect(policy.egress(to: dns, .udp, 53) == .deny && policy.egress(to: .world) == .deny)
  }

  @Test(
    "L3 fromEndpoints and toEndpoints across namespaces by the namespace label (Cilium: kube-dns egress)"
  )
  func ciliumL3() throws {
    let policy = try compute(
      Self.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        egress:
        - toEndpoints:
          - matchLabels:
              "k8s:io.kubernetes.pod.namespace": kube-system
              "k8s:k8s-app": kube-dns
          toPorts:
          - ports: [{port: "53", protocol: ANY}]
        """))
    #expect(policy.egressEnforced && !policy.ingressEnforced)
    #expect(
      policy.egress(to: dns, .udp, 53) == .allow && policy.egress(to: dns, .tcp, 53) == .allow)
    #expect(
      policy.egress(to: dns, .tcp, 80) == .deny && policy.egress(to: client, .udp, 53) == .deny)
    #expect(policy.egress(to: .world, .udp, 53) == .deny)
  }

  @Test("fromEntities: world, cluster, host, all and none")
  func ciliumEntities() throws {
    func verdicts(_ entity: String) throws -> Set<NumericIdentity> {
      let policy = try compute(
        Self.cnp("endpointSelector: {}\ningress:\n- fromEntities: [\(entity)]"))
      return Set(
        (Self.reserved + pods.map(\.id) + [bare.id]).filter { policy.ingress(from: $0) == .allow })
    }
    #expect(try verdicts("world") == [.world, .worldIPv4, .worldIPv6])
    #expect(try verdicts("host") == [.host])
    #expect(
      try verdicts("cluster")
        == Set(
          [.host, .remoteNode, .initializing, .ingress, .health, .unmanaged] + pods.map(\.id) + [
            bare.id
          ]))
    #expect(try verdicts("all") == Set(Self.reserved + pods.map(\.id) + [bare.id]))
    #expect(try verdicts("none").isEmpty)
    #expect(try verdicts("kube-apiserver") == [.kubeAPIServer])
  }

  @Test("deny takes precedence over allow, whichever policy holds it (Cilium deny policies)")
  func ciliumDenyPrecedence() throws {
    let engine = try engine(identities)
    try engine.importYAML(
      Self.cnp(
        "endpointSelector: {}\ningress:\n- fromEntities: [all]", name: "allow-all",
        clusterwide: true) + "\n---\n"
        + Self.cnp(
          "endpointSelector: {matchLabels: {app: api}}\ningressDeny:\n- fromEntities: [world]\n- fromEndpoints: [{matchLabels: {app: client}}]\n  toPorts: [{ports: [{port: \"22\", protocol: TCP}]}]",
          name: "lockdown"))
    let policy = engine.computePolicy(for: api)
    #expect(policy.ingress(from: .world) == .deny && policy.ingress(from: .worldIPv6) == .deny)
    #expect(
      policy.ingress(from: client, .tcp, 22) == .deny
        && policy.ingress(from: client, .tcp, 80) == .allow)
    #expect(
      policy.ingress(from: .host) == .allow && policy.ingress(from: prodClient, .tcp, 22) == .allow)
  }

  @Test(
    "toPorts without a peer applies to every peer; protocol ANY is TCP, UDP and SCTP; port 0 is every port"
  )
  func ciliumPorts() throws {
    let policy = try compute(
      Self.cnp(
        """
        endpointSelector: {}
        ingress:
        - toPorts:
          - ports: [{port: "8080", protocol: ANY}, {port: "0", protocol: UDP}]
        """))
    for proto in [L4Protocol.tcp, .udp, .sctp] {
      #expect(policy.ingress(from: .world, proto, 8080) == .allow)
    }
    #expect(
      policy.ingress(from: client, .udp, 1) == .allow
        && policy.ingress(from: client, .tcp, 1) == .deny)
  }

  @Test("an explicitly empty peer list selects nobody, even with toPorts (Cilium #29608)")
  func ciliumEmptyPeerList() throws {
    for field in ["fromEntities: []", "fromEndpoints: []", "fromCIDR: []", "fromCIDRSet: []"] {
      let policy = try compute(
        Self.cnp(
          "endpointSelector: {}\ningress:\n- \(field)\n  toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]"
        ))
      #expect(policy.ingressEnforced, "\(field)")
      for peer in Self.reserved + pods.map(\.id) {
        #expect(policy.ingress(from: peer, .tcp, 80) == .deny, "\(peer) with \(field)")
      }
    }
    // An empty list beside a non-empty one still selects nothing (Cilium's mergeEndpointSelectors).
    let mixed = try compute(
      Self.cnp("endpointSelector: {}\negress:\n- toEndpoints: [{}]\n  toEntities: []"))
    #expect(mixed.egress(to: client) == .deny && mixed.egress(to: .world) == .deny)
    // A deny with an empty list denies nothing.
    let deny = try compute(
      Self.cnp(
        "endpointSelector: {}\ningress:\n- fromEntities: [all]\ningressDeny:\n- fromEntities: []"))
    #expect(deny.ingress(from: .world) == .allow)
  }

  @Test("a CiliumClusterwideNetworkPolicy selects and admits across namespaces")
  func ciliumClusterwide() throws {
    let yaml = Self.cnp(
      "endpointSelector: {matchLabels: {app: client}}\ningress:\n- fromEndpoints: [{matchLabels: {k8s-app: kube-dns}}]",
      clusterwide: true)
    let engine = try engine(identities)
    try engine.importYAML(yaml)
    for subject in [client, prodClient] {
      let policy = engine.computePolicy(for: subject)
      #expect(
        policy.ingress(from: dns) == .allow && policy.ingress(from: api) == .deny
          && policy.ingress(from: .world) == .deny)
    }
    #expect(!engine.computePolicy(for: api).ingressEnforced)
  }

  @Test("enableDefaultDeny false adds allows without isolating")
  func ciliumDefaultDenyOptOut() throws {
    let policy = try compute(
      Self.cnp(
        "endpointSelector: {}\nenableDefaultDeny: {egress: false}\negress:\n- toEntities: [world]\negressDeny:\n- toEndpoints: [{matchLabels: {app: client}}]"
      ))
    #expect(!policy.egressEnforced)
    #expect(
      policy.egress(to: .world) == .allow && policy.egress(to: dns) == .allow
        && policy.egress(to: client) == .deny)
  }

  @Test(
    "Cilium forms that are not supported are refused with the field that holds them",
    arguments: [
      (
        "ingress:\n- fromRequires: [{matchLabels: {env: prod}}]", "spec.ingress[0].fromRequires",
        "fromRequires was removed in Cilium 1.19 (deprecated since 1.17); add the requirement to each fromEndpoints selector instead"
      ),
      (
        "egress:\n- toRequires: [{matchLabels: {env: prod}}]", "spec.egress[0].toRequires",
        "toRequires was removed in Cilium 1.19 (deprecated since 1.17); add the requirement to each toEndpoints selector instead"
      ),
      (
        "egress:\n- toFQDNs: [{matchName: example.com}]", "spec.egress[0].toFQDNs",
        "toFQDNs is not supported yet"
      ),
      (
        "egress:\n- toServices: [{k8sService: {serviceName: x, namespace: y}}]",
        "spec.egress[0].toServices", "toServices is not supported yet"
      ),
      (
        "ingress:\n- fromEndpoints: [{}]\n  fromEntities: [world]", "spec.ingress[0]",
        "combining fromEndpoints and fromEntities in one rule is not supported (Cilium refuses it too); write one rule for each"
      ),
      (
        "ingress:\n- toPorts: [{}]", "spec.ingress[0].toPorts[0].ports",
        #"must list at least one port (a port rule without ports matches nothing; use port "0" for every port)"#
      ),
      (
        "ingress:\n- fromCIDR: [10.0.0.300/8]", "spec.ingress[0].fromCIDR[0]",
        #"invalid CIDR "10.0.0.300/8""#
      ),
      (
        "egress:\n- toCIDRSet: [{cidr: 10.0.0.0/8, except: [\"fd00::/64\"]}]",
        "spec.egress[0].toCIDRSet[0].except[0]", "fd00::/64 must be a strict subset of 10.0.0.0/8"
      ),
      (
        "ingress:\n- icmps: [{fields: [{type: 8}]}]\n  toPorts: [{ports: [{port: \"80\"}]}]",
        "spec.ingress[0]",
        "the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts (Cilium refuses it too)"
      ),
      (
        "ingress:\n- icmps: [{fields: [{type: EchoRequets}]}]",
        "spec.ingress[0].icmps[0].fields[0].type",
        #"unknown IPv4 ICMP type "EchoRequets" (want 0-255 or one of EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)"#
      ),
      (
        "egress:\n- icmps: [{fields: [{type: PacketTooBig, family: IPv4}]}]",
        "spec.egress[0].icmps[0].fields[0].type",
        #"unknown IPv4 ICMP type "PacketTooBig" (want 0-255 or one of EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)"#
      ),
      (
        "ingress:\n- icmps: [{fields: [{type: 256}]}]", "spec.ingress[0].icmps[0].fields[0].type",
        "ICMP type 256 is out of range (0-255)"
      ),
      (
        "ingress:\n- icmps: [{fields: [{type: 8, family: IPv5}]}]",
        "spec.ingress[0].icmps[0].fields[0].family", #"unknown family "IPv5" (want IPv4 or IPv6)"#
      ),
      (
        "ingress:\n- icmps: [{fields: []}]", "spec.ingress[0].icmps[0].fields",
        "must list at least one ICMP type (an ICMP rule without fields matches nothing)"
      ),
      (
        "ingress:\n- icmps: [{fields: [{family: IPv4}]}]",
        "spec.ingress[0].icmps[0].fields[0].type", "required field is missing"
      ),
      (
        "ingress:\n- toPorts: [{ports: [{port: \"8\", protocol: ICMP}]}]",
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        #"unsupported protocol "ICMP" (want TCP, UDP, SCTP or ANY)"#
      ),
      (
        "ingress:\n- fromEntities: []\n  toPorts: [{ports: [{port: \"99999\"}]}]",
        "spec.ingress[0].toPorts[0].ports[0].port",
        "port 99999 is out of range (0-65535)"
      ),
      (
        "ingress:\n- toPorts: [{ports: [{port: http_alt}]}]",
        "spec.ingress[0].toPorts[0].ports[0].port",
        #"port name "http_alt" must be an IANA service name: 1-15 characters of a-z, 0-9 and '-', with at least one letter, not beginning or ending with '-' and without "--""#
      ),
      (
        "ingress:\n- toPorts: [{ports: [{port: a-very-long-name-x}]}]",
        "spec.ingress[0].toPorts[0].ports[0].port",
        #"port name "a-very-long-name-x" must be an IANA service name: 1-15 characters of a-z, 0-9 and '-', with at least one letter, not beginning or ending with '-' and without "--""#
      ),
      (
        "ingress:\n- fromEntities: [everyone]", "spec.ingress[0].fromEntities[0]",
        #"unknown entity "everyone" (want one of all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, ingress, init, health, unmanaged, none)"#
      ),
    ])
  func ciliumRefusals(spec: String, path: String, problem: String) {
    #expect(
      rejection(Self.cnp("endpointSelector: {}\n" + spec))
        == "p.yaml: document 1: \(path): \(problem)")
  }
}
