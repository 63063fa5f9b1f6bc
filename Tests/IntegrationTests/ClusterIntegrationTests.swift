import Foundation
import LocalEtcd
import Testing

/// Two nodes (each its own four daemons and run directory) sharing one real etcd.
@Suite(
  "Two nodes on one etcd", .serialized,
  .enabled(
    if: TesseraNode.skipReason == nil && LocalEtcdCluster.skipReason == nil,
    "needs the built daemons and etcd"))
struct ClusterIntegrationTests {
  /// Polls `condition` every 50 ms for up to `seconds`.
  func eventually(_ seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
      if try condition() { return true }
      usleep(50_000)
    }
    return false
  }

  func ipcache(_ node: TesseraNode) throws -> [String: Int] {
    let entries =
      try node.json(["datapath", "ipcache", "list"])["entries"] as? [[String: Any]] ?? []
    return Dictionary(
      entries.compactMap { entry in
        (entry["prefix"] as? String).map { ($0, entry["identity"] as? Int ?? -1) }
      }, uniquingKeysWith: { a, _ in a })
  }

  @Test(
    "one identity per label set on both nodes, each node's ipcache learns the other's endpoints, and an etcd outage is survived"
  )
  func twoNodes() throws {
    let etcd = try LocalEtcdCluster(members: 1)
    defer { etcd.shutdown() }
    let a = try TesseraNode()
    let b = try TesseraNode()
    defer {
      a.down()
      b.down()
    }
    try a.up(["--node-name", "node-a", "--identity-store", "etcd:\(etcd.endpoints)"])
    try b.up(["--node-name", "node-b", "--identity-store", "etcd:\(etcd.endpoints)"])

    let identities = try b.json(["identity", "list"])
    #expect((identities["backend"] as? String)?.hasPrefix("etcd:http://127.0.0.1:") == true)

    let onA = try a.json([
      "endpoint", "create", "--container-id", "a1", "--ip", "10.88.1.1", "--label", "app=web",
    ])
    let onB = try b.json([
      "endpoint", "create", "--container-id", "b1", "--ip", "10.88.2.1", "--label", "app=web",
    ])
    let dbOnB = try b.json([
      "endpoint", "create", "--container-id", "b2", "--ip", "10.88.2.2", "--label", "app=db",
    ])
    let web = try #require(onA["identity"] as? Int)
    let db = try #require(dbOnB["identity"] as? Int)
    #expect(onB["identity"] as? Int == web, "equal labels, one identity across nodes")
    #expect(web != db)

    let shared = try b.json(["identity", "get", String(web)])
    #expect((shared["nodes"] as? [String: Int]).map { Set($0.keys) } == ["node-a", "node-b"])

    #expect(
      try eventually { try ipcache(a)["10.88.2.2/32"] == db }, "node A learns node B's endpoint")
    #expect(
      try eventually { try ipcache(b)["10.88.1.1/32"] == web }, "node B learns node A's endpoint")

    try a.cli(["endpoint", "delete", "--container-id", "a1"])
    #expect(
      try eventually { try ipcache(b)["10.88.1.1/32"] == nil },
      "a deleted endpoint leaves the other node's ipcache")

    // etcd down: known labels still work; a new label set fails with a retryable error.
    etcd.stopAll()
    let known = try a.json([
      "endpoint", "create", "--container-id", "a2", "--ip", "10.88.1.2", "--label", "app=db",
    ])
    #expect(known["identity"] as? Int == db)
    let (status, output) = try a.cli(
      ["endpoint", "create", "--container-id", "a3", "--ip", "10.88.1.3", "--label", "app=new"],
      expectSuccess: false)
    #expect(status != 0)
    #expect(output.contains("unavailable, try again"), "\(output)")
    #expect(
      try a.json(["endpoint", "list"])["endpoints"].map { ($0 as? [Any])?.count } == 1,
      "the failed create left nothing behind")
    try etcd.startAll()
    #expect(
      try eventually(20) {
        try a.cli(
          [
            "endpoint", "create", "--container-id", "a3", "--ip", "10.88.1.3", "--label", "app=new",
          ], expectSuccess: false
        ).status == 0
      })
    #expect(
      try eventually { try ipcache(b)["10.88.1.3/32"] != nil }, "and its address reaches node B")
  }

  /// Runs `etcdctl` (v3 API) against `endpoints`; returns its output.
  func etcdctl(_ endpoints: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["etcdctl", "--endpoints", endpoints] + arguments
    process.environment = ["ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let output = String(decoding: data, as: UTF8.self)
    try #require(process.terminationStatus == 0, "etcdctl \(arguments): \(output)")
    return output
  }

  @Test(
    "entries written straight into etcd cannot widen, forge or take over this node's ipcache",
    .enabled(
      if: FileManager.default.isExecutableFile(atPath: "/usr/bin/etcdctl"),
      "needs etcdctl (etcd-client)"))
  func forgedIPCacheEntries() throws {
    let etcd = try LocalEtcdCluster(members: 1)
    defer { etcd.shutdown() }
    let a = try TesseraNode()
    defer { a.down() }
    try a.up(["--node-name", "node-a", "--identity-store", "etcd:\(etcd.endpoints)"])
    let local = try a.json([
      "endpoint", "create", "--container-id", "a1", "--ip", "10.88.1.1", "--label", "app=web",
    ])
    let web = try #require(local["identity"] as? Int)
    let other = try #require(
      a.json([
        "endpoint", "create", "--container-id", "a2", "--ip", "10.88.1.2", "--label", "app=db",
      ])["identity"] as? Int)
    let endpoint = etcd.endpoints.split(separator: ",").first.map(String.init) ?? etcd.endpoints
    let grant = try etcdctl(endpoint, ["lease", "grant", "120"])
    let lease = try #require(
      grant.split(separator: " ").dropFirst().first.map(String.init), "\(grant)")
    func put(_ key: String, _ value: String, leased: Bool = true) throws {
      _ = try etcdctl(
        endpoint,
        ["put"] + (leased ? ["--lease=\(lease)"] : []) + ["/tessera/ipcache/\(key)", value])
    }
    try put("0.0.0.0/0", #"{"identity":\#(web),"node":"evil"}"#)
    try put("10.99.0.0/16", #"{"identity":\#(web),"node":"evil"}"#)
    try put("10.88.1.1/32", #"{"identity":\#(other),"node":"evil"}"#)  // a local endpoint's address
    try put("10.88.9.1/32", #"{"identity":1,"node":"evil"}"#)  // host
    try put("10.88.9.2/32", #"{"identity":2,"node":"evil"}"#)  // world
    try put("10.88.9.3/32", #"{"identity":16777217,"node":"evil"}"#)  // node-local scope
    try put("10.88.9.4/32", "garbage")
    try put("10.88.9.5/32", #"{"identity":\#(web),"node":"evil"}"#, leased: false)
    try put("10.88.9.6/32", #"{"identity":\#(web),"node":"evil"}"#)  // the one well-formed entry
    #expect(
      try eventually { try ipcache(a)["10.88.9.6/32"] == web },
      "a well-formed entry of another node is learned")
    let entries = try ipcache(a)
    for refused in [
      "0.0.0.0/0", "10.99.0.0/16", "10.88.9.1/32", "10.88.9.2/32", "10.88.9.3/32", "10.88.9.4/32",
      "10.88.9.5/32",
    ] {
      #expect(entries[refused] == nil, "\(refused) must not be installed: \(entries)")
    }
    #expect(
      entries["10.88.1.1/32"] == web,
      "a local endpoint's address keeps its own identity: \(entries)")
    // And stays so in later rounds of the install loop (one every 2 s at most).
    usleep(2_500_000)
    #expect(try ipcache(a)["10.88.1.1/32"] == web)
    // The claim on a local address is ignored, and the local pod's delete does not hand it over either
    // until the claim is made again by a well-formed entry of a live node.
    try a.cli(["endpoint", "delete", "--container-id", "a1"])
    #expect(
      try eventually { try ipcache(a)["10.88.1.1/32"] == other },
      "once the address is not local, the other node's valid claim applies")
  }

  @Test(
    "one rule repository in etcd: an import on one node is in force on the other, a delete anywhere removes it everywhere, etcd down refuses writes"
  )
  func sharedPolicyRepository() throws {
    let etcd = try LocalEtcdCluster(members: 1)
    defer { etcd.shutdown() }
    let a = try TesseraNode()
    let b = try TesseraNode()
    defer {
      a.down()
      b.down()
    }
    let store = [
      "--identity-store", "etcd:\(etcd.endpoints)", "--policy-store", "etcd:\(etcd.endpoints)",
    ]
    try a.up(["--node-name", "node-a"] + store)
    try b.up(["--node-name", "node-b"] + store)
    #expect(
      (try b.json(["status"])["services"] as? [[String: Any]])?.contains {
        ($0["backend"] as? String)?.hasPrefix("etcd:") == true
      } == true)

    let backend = try b.json([
      "endpoint", "create", "--container-id", "b1", "--ip", "10.89.2.1", "--label", "app=backend",
    ])
    let before = try #require(backend["policyRevision"] as? Int)
    let manifest = FileManager.default.temporaryDirectory.appendingPathComponent(
      "shared-\(UUID().uuidString.prefix(8)).yaml"
    ).path
    defer { try? FileManager.default.removeItem(atPath: manifest) }
    try """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: shared-backend, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: backend}}
      ingress:
      - fromEndpoints: [{matchLabels: {app: frontend}}]
    """.write(toFile: manifest, atomically: true, encoding: .utf8)
    try a.cli(["policy", "import", manifest])
    let onA = try a.json(["policy", "list"])
    let revision = try #require(onA["revision"] as? Int)
    #expect(
      try eventually {
        let listed = try b.json(["policy", "list"])
        return (listed["policies"] as? [[String: Any]])?.contains {
          $0["name"] as? String == "shared-backend"
        } == true
      }, "node B's policy service holds the policy imported on node A")
    #expect(
      try eventually {
        let endpoint = try b.json(["endpoint", "get", String(try #require(backend["id"] as? Int))])
        return (endpoint["policyRevision"] as? Int ?? 0) >= revision
      }, "node B's endpoint was regenerated with it (revision \(before) → \(revision))")

    // Deleted on B: gone on A too.
    try b.cli(["policy", "delete", "default/shared-backend"])
    #expect(
      try eventually {
        ((try a.json(["policy", "list"])["policies"] as? [[String: Any]]) ?? []).isEmpty
      }, "a delete on node B removes the policy on node A")

    // A selection is one transaction: both policies go in one etcd revision, on every node.
    try a.cli(["policy", "import", manifest])
    let second = manifest + ".second.yaml"
    defer { try? FileManager.default.removeItem(atPath: second) }
    try """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: other-backend, namespace: default, labels: {team: shop}}
    spec:
      endpointSelector: {matchLabels: {app: backend}}
      ingress:
      - fromEndpoints: [{matchLabels: {app: admin}}]
    """.write(toFile: second, atomically: true, encoding: .utf8)
    try a.cli(["policy", "import", second])
    #expect(
      try eventually {
        ((try b.json(["policy", "list"])["policies"] as? [[String: Any]]) ?? []).count == 2
      })
    let before2 = try #require(try b.json(["policy", "list"])["revision"] as? Int)
    let selected = try b.json(["policy", "delete", "-l", "io.cilium.k8s.policy.namespace=default"])
    #expect(
      selected["deleted"] as? [String] == ["default/other-backend", "default/shared-backend"])
    #expect(selected["revision"] as? Int == before2 + 1, "one etcd revision for the selection")
    #expect(
      try eventually {
        ((try a.json(["policy", "list"])["policies"] as? [[String: Any]]) ?? []).isEmpty
      }, "a selection deleted on node B is gone on node A")

    // etcd down: a write is refused as retryable, and what each node holds stays.
    try a.cli(["policy", "import", manifest])
    etcd.stopAll()
    let refused = try b.cli(["policy", "delete", "default/shared-backend"], expectSuccess: false)
    #expect(refused.status != 0)
    #expect(
      refused.output.lowercased().contains("unavailable") || refused.output.contains("unreachable"),
      "\(refused.output)")
    #expect(((try b.json(["policy", "list"])["policies"] as? [[String: Any]]) ?? []).count == 1)
  }

  @Test(
    "namespace and workload labels are stored once for the cluster: set on one node, they re-label the other node's pods"
  )
  func clusterMetadata() throws {
    let etcd = try LocalEtcdCluster(members: 1)
    defer { etcd.shutdown() }
    let a = try TesseraNode()
    let b = try TesseraNode()
    defer {
      a.down()
      b.down()
    }
    try a.up(["--node-name", "node-a", "--identity-store", "etcd:\(etcd.endpoints)"])
    try b.up(["--node-name", "node-b", "--identity-store", "etcd:\(etcd.endpoints)"])
    let pod = try b.json([
      "endpoint", "create", "--container-id", "b1", "--ip", "10.88.5.1", "--namespace", "team",
      "--pod", "api-1", "--label", "app=api",
    ])
    let before = try #require(pod["identity"] as? Int)
    let propagated = "k8s:io.cilium.k8s.namespace.labels.env=prod"

    try a.cli(["namespace", "set", "team", "env=prod"])
    func labelsOnB() throws -> [String] {
      try b.json(["endpoint", "get", "--container-id", "b1"])["labels"] as? [String] ?? []
    }
    #expect(
      try eventually { try labelsOnB().contains(propagated) },
      "node B's pod carries the namespace label set on node A")
    let after = try #require(
      try b.json(["endpoint", "get", "--container-id", "b1"])["identity"] as? Int)
    #expect(after != before, "new labels, new identity")
    let listedOnB = try b.json(["namespace", "list"])["namespaces"] as? [[String: Any]] ?? []
    #expect(listedOnB.contains { $0["name"] as? String == "team" })

    try a.cli(["workload", "set", "team/api-2", "tier=backend"])
    #expect(
      try eventually {
        (try? b.json(["workload", "get", "team/api-2"]))?["labels"] as? [String] != nil
      }, "a workload set on node A is known on node B")

    try b.cli(["namespace", "delete", "team"])
    #expect(
      try eventually { try !labelsOnB().contains(propagated) },
      "deleting it on node B removes the label")
    #expect(
      try eventually {
        (try a.json(["namespace", "list"])["namespaces"] as? [[String: Any]] ?? []).isEmpty
      }, "and node A no longer has it")

    // etcd down: a change is refused as retryable, and the pods keep their labels.
    etcd.stopAll()
    let refused = try a.cli(["namespace", "set", "team", "env=dev"], expectSuccess: false)
    #expect(refused.status != 0 && refused.output.contains("unavailable"), "\(refused.output)")
  }

  @Test("a bad --identity-store is refused with a clear error before anything starts")
  func badStore() throws {
    let node = try TesseraNode()
    defer { node.down() }
    for bad in ["etcd:", "etcd:http://nohost", "consul:http://x:1"] {
      let (status, output) = try node.cli(
        [
          "node", "up", "--detach", "--no-supervise", "--state-dir", node.stateDir,
          "--datapath-backend", "memory",
          "--identity-store", bad,
        ], expectSuccess: false)
      #expect(status != 0, "\(bad)")
      #expect(output.contains("identity-store") || output.contains("etcd"), "\(bad): \(output)")
      #expect(
        try node.cli(["status"], expectSuccess: false).status != 0,
        "nothing left running after \(bad)")
    }
  }
}
