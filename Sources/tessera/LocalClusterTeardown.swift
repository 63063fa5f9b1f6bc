import Foundation
import LocalCluster
import TesseraRuntime

/// Stops what `tessera node up --cluster` made, and only that: the pods made
/// with the nodes' `pod` helpers (CNI DEL), the cluster's network namespaces,
/// every daemon and etcd member, and the BPF pins (which outlive the daemons on
/// purpose, so they go last). Running it twice is harmless.
struct LocalClusterTeardown {
  var plan: ClusterPlan

  /// One process of the cluster that is alive.
  struct Running {
    var name: String
    var pid: Int32
  }

  /// What `stop` did, for the summary.
  struct Report {
    var supervisor: Int32?
    var pods: [String] = []
    var namespaces: [String] = []
    var processes: [Running] = []
    var pins: String?
    var isEmpty: Bool {
      supervisor == nil && pods.isEmpty && namespaces.isEmpty && processes.isEmpty && pins == nil
    }
  }

  /// The cluster's processes that are alive, in stop order (nodes first, etcd last).
  func runningProcesses() -> [Running] {
    var running: [Running] = []
    for node in plan.nodes {
      for service in [TesseraService.endpoint, .datapath] {
        if let pid = runningPID(RunDirectory(path: node.runDirectory), service) {
          running.append(Running(name: "\(node.name)/\(service.rawValue)", pid: pid))
        }
      }
    }
    for replica in plan.policy + plan.identity {
      let service: TesseraService = replica.service == "identity" ? .identity : .policy
      if let pid = runningPID(RunDirectory(path: replica.runDirectory), service) {
        running.append(Running(name: replica.name, pid: pid))
      }
    }
    for member in plan.etcd {
      if let text = try? String(contentsOfFile: member.pidFile, encoding: .utf8),
        let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), isRunning(pid),
        Self.commandLine(pid).contains(member.dataDirectory)
      {
        running.append(Running(name: "etcd-\(member.name)", pid: pid))
      }
    }
    return running
  }

  /// The cluster's network namespaces that exist (`ip netns` keeps them in /run/netns).
  func namespaces() -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
    return names.filter { $0.hasPrefix(plan.netnsPrefix) }.sorted()
  }

  /// Stops everything; `output` nil prints nothing (a new `up` clearing leftovers).
  func stop(output: OutputFormat?) async throws -> Report {
    var report = Report()
    func say(_ line: String) {
      if output == .table { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
    }
    // A foreground cluster's supervisor would restart what is stopped here: it
    // goes first, and runs this same teardown itself before it exits.
    let supervisorFile = NodeSupervisor.pidPath(RunDirectory(path: plan.root))
    if let text = try? String(contentsOfFile: supervisorFile, encoding: .utf8),
      let supervisor = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
      supervisor != getpid(), isRunning(supervisor)
    {
      kill(supervisor, SIGTERM)
      let deadline = ContinuousClock.now + .seconds(60)
      while isRunning(supervisor) && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(50))
      }
      report.supervisor = supervisor
      say("stopped the foreground cluster (supervisor pid \(supervisor))")
    }
    // Pods first, while their nodes still answer: DEL releases their identities.
    for node in plan.nodes where FileManager.default.isExecutableFile(atPath: node.podScript) {
      let pods = ((try? FileManager.default.contentsOfDirectory(atPath: node.cniDirectory)) ?? [])
        .filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
      for pod in pods {
        _ = try? LocalClusterLauncher.runTool("/bin/bash", [node.podScript, "del", pod])
        report.pods.append("\(node.name)/\(pod)")
        say("pod \(pod) deleted from \(node.name)")
      }
    }
    // Deleting a namespace deletes its veth pair, and with the host end the tc programs on it.
    if let ip = try? LocalClusterLauncher.tool("ip") {
      for namespace in namespaces() {
        _ = try? LocalClusterLauncher.runTool(ip, ["netns", "del", namespace])
        report.namespaces.append(namespace)
        say("network namespace \(namespace) removed")
      }
    }
    for process in runningProcesses() {
      try await terminate(process.pid)
      report.processes.append(process)
      say("\(process.name) stopped (pid \(process.pid))")
    }
    if FileManager.default.fileExists(atPath: plan.pinRoot) {
      do {
        try FileManager.default.removeItem(atPath: plan.pinRoot)
        report.pins = plan.pinRoot
        say("pinned maps and programs under \(plan.pinRoot) removed")
      } catch {
        throw LocalClusterError(.layout, "cannot remove \(plan.pinRoot)", cause: error)
      }
    }
    return report
  }

  /// `/proc/PID/cmdline` with spaces: tells our etcd from another process that reused its pid.
  static func commandLine(_ pid: Int32) -> String {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
    return String(decoding: data.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
  }
}
