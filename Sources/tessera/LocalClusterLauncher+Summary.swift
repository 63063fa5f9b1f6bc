import Foundation
import LocalCluster
import TesseraRuntime

extension LocalClusterLauncher {
  /// What an operator needs next: every address, each node's run directory
  /// and how to use it, where the logs are.
  func printSummary(detached: Bool) throws {
    let root = plan.root
    if output == .json {
      try printJSON([
        "runDir": root,
        "etcd": plan.etcd.map { ["name": $0.name, "address": $0.clientURL, "log": $0.log] },
        "identity": plan.identity.map {
          ["name": $0.name, "address": $0.address, "runDir": $0.runDirectory]
        },
        "policy": plan.policy.map {
          ["name": $0.name, "address": $0.address, "runDir": $0.runDirectory]
        },
        "nodes": plan.nodes.map {
          [
            "name": $0.name, "runDir": $0.runDirectory, "podSubnet": $0.podSubnet,
            "bpfPinDir": $0.pinDirectory, "netnsPrefix": $0.netnsPrefix, "podHelper": $0.podScript,
          ]
        },
        "ca": plan.caFile,
        "pids": Dictionary(uniqueKeysWithValues: zip(launches.map(\.name), pids.map(Int.init))),
      ])
      return
    }
    let first = plan.nodes[0]
    let second = plan.nodes.count > 1 ? plan.nodes[1] : first
    var lines = [
      "",
      "Local cluster up in \(root): \(plan.etcd.count) etcd member(s), \(plan.identity.count) identity + \(plan.policy.count) policy replica(s) on mutual TLS, \(plan.nodes.count) node(s) on eBPF.",
      "",
      "  etcd      \(plan.etcd.map(\.clientURL).joined(separator: ","))",
      "  identity  \(plan.identity.map { "\($0.name) \($0.address)" }.joined(separator: ", "))",
      "  policy    \(plan.policy.map { "\($0.name) \($0.address)" }.joined(separator: ", "))",
      "  mTLS      CA \(plan.caFile); one certificate per replica and node in \(plan.pkiDirectory) (SAN = its name)",
      "",
    ]
    for node in plan.nodes {
      lines.append(
        "  \(node.name)    run dir \(node.runDirectory)  pods \(node.podSubnet)  pins \(node.pinDirectory)"
      )
    }
    lines += [
      "",
      "Try it:",
      "  \(first.podScript) add web app=web                # a pod on \(first.name), through tessera-cni",
      "  \(second.podScript) add client app=client         # one on \(second.name)",
      "  \(second.podScript) exec client nc -z -w 1 $(\(first.podScript) ip web) 80",
      "  tessera --run-dir \(first.runDirectory) endpoint list",
      "  tessera --run-dir \(first.runDirectory) policy import POLICY.yaml   # one import reaches every node",
      "  tessera node status --cluster --run-dir \(root)",
      "  tessera node down --cluster --run-dir \(root)",
      "",
      "Logs: \(root)/etcd/*.log, \(root)/control/replica-*/{identity,policy}.log, \(root)/nodes/node-*/{datapath,endpoint}.log",
      detached
        ? "Detached: the processes keep running; `tessera node down --cluster --run-dir \(root)` stops them."
        : "Supervising every process (restarted with backoff when it exits); Ctrl-C stops the cluster and cleans up.",
    ]
    FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
  }
}
