import TesseraCore
import Testing

@testable import PolicyService

@Suite("Manifest parsing")
struct PolicyManifestTests {
  func parse(_ text: String, source: String = "policy.yaml") throws -> [ParsedPolicy] {
    try PolicyManifest.parse(sourceName: source, content: Array(text.utf8))
  }

  func message(_ text: String, source: String = "bad.yaml") -> String? {
    do {
      _ = try PolicyManifest.parse(sourceName: source, content: Array(text.utf8))
      return nil
    } catch {
      #expect(error.code == .invalidManifest)
      return error.message
    }
  }

  static let cnp = """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata:
      name: web
    spec:
      endpointSelector:
        matchLabels:
          app: web
      ingress:
      - fromEndpoints:
        - matchLabels:
            app: client
    """

  @Test("several YAML documents, with the namespace defaulting to default")
  func multiDocument() throws {
    let policies = try parse(
      """
      ---
      \(Self.cnp)
      ---
      # a comment-only document is skipped
      ---
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata:
        name: deny-all
        namespace: prod
      spec:
        podSelector: {}
      ---
      apiVersion: cilium.io/v2
      kind: CiliumClusterwideNetworkPolicy
      metadata:
        name: everywhere
      spec:
        endpointSelector: {}
        egress:
        - toEntities: [world]
      """)
    #expect(
      policies.map(\.ref) == [
        PolicyRef(namespace: "default", name: "web", kind: "CiliumNetworkPolicy"),
        PolicyRef(namespace: "prod", name: "deny-all", kind: "NetworkPolicy"),
        PolicyRef(namespace: "", name: "everywhere", kind: "CiliumClusterwideNetworkPolicy"),
      ])
    let web = try #require(policies.first).rules[0]
    #expect(web.subject.description == "any:app=web,k8s:io.kubernetes.pod.namespace=default")
    #expect(
      web.sections == [
        PolicySection(
          direction: .ingress, verdict: .allow,
          peers: [
            .selector(
              EndpointSelector(matchLabels: [
                .any("app"): "client", PolicyLabels.podNamespaceK8s: "default",
              ]))
          ],
          ports: [.any])
      ])
    #expect(web.enforcesIngress && !web.enforcesEgress)
  }

  @Test("JSON, normalised source and round trip through the stored form")
  func json() throws {
    let policies = try parse(
      """
      {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
       "metadata": {"name": "l4", "namespace": "shop"},
       "spec": {"endpointSelector": {"matchLabels": {"app": "cart"}},
                "egress": [{"toPorts": [{"ports": [{"port": 443, "protocol": "TCP"}]}]}]}}
      """, source: "l4.json")
    let policy = try #require(policies.first)
    #expect(policy.ref == PolicyRef(namespace: "shop", name: "l4", kind: "CiliumNetworkPolicy"))
    #expect(
      policy.sourceJSON
        == #"{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"l4","namespace":"shop"},"spec":{"egress":[{"toPorts":[{"ports":[{"port":443,"protocol":"TCP"}]}]}],"endpointSelector":{"matchLabels":{"app":"cart"}}}}"#
    )
    #expect(policy.rules[0].sections[0].peers == [.all])
    #expect(
      policy.rules[0].sections[0].ports == [
        PortProtocol(proto: .tcp, ports: PortRange(single: 443))
      ])
    #expect(try PolicyManifest.parseStored(policy.sourceJSON) == policy)
  }

  @Test("a YAML policy's stored JSON parses back to the same rules")
  func storedRoundTrip() throws {
    for policy in try parse(Self.cnp) {
      #expect(try PolicyManifest.parseStored(policy.sourceJSON) == policy)
    }
  }

  @Test("List, typed lists and specs")
  func lists() throws {
    let policies = try parse(
      """
      apiVersion: v1
      kind: List
      items:
      - apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: a}
        specs:
        - endpointSelector: {matchLabels: {app: a}}
          ingress: [{}]
        - endpointSelector: {matchLabels: {app: b}}
          egress: [{}]
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: b}
        spec: {podSelector: {}}
      ---
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicyList
      items:
      - metadata: {name: c, namespace: x}
        spec: {endpointSelector: {}, ingress: [{}]}
      ---
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicyList
      items:
      - metadata: {name: d}
        spec: {podSelector: {}}
      """)
    #expect(policies.map(\.ref.name) == ["a", "b", "c", "d"])
    #expect(policies.map(\.rules.count) == [2, 1, 1, 1])
    #expect(policies[2].ref == PolicyRef(namespace: "x", name: "c", kind: "CiliumNetworkPolicy"))
    #expect(policies[2].sourceJSON.contains(#""kind":"CiliumNetworkPolicy""#))
  }

  @Test("Cilium ports: strings or numbers, ranges, protocols, port 0")
  func ciliumPorts() throws {
    let policy = try #require(
      try parse(
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: ports}
        spec:
          endpointSelector: {}
          ingress:
          - toPorts:
            - ports:
              - port: "80"
                protocol: TCP
              - port: 8000
                endPort: 8080
                protocol: UDP
              - port: "0"
                protocol: SCTP
              - port: "53"
              - port: "9090"
                protocol: ANY
        """
      ).first)
    #expect(
      policy.rules[0].sections[0].ports == [
        PortProtocol(proto: .tcp, ports: PortRange(single: 80)),
        PortProtocol(proto: .udp, ports: PortRange(8000, 8080)),
        PortProtocol(proto: .sctp, ports: .any),
        // ANY (or no protocol) in a port rule is TCP, UDP and SCTP, as in Cilium.
        PortProtocol(proto: .tcp, ports: PortRange(single: 53)),
        PortProtocol(proto: .udp, ports: PortRange(single: 53)),
        PortProtocol(proto: .sctp, ports: PortRange(single: 53)),
        PortProtocol(proto: .tcp, ports: PortRange(single: 9090)),
        PortProtocol(proto: .udp, ports: PortRange(single: 9090)),
        PortProtocol(proto: .sctp, ports: PortRange(single: 9090)),
      ])
  }

  @Test(
    "NetworkPolicy selectors: podSelector is namespaced, namespaceSelector uses namespace labels")
  func networkPolicySelectors() throws {
    let policy = try #require(
      try parse(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np, namespace: shop}
        spec:
          podSelector:
            matchLabels: {app: frontend}
          ingress:
          - from:
            - podSelector: {matchLabels: {role: client}}
            - namespaceSelector: {matchLabels: {team: a}}
            - namespaceSelector: {}
              podSelector: {matchLabels: {role: scraper}}
            - namespaceSelector:
                matchLabels: {kubernetes.io/metadata.name: monitoring}
            ports:
            - port: 6379
            - protocol: UDP
              port: 32000
              endPort: 32768
        """
      ).first)
    let rule = policy.rules[0]
    #expect(rule.subject.description == "k8s:app=frontend,k8s:io.kubernetes.pod.namespace=shop")
    #expect(
      rule.sections[0].peers.map { peer -> String in
        guard case .selector(let selector) = peer else { return "all" }
        return selector.description
      } == [
        "k8s:io.kubernetes.pod.namespace=shop,k8s:role=client",
        "k8s:io.cilium.k8s.namespace.labels.team=a,k8s:io.kubernetes.pod.namespace",
        "k8s:io.kubernetes.pod.namespace,k8s:role=scraper",
        "k8s:io.kubernetes.pod.namespace=monitoring",
      ])
    #expect(
      rule.sections[0].ports == [
        PortProtocol(proto: .tcp, ports: PortRange(single: 6379)),
        PortProtocol(proto: .udp, ports: PortRange(32000, 32768)),
      ])
    #expect(rule.enforcesIngress && !rule.enforcesEgress)
  }

  @Test("Cilium peer scoping follows getEndpointSelector")
  func ciliumScoping() throws {
    let policies = try parse(
      """
      apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: scoped, namespace: team}
      spec:
        endpointSelector:
          matchLabels: {app: api, k8s:io.kubernetes.pod.namespace: elsewhere}
        ingress:
        - fromEndpoints:
          - {}
          - matchLabels: {k8s:io.kubernetes.pod.namespace: other, app: x}
          - matchExpressions: [{key: io.kubernetes.pod.namespace, operator: In, values: [a, b]}]
          - matchLabels: {io.cilium.k8s.namespace.labels.env: prod}
          - matchLabels: {reserved:host: ""}
      ---
      apiVersion: cilium.io/v2
      kind: CiliumClusterwideNetworkPolicy
      metadata: {name: cluster}
      spec:
        endpointSelector: {matchLabels: {app: api}}
        ingress:
        - fromEndpoints: [{}, {matchLabels: {app: x}}]
      ---
      apiVersion: cilium.io/v2
      kind: CiliumClusterwideNetworkPolicy
      metadata: {name: init}
      spec:
        endpointSelector: {matchLabels: {reserved:init: ""}}
        ingress:
        - fromEndpoints: [{}]
      """)
    func peers(_ index: Int) -> [String] {
      policies[index].rules[0].sections[0].peers.map { peer in
        guard case .selector(let selector) = peer else { return "all" }
        return selector.description
      }
    }
    // The subject is always in the policy's namespace.
    #expect(
      policies[0].rules[0].subject.description == "any:app=api,k8s:io.kubernetes.pod.namespace=team"
    )
    #expect(
      peers(0) == [
        "k8s:io.kubernetes.pod.namespace=team",
        "any:app=x,k8s:io.kubernetes.pod.namespace=other",
        "any:io.kubernetes.pod.namespace in (a,b)",
        "any:io.cilium.k8s.namespace.labels.env=prod,k8s:io.kubernetes.pod.namespace",
        "reserved:host=",
      ])
    #expect(policies[1].rules[0].subject.description == "any:app=api")
    #expect(
      peers(1) == ["k8s:io.kubernetes.pod.namespace", "any:app=x,k8s:io.kubernetes.pod.namespace"])
    #expect(peers(2) == ["all"])
  }

  @Test(
    "bad input is rejected with file, document and field",
    arguments: [
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec:
          endpointSelector:
            matchExpressions: [{key: app, operator: Equals, values: [a]}]
        """,
        #"bad.yaml: document 1: spec.endpointSelector.matchExpressions[0].operator: unknown operator "Equals" (want In, NotIn, Exists or DoesNotExist)"#
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec:
          endpointSelector: {}
          ingress:
          - fromEndpoints:
            - matchExpressions: [{key: app, operator: In}]
        """,
        "bad.yaml: document 1: spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: must be specified when operator is In or NotIn"
      ),
      (
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x}
        spec:
          podSelector:
            matchExpressions: [{key: app, operator: Exists, values: [a]}]
        """,
        "bad.yaml: document 1: spec.podSelector.matchExpressions[0].values: may not be specified when operator is Exists or DoesNotExist"
      ),
      (
        """
        \(PolicyManifestTests.cnp)
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: y}
        spec:
          endpointSelector: {}
          ingress:
          - toPorts:
            - ports:
              - port: "70000"
        """,
        "bad.yaml: document 2: spec.ingress[0].toPorts[0].ports[0].port: port 70000 is out of range (0-65535)"
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec:
          endpointSelector: {}
          egress:
          - toPorts:
            - ports:
              - {port: "80", protocol: HTTP}
        """,
        #"bad.yaml: document 1: spec.egress[0].toPorts[0].ports[0].protocol: unsupported protocol "HTTP" (want TCP, UDP, SCTP or ANY)"#
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {namespace: default}
        spec: {endpointSelector: {}}
        """,
        "bad.yaml: document 1: metadata.name: required field is missing"
      ),
      (
        """
        apiVersion: cilium.io/v1
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec: {endpointSelector: {}}
        """,
        #"bad.yaml: document 1: apiVersion: unsupported apiVersion "cilium.io/v1" for kind CiliumNetworkPolicy (want "cilium.io/v2")"#
      ),
      (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: x}
        """,
        #"bad.yaml: document 1: kind: unsupported kind "Pod" (want CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy or a List of them)"#
      ),
      (
        "just some text",
        "bad.yaml: document 1: expected a policy (a mapping with apiVersion and kind), got a string"
      ),
      (
        "apiVersion: cilium.io/v2\nkind: [unclosed\n",
        "bad.yaml: document 1: invalid YAML at line 3, column 1: did not find expected ',' or ']' (while parsing a flow sequence at line 2, column 7)"
      ),
      (
        #"{"apiVersion": "cilium.io/v2", "kind": }"#,
        "bad.yaml: document 1: invalid JSON at line 1, column 40: unexpected character '}'"
      ),
      ("", "bad.yaml: no policies found"),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec:
          endpointSelector: {}
          ingress:
          - fromEndpoint: [{}]
        """,
        #"bad.yaml: document 1: spec.ingress[0].fromEndpoint: unknown field (did you mean "fromEndpoints"?)"#
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec:
          endpointSelector: {}
          egress:
          - toEntities: [internet]
        """,
        #"bad.yaml: document 1: spec.egress[0].toEntities[0]: unknown entity "internet" (want one of all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, ingress, init, health, unmanaged, none)"#
      ),
      (
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x}
        spec:
          podSelector: {}
          ingress:
          - ports:
            - port: web--http
        """,
        #"bad.yaml: document 1: spec.ingress[0].ports[0].port: port name "web--http" must be an IANA service name: 1-15 characters of a-z, 0-9 and '-', with at least one letter, not beginning or ending with '-' and without "--""#
      ),
      (
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x}
        spec:
          podSelector: {}
          ingress:
          - ports:
            - port: 0
        """,
        "bad.yaml: document 1: spec.ingress[0].ports[0].port: port 0 is out of range (1-65535)"
      ),
      (
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x}
        spec:
          podSelector: {}
          ingress:
          - from:
            - ipBlock:
                cidr: 172.17.0.0/16
                except: [172.18.1.0/24]
        """,
        "bad.yaml: document 1: spec.ingress[0].from[0].ipBlock.except[0]: 172.18.1.0/24 must be a strict subset of 172.17.0.0/16"
      ),
      (
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x}
        spec:
          podSelector: {}
          egress:
          - to:
            - ipBlock: {cidr: 10.0.0.0/33}
        """,
        #"bad.yaml: document 1: spec.egress[0].to[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33""#
      ),
      (
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x}
        spec:
          podSelector: {}
          policyTypes: [Ingress, Outgress]
        """,
        #"bad.yaml: document 1: spec.policyTypes[1]: unsupported value "Outgress" (want "Ingress" or "Egress")"#
      ),
      (
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x}
        spec:
          podSelector:
            matchLabels: {version: 2}
        """,
        "bad.yaml: document 1: spec.podSelector.matchLabels.version: expected a string, got an integer (quote it)"
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: Web_Policy}
        spec: {endpointSelector: {}}
        """,
        #"bad.yaml: document 1: metadata.name: invalid name "Web_Policy": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)"#
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec:
          endpointSelector: {}
          ingress:
          - toPorts:
            - ports: [{port: "80", protocol: TCP}]
              rules:
                http: [{method: GET}]
        """,
        "bad.yaml: document 1: spec.ingress[0].toPorts[0].rules: L7 rules are not supported yet"
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        spec:
          ingress: [{}]
        """,
        "bad.yaml: document 1: spec.endpointSelector: required field is missing"
      ),
      (
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicyList
        items:
        - metadata: {name: a}
          spec: {endpointSelector: {}, egress: [{}]}
        - metadata: {name: b}
          spec:
            endpointSelector: {}
            egress:
            - toPorts: [{ports: [{port: "80", endPort: 79}]}]
        """,
        "bad.yaml: document 1: items[1].spec.egress[0].toPorts[0].ports[0].endPort: must be greater than or equal to port (80)"
      ),
      (
        """
        \(PolicyManifestTests.cnp)
        ---
        \(PolicyManifestTests.cnp)
        """,
        "bad.yaml: document 2: metadata.name: policy default/web is defined twice (also in document 1)"
      ),
    ])
  func badInput(manifest: String, expected: String) {
    #expect(message(manifest) == expected)
  }

  @Test("YAML aliases cannot expand without bound, and nesting is bounded")
  func expansionIsBounded() {
    var laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in 0..<8 {
      let previous = Character(UnicodeScalar(97 + level)!)
      let name = Character(UnicodeScalar(98 + level)!)
      laughs +=
        "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 9).joined(separator: ", ")
        + "]\n"
    }
    #expect(message(laughs)?.contains("expands to more than") == true)
    #expect(
      message("a: " + String(repeating: "[", count: 300) + String(repeating: "]", count: 300))?
        .contains("nests deeper") == true)
  }
}
