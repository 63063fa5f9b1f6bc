import Testing

@testable import TesseraCore

@Suite("Labels and label sets")
struct LabelTests {
  @Test(
    "parses source:key=value, key=value and key",
    arguments: [
      ("k8s:app=web", Label(source: "k8s", key: "app", value: "web")),
      ("app=web", Label(source: "k8s", key: "app", value: "web")),
      ("container:flag", Label(source: "container", key: "flag", value: "")),
      (
        "app.kubernetes.io/name=db",
        Label(source: "k8s", key: "app.kubernetes.io/name", value: "db")
      ),
      ("url=http://x:80", Label(source: "k8s", key: "url", value: "http://x:80")),
    ])
  func parse(text: String, expected: Label) throws {
    #expect(try Label.parse(text) == expected)
  }

  @Test(
    "rejects malformed labels",
    arguments: ["k8s:=x", "", "k8s:a;b=c", "BAD SOURCE:a=b", "k8s:a=b;c", "k8s:a b=c"])
  func rejects(text: String) {
    #expect(throws: LabelError.self) { try Label.parse(text) }
  }

  @Test("canonical key sorts by key and is equal for equal sets")
  func canonicalKey() throws {
    let a = try LabelSet(parsing: ["k8s:zone=b", "k8s:app=web"])
    let b = try LabelSet(parsing: ["k8s:app=web", "k8s:zone=b"])
    #expect(a.canonicalKey == "k8s:app=web;k8s:zone=b;")
    #expect(a == b)
    #expect(try LabelSet(canonicalKey: a.canonicalKey) == a)
  }

  @Test(
    "the canonical digest is FNV-1a 64 of the canonical key: fixed across processes, different for other labels"
  )
  func canonicalDigest() throws {
    #expect(try LabelSet(parsing: ["app=a"]).canonicalDigest == 0x08d0_a8ff_e7ae_29a5)
    #expect(
      try LabelSet(parsing: ["app=a"]).canonicalDigest
        != LabelSet(parsing: ["app=b"]).canonicalDigest)
  }

  @Test(
    "text that Swift equates with other bytes is refused: ';' by canonical equivalence (U+037E), the Kelvin sign, decomposed accents",
    arguments: [
      Label(
        source: "k8s", key: "app", value: "x\u{037E}k8s:io.cilium.k8s.namespace.labels.env=prod"),
      Label(source: "k8s", key: "app", value: "\u{212A}afka"),
      Label(source: "k8s", key: "name", value: "cafe\u{0301}"),
      Label(source: "k8s", key: "a\u{037E}b", value: "x"),
    ])
  func nonCanonicalText(label: Label) {
    #expect(throws: LabelError.self) { try label.validate() }
    #expect(throws: LabelError.self) { try LabelSet([label]) }
  }

  @Test("precomposed Unicode is accepted and round-trips through the canonical key")
  func unicodeRoundTrip() throws {
    let set = try LabelSet(parsing: [
      "name=caf\u{00E9}", "emoji=\u{1F680}\u{2713}", "app=\u{65E5}\u{672C}",
    ])
    #expect(try LabelSet(canonicalKey: set.canonicalKey) == set)
    #expect(
      try LabelSet(canonicalKey: set.canonicalKey).canonicalKey.utf8.elementsEqual(
        set.canonicalKey.utf8))
  }

  @Test("delimiters are found in bytes: ';' after a prepended mark still splits a canonical key")
  func delimiterAfterPrependedMark() throws {
    // U+0600 (Arabic number sign) is a prepended mark: "\u{0600};" is one Swift Character.
    let set = try LabelSet([
      Label(source: "k8s", key: "a", value: "x\u{0600}"),
      Label(source: "k8s", key: "b", value: "y"),
    ])
    let parsed = try LabelSet(canonicalKey: set.canonicalKey)
    #expect(parsed == set)
    #expect(parsed.count == 2)
    #expect(try Label.parse("k8s:a\u{0600}=v").key == "a\u{0600}")
  }

  @Test("one value per key")
  func conflict() {
    #expect(throws: LabelError.self) { try LabelSet(parsing: ["app=a", "app=b"]) }
  }

  @Test("label filter keeps identity-relevant labels only")
  func filter() throws {
    let labels = try LabelSet(parsing: [
      "app=web", "pod-template-hash=abc", "io.kubernetes.pod.namespace=default",
      "io.kubernetes.pod.name=x",
      "kubernetes.io/hostname=n1", "app.kubernetes.io/name=web",
      "statefulset.kubernetes.io/pod-name=w-0",
      "io.cilium.k8s.policy.serviceaccount=sa", "controller-uid=1",
    ])
    let kept = LabelFilter.defaults.filter(labels).labels.map(\.key)
    #expect(
      kept == [
        "app", "app.kubernetes.io/name", "io.cilium.k8s.policy.serviceaccount",
        "io.kubernetes.pod.namespace",
      ])
  }

  @Test("custom filter rules come first")
  func customFilter() throws {
    var filter = LabelFilter.defaults
    filter.rules.insert(try LabelFilter.Rule(parsing: "-app"), at: 0)
    #expect(
      filter.filter(try LabelSet(parsing: ["app=x", "tier=y"])).labels.map(\.key) == ["tier"])
    #expect(throws: LabelError.self) { try LabelFilter.Rule(parsing: "app") }
  }
}

@Suite("Identity numbering")
struct IdentityNumberingTests {
  @Test("reserved identities have Cilium's numbers and labels")
  func reserved() {
    #expect(ReservedIdentity.host.rawValue == 1)
    #expect(ReservedIdentity.world.rawValue == 2)
    #expect(ReservedIdentity.initializing.rawValue == 5)
    #expect(ReservedIdentity.worldIPv6.rawValue == 10)
    #expect(ReservedIdentity.matching(ReservedIdentity.kubeAPIServer.labels) == .kubeAPIServer)
    #expect(ReservedIdentity.initializing.labels.canonicalKey == "reserved:init=;")
  }

  @Test(
    "allocation ranges per cluster",
    arguments: [
      (UInt32(0), UInt32(256), UInt32(65535)), (UInt32(1), UInt32(65536), UInt32(131071)),
      (UInt32(255), UInt32(255 << 16), UInt32((255 << 16) + 65535)),
    ] as [(UInt32, UInt32, UInt32)])
  func ranges(cluster: UInt32, low: UInt32, high: UInt32) {
    let range = NumericIdentity.allocationRange(clusterID: cluster)
    #expect(range.lowerBound == low)
    #expect(range.upperBound == high)
    #expect(NumericIdentity(low).clusterID == cluster)
  }
}

@Suite("IP prefixes")
struct IPPrefixTests {
  @Test(
    "parses and normalises",
    arguments: [
      ("10.1.2.3", "10.1.2.3/32"), ("10.1.2.3/24", "10.1.2.0/24"), ("fd00::5", "fd00::5/128"),
      ("fd00::1/64", "fd00::/64"),
    ])
  func parse(text: String, expected: String) throws {
    #expect(try #require(IPPrefix(text)).description == expected)
  }

  @Test(
    "rejects garbage",
    arguments: ["", "10.1.2", "10.1.2.3/33", "fd00::/129", "x", "10.0.0.1/+1", "10.0.0.1/8/2"])
  func rejects(text: String) {
    #expect(IPPrefix(text) == nil)
  }
}

@Suite("Reference policy verdicts")
struct VerdictTests {
  let policy = EndpointPolicy(
    revision: 1, ingressEnforced: true, egressEnforced: false,
    entries: [
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .tcp, ports: PortRange(8000, 8100),
        verdict: .allow),
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .tcp,
        ports: PortRange(single: 8080), verdict: .deny),
      PolicyEntry(
        peer: .unknown, direction: .egress, proto: .udp, ports: PortRange(single: 53),
        verdict: .deny),
    ])

  @Test("deny beats allow, default-deny only where enforced")
  func verdicts() {
    #expect(
      policy.verdict(peer: NumericIdentity(300), direction: .ingress, proto: .tcp, port: 8001)
        == .allow)
    #expect(
      policy.verdict(peer: NumericIdentity(300), direction: .ingress, proto: .tcp, port: 8080)
        == .deny)
    #expect(
      policy.verdict(peer: NumericIdentity(301), direction: .ingress, proto: .tcp, port: 8001)
        == .deny)
    #expect(
      policy.verdict(peer: NumericIdentity(300), direction: .ingress, proto: .udp, port: 8001)
        == .deny)
    #expect(
      policy.verdict(peer: NumericIdentity(999), direction: .egress, proto: .tcp, port: 53)
        == .allow)
    #expect(
      policy.verdict(peer: NumericIdentity(999), direction: .egress, proto: .udp, port: 53) == .deny
    )
  }

  @Test("a label set is bounded in size")
  func labelSetBound() throws {
    _ = try LabelSet(
      (0..<LabelSet.maxLabels).map { Label(source: "k8s", key: "k\($0)", value: "v") })
    #expect(throws: LabelError.self) {
      try LabelSet((0...LabelSet.maxLabels).map { Label(source: "k8s", key: "k\($0)", value: "v") })
    }
  }

  @Test(
    "addresses no workload can own",
    arguments: [
      "0.0.0.0/32", "127.0.0.1/32", "224.0.0.1/32", "255.255.255.255/32", "::/128", "::1/128",
      "ff02::1/128",
    ])
  func specialPurpose(_ text: String) throws {
    #expect(try #require(IPPrefix(text)).isSpecialPurposeHost)
  }

  @Test(
    "ordinary addresses",
    arguments: ["10.0.0.1/32", "192.168.1.255/32", "fd00::1/128", "2001:db8::1/128"])
  func ordinary(_ text: String) throws {
    #expect(try #require(IPPrefix(text)).isSpecialPurposeHost == false)
  }
}
