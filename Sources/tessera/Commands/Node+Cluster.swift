import Foundation
import LocalCluster
import TesseraRuntime

extension NodeUp {
  /// `node up --cluster`: checks, lays out, starts, prints the summary, then
  /// (in the foreground) supervises every process like a single node's.
  func runCluster() async throws {
    let configuration = clusterConfiguration
    let binaries = binDir ?? Self.ownDirectory
    let cni = try LocalClusterLauncher.Preflight(binaries: binaries, cniPlugin: cniPlugin).check()
    try await LocalClusterLauncher.prepare(root: configuration.root)
    let plan = try ClusterPlan(configuration, ports: LocalClusterLauncher.ports(for: configuration))
    try FileManager.default.createDirectory(
      atPath: plan.root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
    try plan.save()
    var launcher = LocalClusterLauncher(
      plan: plan, binaries: binaries, cniPlugin: cni, logFormat: logFormat, logLevel: logLevel,
      output: global.output)
    let supervisor = NodeSupervisor()
    do {
      try await launcher.start(onExit: detach ? nil : supervisor.daemonExited)
    } catch {
      // Nothing half-made stays: what started is stopped, pins and namespaces go.
      for pid in launcher.pids.reversed() where isRunning(pid) { try? await terminate(pid) }
      _ = try? await LocalClusterTeardown(plan: plan).stop(output: nil)
      throw error
    }
    try launcher.printSummary(detached: detach)
    guard !detach else { return }
    let started = launcher
    try await supervisor.supervise(
      started.launches,
      pids: Dictionary(uniqueKeysWithValues: zip(started.pids, started.launches.map(\.name))),
      run: RunDirectory(path: plan.root),
      waitHealthy: { launch, pid in try await started.waitHealthy(launch, pid) },
      stopAll: {
        _ = try await LocalClusterTeardown(plan: plan).stop(output: .table)
        print("cluster in \(plan.root) stopped (logs kept there)")
      })
  }
}
