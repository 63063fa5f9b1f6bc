import Foundation
import TesseraCore
import Testing

@testable import PolicyService

@Suite("Policy deletion by selection")
struct PolicyDeletionTests {
  static let manifest = """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: pay-web, namespace: shop, labels: {team: payments, env: prod}}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      ingress: [{fromEndpoints: [{matchLabels: {app: lb}}]}]
    ---
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: pay-db, namespace: shop, labels: {team: payments}}
    spec:
      endpointSelector: {matchLabels: {app: db}}
      ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
    ---
    apiVersion: cilium.io/v2
    kind: CiliumClusterwideNetworkPolicy
    metadata: {name: base, labels: {team: platform}}
    spec:
      endpointSelector: {}
      egress: [{toEntities: [world]}]
    """

  @Test(
    "selectors parse as kubectl's -l: equality, inequality, set membership, existence",
    arguments: [
      ("team=payments", "any:team=payments"),
      ("team==payments", "any:team=payments"),
      ("team!=payments", "any:team notin (payments)"),
      ("team in (a, b)", "any:team in (a,b)"),
      ("team notin (a)", "any:team notin (a)"),
      ("team", "any:team"),
      (" !team ", "!any:team"),
      ("k8s:team=x,env", "any:env, k8s:team=x"),
    ])
  func parses(text: String, expected: String) throws {
    let selector = try EndpointSelector(parsing: text)
    #expect(selector.requirements.map(\.description).joined(separator: ", ") == expected)
  }

  @Test(
    "malformed selectors are refused with the requirement named",
    arguments: [
      "", " ", "team in (a", "team in a)", "=x", "team notin ()", "a b=c", "team,,env",
      "team in (a,)", "team=a=b",
    ])
  func refuses(text: String) {
    let error = policyError { _ = try EndpointSelector(parsing: text) }
    #expect(error?.code == .invalidRequest, "\(text)")
    #expect(error?.message.contains("selector") == true, "\(error?.message ?? "")")
  }

  @Test("a policy's labels: metadata.labels plus the labels Cilium derives")
  func labels() throws {
    let engine = try engine([])
    _ = try engine.importYAML(Self.manifest)
    let web = try #require(engine.policy(namespace: "shop", name: "pay-web"))
    #expect(
      web.labels.map(\.description).sorted() == [
        "k8s:env=prod", "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
        "k8s:io.cilium.k8s.policy.name=pay-web", "k8s:io.cilium.k8s.policy.namespace=shop",
        "k8s:team=payments",
      ])
  }

  @Test("a selection deletes every match in one revision and recomputes their subjects once")
  func deletesMatches() throws {
    let web = pod(1000, namespace: "shop", "app=web")
    let db = pod(1001, namespace: "shop", "app=db")
    let other = pod(1002, namespace: "shop", "app=other")
    let engine = try engine([web, db, other])
    let imported = try engine.importYAML(Self.manifest)
    let payments = try EndpointSelector(parsing: "team=payments")
    let result = try engine.deletePolicies(.matching(payments, namespace: nil))
    #expect(result.deleted.map(\.description) == ["shop/pay-db", "shop/pay-web"])
    #expect(result.revision == imported.revision + 1)
    #expect(result.affected.contains(web.id) && result.affected.contains(db.id))
    #expect(engine.policies().map(\.ref.name) == ["base"])
    #expect(engine.computePolicy(for: web).ingressEnforced == false)
    // Nothing matches: nothing changes, not even the revision.
    let none = try engine.deletePolicies(.matching(payments, namespace: nil))
    #expect(none.deleted.isEmpty && none.revision == result.revision)
    // A namespace narrows: "" is the cluster-wide policies'.
    _ = try engine.importYAML(Self.manifest)
    let everything = try EndpointSelector(parsing: "team")
    #expect(
      try engine.deletePolicies(.matching(everything, namespace: "")).deleted.map(\.name)
        == ["base"])
    #expect(try engine.deletePolicies(.all(namespace: "shop")).deleted.count == 2)
    #expect(engine.policies().isEmpty)
    let missing = policyError {
      _ = try engine.deletePolicies(.named(namespace: "shop", name: "x"))
    }
    #expect(missing?.code == .notFound)
  }

  @Test("the store loses nothing: a selection deleted from the database is gone after a restart")
  func persisted() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent(
      "deletion-\(UInt64.random(in: 0...UInt64.max)).db"
    ).path
    defer { try? FileManager.default.removeItem(atPath: path) }
    do {
      let engine = try engine([], database: try PolicyDatabase(path: path))
      _ = try engine.importYAML(Self.manifest)
      _ = try engine.deletePolicies(
        .matching(try EndpointSelector(parsing: "team=payments"), namespace: nil))
    }
    let reopened = try engine([], database: try PolicyDatabase(path: path))
    #expect(reopened.policies().map(\.ref.name) == ["base"])
  }
}
