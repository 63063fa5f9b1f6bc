import Logging
import TesseraCore
import TesseraProto
import Testing

@testable import PolicyService

/// CIDR peers (`toCIDR`, `toCIDRSet` with `except`, NetworkPolicy `ipBlock`): each named
/// prefix gets an identity whose labels name it and every prefix containing it, and the
/// verdicts follow Kubernetes' NetworkPolicy docs and Cilium's CIDR policy docs.
@Suite("CIDR peers")
struct CIDRPolicyTests {
  let api = pod(1000, namespace: "default", "app=api")
  let client = pod(1001, namespace: "default", "app=client")

  func cidr(_ text: String) -> SecurityIdentity {
    CIDRIdentity.identity(for: IPPrefix(text)!)
  }

  func engineWithPods() throws -> PolicyEngine { try engine([api, client]) }

  @Test("a CIDR identity: its number in the local scope, its labels every enclosing prefix")
  func identityShape() {
    let identity = cidr("10.1.0.0/16")
    #expect(CIDRIdentity.isCIDR(identity.id))
    #expect(identity.id == CIDRIdentity.number(for: IPPrefix("10.1.0.0/16")!))
    #expect(identity.labels.count == 17 + 1)
    #expect(identity.labels["10.0.0.0/8"]?.source == "cidr")
    #expect(identity.labels["0.0.0.0/0"]?.source == "cidr")
    #expect(identity.labels["world-ipv4"]?.source == "reserved")
    #expect(identity.labels["10.1.0.0/17"] == nil)
    #expect(CIDRIdentity.prefix(of: identity) == IPPrefix("10.1.0.0/16"))
    let v6 = cidr("2001:db8::/32")
    #expect(v6.labels["2001-db8--/32"]?.source == "cidr")
    #expect(v6.labels["world-ipv6"] != nil)
    #expect(CIDRIdentity.prefix(of: v6) == IPPrefix("2001:db8::/32"))
    // The same prefix written with host bits is the same identity.
    #expect(CIDRIdentity.identity(for: IPPrefix("10.1.2.3/16")!) == identity)
    // No pod identity is in the scope.
    #expect(!CIDRIdentity.isCIDR(NumericIdentity(0xFF_FFFF)))
  }

  @Test("the Kubernetes docs' ipBlock: 172.17.0.0/16 except 172.17.1.0/24")
  func kubernetesDocsIPBlock() throws {
    let engine = try engineWithPods()
    let imported = try engine.importYAML(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: api}}
        policyTypes: [Ingress, Egress]
        ingress:
        - from:
          - ipBlock:
              cidr: 172.17.0.0/16
              except: [172.17.1.0/24]
          ports: [{protocol: TCP, port: 6379}]
        egress:
        - to:
          - ipBlock: {cidr: 10.0.0.0/24}
          ports: [{protocol: TCP, port: 5978}]
        """))
    #expect(
      Set(imported.identities.added.map(\.id))
        == Set(["172.17.0.0/16", "172.17.1.0/24", "10.0.0.0/24"].map { cidr($0).id }))
    let policy = engine.computePolicy(for: api)
    #expect(policy.ingress(from: cidr("172.17.0.0/16"), .tcp, 6379) == .allow)
    #expect(policy.ingress(from: cidr("172.17.1.0/24"), .tcp, 6379) == .deny)
    #expect(policy.ingress(from: cidr("172.17.0.0/16"), .tcp, 6380) == .deny)
    #expect(policy.ingress(from: .world, .tcp, 6379) == .deny)
    #expect(policy.ingress(from: client, .tcp, 6379) == .deny)
    #expect(policy.egress(to: cidr("10.0.0.0/24"), .tcp, 5978) == .allow)
    #expect(policy.egress(to: cidr("172.17.0.0/16"), .tcp, 5978) == .deny)
    #expect(policy.egress(to: .world, .tcp, 5978) == .deny)
  }

  @Test("a prefix named by another policy inside a CIDR is selected by it, unless excepted")
  func nestedPrefixes() throws {
    let engine = try engineWithPods()
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        egress:
        - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
        """, name: "wide"))
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: client}}
        egress:
        - toCIDR: [10.1.0.0/16, 10.96.1.0/24]
        """, name: "narrow"))
    let policy = engine.computePolicy(for: api)
    #expect(policy.egress(to: cidr("10.0.0.0/8")) == .allow)
    #expect(policy.egress(to: cidr("10.1.0.0/16")) == .allow)
    #expect(policy.egress(to: cidr("10.96.0.0/12")) == .deny)
    #expect(policy.egress(to: cidr("10.96.1.0/24")) == .deny)
    #expect(policy.egress(to: .world) == .deny)
    let narrow = engine.computePolicy(for: client)
    #expect(narrow.egress(to: cidr("10.1.0.0/16")) == .allow)
    #expect(narrow.egress(to: cidr("10.0.0.0/8")) == .deny)
  }

  @Test("world selects CIDR identities; cluster, endpoint selectors and namespaces do not")
  func entitiesAndSelectors() throws {
    let engine = try engineWithPods()
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: client}}
        egress:
        - toCIDR: [192.0.2.0/24, "2001:db8::/32"]
        """, name: "names"))
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        egress:
        - toEntities: [world]
          toPorts: [{ports: [{port: "443"}]}]
        - toEntities: [cluster]
          toPorts: [{ports: [{port: "80"}]}]
        - toEndpoints: [{}]
          toPorts: [{ports: [{port: "81"}]}]
        """, name: "api"))
    let policy = engine.computePolicy(for: api)
    for prefix in ["192.0.2.0/24", "2001:db8::/32"] {
      #expect(policy.egress(to: cidr(prefix), .tcp, 443) == .allow)
      #expect(policy.egress(to: cidr(prefix), .tcp, 80) == .deny)
      #expect(policy.egress(to: cidr(prefix), .tcp, 81) == .deny)
    }
    try engine.importYAML(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: api}}
        policyTypes: [Egress]
        egress:
        - to:
          - namespaceSelector: {}
        """, name: "np"))
    #expect(engine.computePolicy(for: api).egress(to: cidr("192.0.2.0/24"), .tcp, 5000) == .deny)
    #expect(engine.computePolicy(for: api).egress(to: client, .tcp, 5000) == .allow)
  }

  @Test("0.0.0.0/0 except a prefix: world and every other CIDR, not the excepted one")
  func worldExcept() throws {
    let engine = try engineWithPods()
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        egress:
        - toCIDRSet: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]
        - toCIDR: [192.168.0.0/16]
          toPorts: [{ports: [{port: "1"}]}]
        """))
    let policy = engine.computePolicy(for: api)
    #expect(policy.egress(to: .worldIPv4) == .allow)
    #expect(policy.egress(to: cidr("192.168.0.0/16")) == .allow)
    #expect(policy.egress(to: cidr("10.0.0.0/8")) == .deny)
    #expect(policy.egress(to: .worldIPv6) == .deny)
    #expect(policy.egress(to: client) == .deny)
  }

  @Test("a CIDR deny beats a world allow, also for prefixes inside it")
  func denyCIDR() throws {
    let engine = try engineWithPods()
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        """
        endpointSelector: {matchLabels: {app: api}}
        egress:
        - toEntities: [world]
        egressDeny:
        - toCIDR: [203.0.113.0/24]
        ingress:
        - fromCIDR: [203.0.113.128/25]
        """))
    let policy = engine.computePolicy(for: api)
    #expect(policy.egress(to: .world) == .allow)
    #expect(policy.egress(to: cidr("203.0.113.0/24")) == .deny)
    #expect(policy.egress(to: cidr("203.0.113.128/25")) == .deny)
    #expect(policy.ingress(from: cidr("203.0.113.128/25")) == .allow)
    #expect(policy.ingress(from: cidr("203.0.113.0/24")) == .deny)
  }

  @Test("a prefix's identity outlives the last rule naming it until a collection of its own")
  func identityLifetime() async throws {
    let engine = try engineWithPods()
    let first = try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        "endpointSelector: {}\negress:\n- toCIDR: [198.51.100.0/24]", name: "a"))
    #expect(first.identities.added == [cidr("198.51.100.0/24")])
    let second = try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        "endpointSelector: {}\negress:\n- toCIDR: [198.51.100.0/24]", name: "b"))
    #expect(second.identities == .none)
    #expect(engine.cidrIdentities() == [cidr("198.51.100.0/24")])
    let deleteA = try engine.deletePolicies(.named(namespace: "default", name: "a"))
    #expect(deleteA.identities == .none)
    let deleteB = try engine.deletePolicies(.named(namespace: "default", name: "b"))
    // The change that stops naming it leaves it: nodes still judge its addresses by it.
    #expect(deleteB.identities == .none)
    #expect(engine.hasUnnamedCIDRIdentities)
    let identity = cidr("198.51.100.0/24")
    let events = PolicyEvents()
    let subscription = events.subscribe()
    let collector = CIDRIdentityCollector(
      engine: engine, events: events, removalGrace: .zero, logger: Logger(label: "test"))
    // First round: retired in an event of its own (nodes unmap it), still in the cache.
    collector.collect()
    #expect(engine.cidrIdentities().isEmpty)
    #expect(!engine.hasUnnamedCIDRIdentities)
    #expect(engine.unknownIdentities(among: [identity.id]).isEmpty)
    // Next round: removed from the cache, in another event.
    collector.collect()
    #expect(engine.unknownIdentities(among: [identity.id]).count == 1)
    var iterator = subscription.events.makeAsyncIterator()
    let retirement = await iterator.next()
    #expect(retirement?.retiredCidrIdentities == [identity.id.rawValue])
    #expect(retirement?.deletedIdentities == [])
    #expect(retirement?.affectedIdentities == [] && retirement?.all == false)
    let removal = await iterator.next()
    #expect(removal?.deletedIdentities == [identity.id.rawValue])
    #expect((removal?.sequence ?? 0) > (retirement?.sequence ?? 0))
  }

  @Test("a retired prefix named again arrives again; one named before its retirement does not")
  func namedAgain() throws {
    let engine = try engineWithPods()
    let yaml = PolicySemanticsConformanceTests.cnp(
      "endpointSelector: {}\negress:\n- toCIDR: [198.51.100.0/24]", name: "a")
    try engine.importYAML(yaml)
    _ = try engine.deletePolicies(.named(namespace: "default", name: "a"))
    let again = try engine.importYAML(yaml)
    #expect(again.identities == .none)
    #expect(engine.retireUnnamedCIDRIdentities().isEmpty)
    _ = try engine.deletePolicies(.named(namespace: "default", name: "a"))
    #expect(engine.retireUnnamedCIDRIdentities() == [cidr("198.51.100.0/24").id])
    let returned = try engine.importYAML(yaml)
    #expect(returned.identities.added == [cidr("198.51.100.0/24")])
    #expect(engine.cidrIdentities() == [cidr("198.51.100.0/24")])
    // Removing what was retired does nothing to one named again.
    #expect(engine.removeRetiredCIDRIdentities([cidr("198.51.100.0/24").id]).identities == .none)
    #expect(engine.computePolicy(for: api).egress(to: cidr("198.51.100.0/24")) == .allow)
  }

  @Test("a pod labelled cidr: is never selected by a CIDR peer")
  func podCannotPoseAsCIDR() throws {
    let poser = pod(1002, namespace: "default", "cidr:10.0.0.0/8=")
    let engine = try engine([api, client, poser])
    try engine.importYAML(
      PolicySemanticsConformanceTests.knp(
        """
        podSelector: {matchLabels: {app: api}}
        ingress:
        - from:
          - ipBlock: {cidr: 10.0.0.0/8}
        """))
    let policy = engine.computePolicy(for: api)
    #expect(policy.ingress(from: cidr("10.0.0.0/8")) == .allow)
    #expect(policy.ingress(from: poser) == .deny)
  }

  @Test("the identity service can neither add nor remove a CIDR identity")
  func identityServiceCannotTouchCIDRs() throws {
    let engine = try engineWithPods()
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        "endpointSelector: {matchLabels: {app: api}}\negress:\n- toCIDR: [198.51.100.0/24]"))
    let named = cidr("198.51.100.0/24")
    _ = engine.updateIdentities(added: [], deleted: [named.id])
    let forged = SecurityIdentity(id: cidr("192.0.2.0/24").id, labels: named.labels)
    _ = engine.updateIdentities(added: [forged], deleted: [])
    let policy = engine.computePolicy(for: api)
    #expect(policy.egress(to: named) == .allow)
    #expect(policy.egress(to: forged.id) == .deny)
    #expect(!engine.allocatedIdentities().contains(named.id))
  }

  @Test("what the identity service says of the CIDR scope is neither applied nor announced")
  func identityServiceCannotAnnounceCIDRs() async throws {
    let engine = try engineWithPods()
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        "endpointSelector: {matchLabels: {app: api}}\negress:\n- toCIDR: [198.51.100.0/24]"))
    let events = PolicyEvents()
    let handler = PolicyServiceHandler(engine: engine, events: events, logger: Logger(label: "t"))
    let subscription = events.subscribe()
    let named = cidr("198.51.100.0/24")
    let forged = SecurityIdentity(id: cidr("192.0.2.0/24").id, labels: named.labels)
    _ = handler.identitiesChanged(added: [forged, client], deleted: [named.id])
    var iterator = subscription.events.makeAsyncIterator()
    let event = try #require(await iterator.next())
    #expect(event.addedIdentities.map(\.id) == [client.id.rawValue])
    #expect(event.addedIdentities.allSatisfy { $0.cidr.isEmpty })
    #expect(event.deletedIdentities.isEmpty)
  }

  @Test("two prefixes with one identity number cannot both be named")
  func collisionsAreRefused() throws {
    // Two /32s whose numbers collide (found by a birthday search over random addresses).
    let first = IPPrefix("190.17.159.26/32")!
    let second = IPPrefix("218.78.53.3/32")!
    try #require(CIDRIdentity.number(for: first) == CIDRIdentity.number(for: second))
    let engine = try engineWithPods()
    try engine.importYAML(
      PolicySemanticsConformanceTests.cnp(
        "endpointSelector: {}\negress:\n- toCIDR: [\"\(first)\"]", name: "a"))
    let error = policyError {
      try engine.importYAML(
        PolicySemanticsConformanceTests.cnp(
          "endpointSelector: {}\negress:\n- toCIDR: [\"\(second)\"]", name: "b"))
    }
    #expect(error?.code == .invalidManifest)
    #expect(error?.message.contains("CIDR \(second) cannot be used") == true)
    #expect(engine.policies().count == 1)
    // Both in one manifest: refused as well.
    let together = try engineWithPods()
    #expect(
      policyError {
        try together.importYAML(
          PolicySemanticsConformanceTests.cnp(
            "endpointSelector: {}\negress:\n- toCIDR: [\"\(first)\", \"\(second)\"]"))
      }?.code == .invalidManifest)
  }

  @Test("an event names a CIDR identity's prefix")
  func arrivalCarriesPrefix() {
    let arrival = Tessera_Policy_V1_IdentityArrival(cidr("10.0.0.0/8"))
    #expect(arrival.cidr == "10.0.0.0/8")
    #expect(arrival.labelsDigest == cidr("10.0.0.0/8").labels.canonicalDigest)
    #expect(Tessera_Policy_V1_IdentityArrival(client).cidr.isEmpty)
  }
}
