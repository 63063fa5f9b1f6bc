import TesseraCore
import Testing

@testable import PolicyService

@Suite("EndpointSelector matching")
struct EndpointSelectorTests {
  let web = labels(["k8s:app=web", "k8s:tier=frontend", "k8s:io.kubernetes.pod.namespace=default"])
  let db = labels(["k8s:app=db", "container:tier=backend", "k8s:io.kubernetes.pod.namespace=prod"])
  let host = ReservedIdentity.host.labels

  @Test("matchLabels: every key must have the value; no source matches any source")
  func matchLabels() {
    #expect(EndpointSelector(matchLabels: [.k8s("app"): "web"]).matches(web))
    #expect(!EndpointSelector(matchLabels: [.k8s("app"): "web"]).matches(db))
    #expect(
      EndpointSelector(matchLabels: [.k8s("app"): "web", .any("tier"): "frontend"]).matches(web))
    #expect(
      !EndpointSelector(matchLabels: [.k8s("app"): "web", .any("tier"): "backend"]).matches(web))
    // Source must match unless it is `any`.
    #expect(!EndpointSelector(matchLabels: [.k8s("tier"): "backend"]).matches(db))
    #expect(EndpointSelector(matchLabels: [.any("tier"): "backend"]).matches(db))
    #expect(
      EndpointSelector(matchLabels: [SelectorKey(source: "container", key: "tier"): "backend"])
        .matches(db))
    #expect(EndpointSelector(matchLabels: [.reserved("host"): ""]).matches(host))
    #expect(!EndpointSelector(matchLabels: [.k8s("host"): ""]).matches(host))
  }

  @Test(
    "matchExpressions operators (Kubernetes semantics)",
    arguments: [
      (LabelRequirement.Operator.in, ["web", "api"], true, false),
      (.in, ["api"], false, false),
      (.notIn, ["web"], false, true),
      (.notIn, ["api"], true, true),
      (.exists, [], true, false),
      (.doesNotExist, [], false, true),
    ])
  func operators(
    op: LabelRequirement.Operator, values: [String], matchesWeb: Bool, matchesUnlabelled: Bool
  ) {
    // `role` is on web only; NotIn and DoesNotExist match a set without the key.
    let withRole = labels(["k8s:role=web"])
    let requirement = LabelRequirement(key: .any("role"), op: op, values: values)
    #expect(EndpointSelector([requirement]).matches(withRole) == matchesWeb)
    #expect(EndpointSelector([requirement]).matches(labels(["k8s:app=x"])) == matchesUnlabelled)
  }

  @Test("a requirement with a source does not see a label of another source")
  func sourceScopedExpressions() {
    let container = labels(["container:role=web"])
    #expect(
      !EndpointSelector([LabelRequirement(key: .k8s("role"), op: .exists)]).matches(container))
    #expect(
      EndpointSelector([LabelRequirement(key: .k8s("role"), op: .doesNotExist)]).matches(container))
    #expect(
      EndpointSelector([LabelRequirement(key: .k8s("role"), op: .notIn, values: ["web"])]).matches(
        container))
  }

  @Test("the empty selector selects everything")
  func wildcard() {
    #expect(EndpointSelector().isWildcard)
    #expect(
      EndpointSelector().matches(web) && EndpointSelector().matches(host)
        && EndpointSelector().matches(.empty))
  }

  @Test("keys parse as source:key, a key with no source is any:")
  func keyParsing() {
    #expect(SelectorKey(parsing: "app") == .any("app"))
    #expect(SelectorKey(parsing: "k8s:app") == .k8s("app"))
    #expect(SelectorKey(parsing: "reserved:host") == .reserved("host"))
    #expect(
      SelectorKey(parsing: "io.kubernetes.pod.namespace") == .any("io.kubernetes.pod.namespace"))
    #expect(
      SelectorKey(parsing: "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name")
        == .k8s("io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"))
    #expect(SelectorKey(parsing: "example.com/team:x") == .any("example.com/team:x"))
  }

  @Test("equal selectors written differently are equal, and print the Kubernetes way")
  func canonicalForm() {
    let a = EndpointSelector([
      LabelRequirement(key: .k8s("io.kubernetes.pod.namespace"), op: .in, values: ["default"]),
      LabelRequirement(key: .k8s("app"), op: .in, values: ["frontend"]),
    ])
    let b = EndpointSelector(matchLabels: [
      .k8s("app"): "frontend", .k8s("io.kubernetes.pod.namespace"): "default",
    ])
    #expect(a == b)
    #expect(a.description == "k8s:app=frontend,k8s:io.kubernetes.pod.namespace=default")
    let c = EndpointSelector([
      LabelRequirement(key: .any("env"), op: .notIn, values: ["prod", "dev"]),
      LabelRequirement(key: .any("tier"), op: .exists),
      LabelRequirement(key: .reserved("world"), op: .doesNotExist),
      LabelRequirement(key: .any("app"), op: .in, values: ["b", "a"]),
    ])
    #expect(c.description == "any:app in (a,b),any:env notin (dev,prod),any:tier,!reserved:world")
    #expect(EndpointSelector().description == "{}")
  }
}
