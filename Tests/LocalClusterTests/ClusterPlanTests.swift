import Foundation
import Testing

@testable import LocalCluster

/// The layout `tessera node up --cluster` starts, and the inputs it refuses.
@Suite("Local cluster plan")
struct ClusterPlanTests {
  func configuration(
    nodes: Int = 2, identity: Int = 2, policy: Int = 2, etcd: Int = 1,
    root: String = "/run/tsr-test", cidr: String = "10.199.0.0/16", basePort: Int? = nil
  ) -> ClusterPlan.Configuration {
    ClusterPlan.Configuration(
      nodes: nodes, identityReplicas: identity, policyReplicas: policy, etcdMembers: etcd,
      root: root, podCIDR: cidr, basePort: basePort)
  }

  func code(_ configuration: ClusterPlan.Configuration) -> LocalClusterError.Code? {
    do {
      try configuration.validate()
      return nil
    } catch { return error.code }
  }

  @Test("the defaults are valid: 2 nodes, 2 + 2 replicas, 1 etcd member")
  func defaults() throws {
    let defaults = ClusterPlan.Configuration.defaults
    #expect(code(defaults) == nil)
    #expect(defaults.nodes == 2 && defaults.identityReplicas == 2 && defaults.policyReplicas == 2)
    #expect(defaults.etcdMembers == 1)
  }

  @Test("--nodes is bounded to 1...16, with the flag named", arguments: [0, -1, 17, 100])
  func nodesBounded(nodes: Int) throws {
    #expect(code(configuration(nodes: nodes)) == .invalidArgument)
    #expect(throws: LocalClusterError.self) { try configuration(nodes: nodes).validate() }
    do { try configuration(nodes: nodes).validate() } catch {
      #expect(error.message == "--nodes must be 1 to 16, not \(nodes)")
    }
    #expect(code(configuration(nodes: 16)) == nil)
    #expect(code(configuration(nodes: 1)) == nil)
  }

  @Test("etcd has 1 or 3 members; replicas 1...5")
  func membersAndReplicas() {
    for members in [0, 2, 4, 5] { #expect(code(configuration(etcd: members)) == .invalidArgument) }
    #expect(code(configuration(etcd: 3)) == nil)
    #expect(code(configuration(identity: 0)) == .invalidArgument)
    #expect(code(configuration(policy: 6)) == .invalidArgument)
    #expect(code(configuration(identity: 1, policy: 3)) == nil)
  }

  @Test("the run dir is absolute, the pod CIDR an IPv4 /16, the ports fit")
  func pathsAndAddresses() {
    #expect(code(configuration(root: "relative/dir")) == .invalidArgument)
    #expect(code(configuration(root: "/")) == .invalidArgument)
    for cidr in ["10.199.0.0/24", "10.199.1.0/16", "fd00::/16", "10.300.0.0/16", "10.199.0.0"] {
      #expect(code(configuration(cidr: cidr)) == .invalidArgument, "\(cidr)")
    }
    #expect(code(configuration(cidr: "172.30.0.0/16")) == nil)
    #expect(code(configuration(basePort: 80)) == .invalidArgument)
    #expect(code(configuration(basePort: 65531)) == .invalidArgument)
    #expect(code(configuration(basePort: 65535 - 5)) == nil)  // 2 etcd + 4 replica ports
  }

  @Test("ports: two per etcd member, one per replica, in order")
  func ports() throws {
    let config = configuration(nodes: 3, identity: 2, policy: 1, etcd: 3)
    #expect(config.portCount == 9)
    let plan = try ClusterPlan(config, ports: Array(20000..<20009))
    #expect(plan.etcd.map(\.clientPort) == [20000, 20002, 20004])
    #expect(plan.etcd.map(\.peerPort) == [20001, 20003, 20005])
    #expect(plan.identityAddresses == "127.0.0.1:20006,127.0.0.1:20007")
    #expect(plan.policyAddresses == "127.0.0.1:20008")
    #expect(
      plan.etcdStore
        == "etcd:http://127.0.0.1:20000,http://127.0.0.1:20002,http://127.0.0.1:20004")
    #expect(
      plan.etcdInitialCluster
        == "m1=http://127.0.0.1:20001,m2=http://127.0.0.1:20003,m3=http://127.0.0.1:20005")
    #expect(throws: LocalClusterError.self) { try ClusterPlan(config, ports: [1, 2]) }
  }

  @Test("each node has its own run, state, pin and CNI directories, subnet and namespaces")
  func nodes() throws {
    let plan = try ClusterPlan(configuration(nodes: 3, root: "/run/tsr-test/"), ports: Array(1..<7))
    #expect(plan.root == "/run/tsr-test")
    #expect(plan.nodes.map(\.name) == ["node-1", "node-2", "node-3"])
    #expect(plan.nodes[0].runDirectory == "/run/tsr-test/nodes/node-1")
    #expect(plan.nodes[0].stateDirectory == "/run/tsr-test/nodes/node-1/state")
    #expect(plan.nodes.map(\.podSubnet) == ["10.199.1.0/24", "10.199.2.0/24", "10.199.3.0/24"])
    #expect(Set(plan.nodes.map(\.pinDirectory)).count == 3)
    #expect(plan.nodes.allSatisfy { $0.pinDirectory.hasPrefix(plan.pinRoot + "/") })
    #expect(plan.pinRoot.hasPrefix("/sys/fs/bpf/tessera-cluster-"))
    #expect(Set(plan.nodes.map(\.netnsPrefix)).count == 3)
    #expect(plan.nodes.allSatisfy { $0.netnsPrefix.hasPrefix(plan.netnsPrefix) })
    #expect(
      plan.certificateNames == [
        "identity-1", "identity-2", "policy-1", "policy-2", "node-1", "node-2", "node-3",
      ])
  }

  @Test(
    "two run directories never share namespaces or pins; one run directory always gets the same")
  func tags() throws {
    let a = try ClusterPlan(configuration(root: "/run/a"), ports: Array(1..<7))
    let b = try ClusterPlan(configuration(root: "/run/b"), ports: Array(1..<7))
    let again = try ClusterPlan(configuration(root: "/run/a"), ports: Array(11..<17))
    #expect(a.tag != b.tag && a.pinRoot != b.pinRoot && a.netnsPrefix != b.netnsPrefix)
    #expect(a.tag == again.tag && a.tag.count == 6)
  }

  @Test("replicas share run directories by index; a node's CLI reaches one of each")
  func replicas() throws {
    let plan = try ClusterPlan(configuration(nodes: 3, identity: 2, policy: 1), ports: Array(1..<6))
    #expect(plan.identity[0].runDirectory == plan.policy[0].runDirectory)
    #expect(plan.hasPolicyBeside(plan.identity[0]))
    #expect(!plan.hasPolicyBeside(plan.identity[1]))
    #expect(plan.replica(of: "identity", for: plan.nodes[1])?.name == "identity-2")
    #expect(plan.replica(of: "identity", for: plan.nodes[2])?.name == "identity-1")
    #expect(plan.replica(of: "policy", for: plan.nodes[1])?.name == "policy-1")
  }

  @Test("the plan survives cluster.json")
  func roundTrip() throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-plan-\(UUID().uuidString.prefix(8))"
    ).path
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: root) }
    #expect(try ClusterPlan.load(root: root) == nil)
    let plan = try ClusterPlan(configuration(root: root), ports: Array(1..<7))
    try plan.save()
    #expect(try ClusterPlan.load(root: root) == plan)
    try Data("{".utf8).write(to: URL(fileURLWithPath: ClusterPlan.manifestPath(root: root)))
    #expect(throws: LocalClusterError.self) { try ClusterPlan.load(root: root) }
  }

  @Test("the pod helper talks to its own node's socket, subnet and namespaces")
  func podScript() throws {
    let plan = try ClusterPlan(configuration(), ports: Array(1..<7))
    let script = plan.podScript(
      for: plan.nodes[1], cniPlugin: "/x/tessera-cni", pluginDirectories: ["/x", "/usr/lib/cni"])
    #expect(script.hasPrefix("#!/usr/bin/env bash\n"))
    #expect(script.contains("SOCKET='/run/tsr-test/nodes/node-2/endpoint.sock'"))
    #expect(script.contains("SUBNET='10.199.2.0/24'"))
    #expect(script.contains(#"ROUTES='[{"dst":"10.199.0.0/16"}]'"#))
    #expect(script.contains("PREFIX='\(plan.nodes[1].netnsPrefix)'"))
    #expect(script.contains("CNI_DIRS='/x:/usr/lib/cni'"))
  }
}
