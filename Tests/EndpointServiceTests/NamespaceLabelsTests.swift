import Foundation
import PolicyService
import TesseraCore
import Testing

@testable import EndpointService

@Suite("Namespace labels reach pods and namespaceSelector")
struct NamespaceLabelsTests {
  let payments = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: db, namespace: prod}
    spec:
      podSelector: {matchLabels: {app: db}}
      ingress:
      - from:
        - namespaceSelector: {matchLabels: {team: payments}}
    """

  func create(
    _ node: InProcessNode, _ container: String, _ ip: String, namespace: String, _ labels: String...
  ) async throws -> Endpoint {
    try await node.manager.createEndpoint(
      EndpointSpec(
        containerID: container, ips: [IPPrefix(ip)!], namespace: namespace,
        labels: try LabelSet(parsing: labels)), sync: true)
  }

  @Test(
    "a pod carries its namespace's labels; a NetworkPolicy namespaceSelector admits by them; changing them re-labels the pod"
  )
  func namespaceSelector() async throws {
    let node = try InProcessNode()
    _ = try node.engine.importPolicies(sourceName: "p.yaml", content: Array(payments.utf8))
    try node.workloads.setNamespace("shop", labels: try LabelSet(parsing: ["team=payments"]))
    // Peers first: this in-process node delivers no policy events to db later.
    let client = try await create(node, "c", "10.0.0.2", namespace: "shop", "app=client")
    let stranger = try await create(node, "s", "10.0.0.3", namespace: "blog", "app=client")
    let db = try await create(node, "db", "10.0.0.1", namespace: "prod", "app=db")
    #expect(client.labels["io.cilium.k8s.namespace.labels.team"]?.value == "payments")
    #expect(stranger.labels["io.cilium.k8s.namespace.labels.team"] == nil)
    let policy = try #require(node.datapath.endpoint(id: db.id)).policy
    #expect(
      policy.verdict(peer: client.identity, direction: .ingress, proto: .tcp, port: 5432) == .allow)
    #expect(
      policy.verdict(peer: stranger.identity, direction: .ingress, proto: .tcp, port: 5432) == .deny
    )

    // The namespace loses the label: its pod gets a new identity without it.
    try node.workloads.setNamespace("shop", labels: try LabelSet(parsing: ["team=web"]))
    await node.manager.namespaceChanged("shop")
    #expect(
      await eventually {
        node.manager.registry.endpoint(id: client.id)?.labels[
          "io.cilium.k8s.namespace.labels.team"]?.value == "web"
      })
    let relabelled = try #require(node.manager.registry.endpoint(id: client.id))
    #expect(relabelled.identity != client.identity)
  }

  @Test(
    "every pod carries its namespace's name label (kubernetes.io/metadata.name), whatever the namespace's stored labels say; a Cilium NotIn [kube-system] on it keeps kube-system's pods out"
  )
  func namespaceNameLabel() async throws {
    let node = try InProcessNode()
    let key = "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
    _ = try node.engine.importPolicies(
      sourceName: "p.yaml",
      content: Array(
        """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: api, namespace: prod}
        spec:
          endpointSelector: {matchLabels: {app: api}}
          ingress:
          - fromEndpoints: [{matchExpressions: [{key: "k8s:\(key)", operator: NotIn, values: [kube-system]}]}]
        """.utf8))
    // A stored label claiming another name does not rename the namespace.
    try node.workloads.setNamespace(
      "blog", labels: try LabelSet(parsing: ["kubernetes.io/metadata.name=kube-system"]))
    let system = try await create(node, "k", "10.0.0.2", namespace: "kube-system", "app=dns")
    let blog = try await create(node, "b", "10.0.0.3", namespace: "blog", "app=client")
    let api = try await create(node, "a", "10.0.0.1", namespace: "prod", "app=api")
    #expect(system.labels[key]?.value == "kube-system")
    #expect(blog.labels[key]?.value == "blog")
    #expect(api.labels[key]?.value == "prod")
    let policy = try #require(node.datapath.endpoint(id: api.id)).policy
    #expect(
      policy.verdict(peer: system.identity, direction: .ingress, proto: .tcp, port: 53) == .deny)
    #expect(
      policy.verdict(peer: blog.identity, direction: .ingress, proto: .tcp, port: 53) == .allow)
  }

  /// `json` without the labels (objects with a string naming `metadata.name`).
  private func withoutName(_ json: Any) -> Any? {
    switch json {
    case let array as [Any]: return array.compactMap(withoutName)
    case let object as [String: Any]:
      if object.values.contains(where: { ($0 as? String)?.contains("metadata.name") == true }) {
        return nil
      }
      return object.compactMapValues(withoutName)
    default: return json
    }
  }

  @Test("an endpoint saved before pods carried the namespace name label gets it on restore")
  func restoreAddsNamespaceName() async throws {
    let key = "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
    try await InProcessNode.withRestartable { first, directory, restart in
      let saved = try await create(first, "a", "10.0.0.1", namespace: "prod", "app=api")
      #expect(saved.labels[key]?.value == "prod")
      // The state file as an older version wrote it: no name label anywhere.
      let file = URL(fileURLWithPath: "\(directory)/\(saved.id).json")
      let stored = try JSONSerialization.jsonObject(with: Data(contentsOf: file))
      let older = try JSONSerialization.data(withJSONObject: try #require(withoutName(stored)))
      #expect(!String(decoding: older, as: UTF8.self).contains("metadata.name"))
      try older.write(to: file)
      let restarted = try restart()
      _ = try await restarted.manager.restore()
      #expect(
        await eventually {
          restarted.manager.registry.endpoint(id: saved.id)?.labels[key]?.value == "prod"
        })
    }
  }

  @Test("a pod or workload cannot claim a namespace label itself")
  func podsCannotClaimNamespaceLabels() async throws {
    let node = try InProcessNode()
    await #expect(throws: EndpointError.self) {
      _ = try await create(
        node, "x", "10.0.0.9", namespace: "shop", "io.cilium.k8s.namespace.labels.team=payments")
    }
    #expect(node.manager.registry.all().isEmpty)
  }
}
