import Foundation
import LocalCluster
import LocalEtcd
import TesseraRuntime

extension LocalClusterLauncher {
  /// What `up` needs before it touches anything, checked in the order an operator fixes them.
  struct Preflight {
    var binaries: String
    var cniPlugin: String?

    /// The `tessera-cni` to use: the flag's, else next to `tessera`, the source
    /// tree's `.build-cni`, then the CNI directories.
    func locateCNIPlugin() throws -> String {
      if let cniPlugin {
        guard FileManager.default.isExecutableFile(atPath: cniPlugin) else {
          throw LocalClusterError(.missingDependency, "--cni-plugin \(cniPlugin) is not executable")
        }
        return cniPlugin
      }
      var candidates = ["\(binaries)/tessera-cni"]
      var directory = URL(fileURLWithPath: binaries)
      for _ in 0..<4 {
        directory.deleteLastPathComponent()
        candidates.append(directory.appendingPathComponent(".build-cni/tessera-cni").path)
      }
      candidates += LocalClusterLauncher.cniPluginDirectories.map { "\($0)/tessera-cni" }
      guard let found = candidates.first(where: FileManager.default.isExecutableFile(atPath:))
      else {
        throw LocalClusterError(
          .missingDependency,
          "tessera-cni not found (looked in \(candidates.joined(separator: ", "))): build it with `make -C Sources/tessera-cni` or pass --cni-plugin"
        )
      }
      return found
    }

    /// Root, the tools, bpffs and the executables; returns the `tessera-cni` to use.
    func check() throws -> String {
      guard getuid() == 0 else {
        throw LocalClusterError(
          .notRoot,
          "tessera node up --cluster needs root: it creates network namespaces and loads eBPF programs (run it with sudo)"
        )
      }
      guard LocalEtcdCluster.executable != nil else {
        throw LocalClusterError(
          .missingDependency, "etcd not found: install etcd-server (scripts/install-deps.sh)")
      }
      _ = try LocalClusterLauncher.tool("openssl")
      _ = try LocalClusterLauncher.tool("ip")
      guard
        LocalClusterLauncher.cniPluginDirectories.contains(where: {
          FileManager.default.isExecutableFile(atPath: "\($0)/host-local")
        })
      else {
        throw LocalClusterError(
          .missingDependency,
          "the host-local CNI plugin is missing from /usr/lib/cni and /opt/cni/bin: install containernetworking-plugins (scripts/install-deps.sh)"
        )
      }
      // The datapath pins its maps under /sys/fs/bpf.
      let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
      guard
        mounts.split(separator: "\n").contains(where: {
          let fields = $0.split(separator: " ")
          return fields.count > 2 && fields[1] == "/sys/fs/bpf" && fields[2] == "bpf"
        })
      else {
        throw LocalClusterError(
          .missingDependency,
          "bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)")
      }
      for service in TesseraService.startOrder {
        let executable = "\(binaries)/\(service.executableName)"
        guard FileManager.default.isExecutableFile(atPath: executable) else {
          throw LocalClusterError(
            .missingDependency,
            "\(executable) not found; build with scripts/build.sh or pass --bin-dir")
        }
      }
      return try locateCNIPlugin()
    }
  }

  /// Loopback ports for `configuration`: from `--base-port` if given (each one
  /// checked free), else free ones chosen by the kernel.
  static func ports(for configuration: ClusterPlan.Configuration) throws -> [Int] {
    guard let base = configuration.basePort else {
      do { return try LocalEtcdCluster.freePorts(configuration.portCount) } catch {
        throw LocalClusterError(.portBusy, "no free loopback ports", cause: error)
      }
    }
    let ports = Array(base..<(base + configuration.portCount))
    for port in ports where (try? LocalEtcdCluster.bindable(port..<(port + 1))) != true {
      throw LocalClusterError(
        .portBusy,
        "port \(port) on 127.0.0.1 is in use (the cluster needs \(ports.first!)-\(ports.last!)): pick another --base-port, or omit it for free ports"
      )
    }
    return ports
  }

  /// Refuses a run directory that holds a running cluster or node; clears a
  /// stopped cluster's leftovers (a new cluster starts empty: etcd's member
  /// list and the certificates name the old ports).
  static func prepare(root: String) async throws {
    if let old = try ClusterPlan.load(root: root) {
      let running = LocalClusterTeardown(plan: old).runningProcesses()
      guard running.isEmpty else {
        throw LocalClusterError(
          .alreadyRunning,
          "a cluster is already running in \(root) (\(running.map { "\($0.name) pid \($0.pid)" }.prefix(3).joined(separator: ", "))\(running.count > 3 ? ", ..." : "")): run `tessera node down --cluster --run-dir \(root)` first"
        )
      }
      _ = try await LocalClusterTeardown(plan: old).stop(output: nil)
      for item in ["cluster.json", "etcd", "pki", "control", "nodes", "restarts.json"] {
        try? FileManager.default.removeItem(atPath: "\(root)/\(item)")
      }
    }
    let run = RunDirectory(path: root)
    for service in TesseraService.startOrder {
      if let pid = runningPID(run, service) {
        throw LocalClusterError(
          .alreadyRunning,
          "\(root) holds a running single node (\(service.executableName), pid \(pid)): pick another --run-dir for the cluster"
        )
      }
    }
  }
}
