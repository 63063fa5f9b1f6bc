import ArgumentParser
import Foundation
import LocalCluster
import LocalEtcd
import TesseraRuntime

/// `tessera node status --cluster` (and `tessera status` on a cluster's run
/// directory): every etcd member, replica and node daemon with its health, pid,
/// address or run directory, and restarts by a foreground supervisor.
struct LocalClusterStatus {
  var plan: ClusterPlan
  var global: GlobalOptions

  func show() async throws {
    let restarts = NodeSupervisor.restarts(RunDirectory(path: plan.root))
    var rows: [[String: Any]] = []
    for member in plan.etcd {
      let pid = LocalClusterTeardown(plan: plan).runningProcesses()
        .first { $0.name == "etcd-\(member.name)" }?.pid
      var row: [String: Any] = [
        "component": "etcd-\(member.name)", "kind": "etcd", "address": member.clientURL,
        "health": pid == nil
          ? "down"
          : LocalEtcdCluster.isHealthy(clientPort: member.clientPort) ? "serving" : "not-serving",
        "log": member.log,
      ]
      if let pid { row["pid"] = Int(pid) }
      rows.append(row)
    }
    for replica in plan.identity + plan.policy {
      let service: TesseraService = replica.service == "identity" ? .identity : .policy
      var row = await Status.probe(
        service, in: RunDirectory(path: replica.runDirectory), timeout: min(global.timeout, 5))
      row["component"] = replica.name
      row["kind"] = service.rawValue
      row["address"] = replica.address
      row["runDir"] = replica.runDirectory
      row["log"] = RunDirectory(path: replica.runDirectory).logPath(for: service)
      rows.append(row)
    }
    for node in plan.nodes {
      for service in [TesseraService.datapath, .endpoint] {
        var row = await Status.probe(
          service, in: RunDirectory(path: node.runDirectory), timeout: min(global.timeout, 5))
        row["component"] = "\(node.name)/\(service.rawValue)"
        row["kind"] = service.rawValue
        row["node"] = node.name
        row["runDir"] = node.runDirectory
        row["log"] = RunDirectory(path: node.runDirectory).logPath(for: service)
        rows.append(row)
      }
    }
    for index in rows.indices {
      rows[index]["restarts"] = restarts[rows[index]["component"] as? String ?? ""] ?? 0
      // A component's own name is enough: the probe's service is the kind.
      rows[index]["service"] = nil
    }
    let healthy = rows.allSatisfy { $0["health"] as? String == "serving" }
    if global.output == .json {
      try printJSON([
        "cluster": plan.root, "healthy": healthy, "components": rows,
        "nodes": plan.nodes.map {
          ["name": $0.name, "runDir": $0.runDirectory, "podSubnet": $0.podSubnet]
        },
      ])
    } else {
      printTable(
        ["COMPONENT", "HEALTH", "PID", "RESTARTS", "ADDRESS / RUN DIR"],
        rows.map {
          [
            $0["component"] as? String ?? "", $0["health"] as? String ?? "",
            ($0["pid"] as? Int).map(String.init) ?? "-", String($0["restarts"] as? Int ?? 0),
            ($0["address"] as? String) ?? ($0["runDir"] as? String ?? ""),
          ]
        })
    }
    if !healthy { throw ExitCode(1) }
  }
}
