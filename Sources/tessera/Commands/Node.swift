import ArgumentParser
import Foundation
import GRPCCore
import LocalCluster
import TesseraEtcd
import TesseraProto
import TesseraRuntime

struct Node: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Start, stop or check this node's four daemons, or a whole local cluster (--cluster).",
    subcommands: [NodeUp.self, NodeDown.self, NodeStatus.self])
}

struct NodeUp: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "up",
    abstract: "Start the four daemons as separate processes and wait until they are healthy.",
    discussion: """
      With --cluster, start a whole local cluster for trying Tessera out (as root): etcd, \
      identity and policy replicas on loopback TCP with mutual TLS, and --nodes nodes \
      (endpointd + datapathd on eBPF, each with its own run directory under \
      <run-dir>/nodes, pin directory and pod subnet). Default run directory: \
      /run/tessera-cluster.
      """)

  @OptionGroup var global: GlobalOptions

  @Flag(
    help:
      "Return once healthy and leave the daemons running, supervised by a `tessera node up` in the background (restarts, as in the foreground; `tessera node down` stops it)."
  )
  var detach = false

  @Flag(
    help:
      "With --detach: leave the daemons unsupervised (for systemd, which restarts them itself, and for tests that kill and restart daemons on purpose)."
  )
  var noSupervise = false

  @Option(help: "Directory for persistent state.")
  var stateDir: String = "/var/lib/tessera"

  @Option(help: "This node's name.")
  var nodeName: String = DaemonOptions.defaultNodeName

  @Option(
    help:
      "Datapath backend: bpf (default), memory (test backend: enforces nothing) or auto (bpf, else memory: development only)."
  )
  var datapathBackend: String = "bpf"

  @Option(help: "bpffs directory for the datapath's pinned maps and programs (one per node).")
  var bpfPinDir: String?

  @Option(
    help:
      "Flows the node's conntrack table holds (tessera-datapathd --conntrack-max-entries; default 65536)."
  )
  var conntrackMaxEntries: UInt32?

  @Option(
    help: ArgumentHelp(
      "Whether the node reaches its own pods whatever their ingress rules (tessera-policyd --allow-localhost; default always, as Kubernetes requires).",
      valueName: "always|policy"))
  var allowLocalhost: String?

  @Option(
    help:
      "Identity store: sqlite:PATH (default: <state-dir>/identity.db) or etcd:URL[,URL...] to share identities with other nodes."
  )
  var identityStore: String?

  @Option(help: "etcd key prefix (etcd identity store); every node of one cluster uses the same.")
  var etcdPrefix: String?

  @Option(
    help:
      "Rule repository: etcd:URL[,URL...] shares it with every node on that etcd (one import reaches all); default: this node's own database."
  )
  var policyStore: String?

  @OptionGroup var etcd: EtcdOptions

  @Option(
    help:
      "Serve Prometheus metrics on 127.0.0.1: identity at PORT, policy PORT+1, datapath PORT+2, endpoint PORT+3."
  )
  var metricsBasePort: Int?

  @Option(help: "Daemon log format: plain or json.")
  var logFormat: String = "plain"

  @Option(help: "Daemon log level.")
  var logLevel: String = "info"

  @Option(help: "Directory holding the tessera-*d executables (default: next to this one).")
  var binDir: String?

  @Flag(
    help:
      "Start a whole local cluster: etcd, identity and policy replicas on mutual TLS, and --nodes nodes."
  )
  var cluster = false

  @Option(help: "Nodes of the --cluster (1-\(ClusterPlan.Configuration.maxNodes); default 2).")
  var nodes: Int?

  @Option(help: "identityd replicas of the --cluster (default 2).")
  var identityReplicas: Int?

  @Option(help: "policyd replicas of the --cluster (default 2).")
  var policyReplicas: Int?

  @Option(help: "etcd members of the --cluster: 1 (default) or 3.")
  var etcdMembers: Int?

  @Option(
    help:
      "First of the consecutive loopback ports of the --cluster's etcd members and replicas (default: free ports)."
  )
  var basePort: Int?

  @Option(help: "IPv4 /16 of the --cluster's pods; node N gets a.b.N.0/24 (default 10.199.0.0/16).")
  var podCIDR: String?

  @Option(help: "tessera-cni for the --cluster's pod helpers (default: found next to tessera).")
  var cniPlugin: String?

  /// The --cluster flags as a layout request.
  var clusterConfiguration: ClusterPlan.Configuration {
    let defaults = ClusterPlan.Configuration.defaults
    return ClusterPlan.Configuration(
      nodes: nodes ?? defaults.nodes,
      identityReplicas: identityReplicas ?? defaults.identityReplicas,
      policyReplicas: policyReplicas ?? defaults.policyReplicas,
      etcdMembers: etcdMembers ?? defaults.etcdMembers, root: clusterRoot(global),
      podCIDR: podCIDR ?? defaults.podCIDR, basePort: basePort)
  }

  func validate() throws {
    guard ["bpf", "memory", "auto"].contains(datapathBackend) else {
      throw ValidationError(
        "--datapath-backend must be bpf, memory or auto, not '\(datapathBackend)'")
    }
    guard cluster else {
      let clusterOnly: [(String, Any?)] = [
        ("--nodes", nodes), ("--identity-replicas", identityReplicas),
        ("--policy-replicas", policyReplicas), ("--etcd-members", etcdMembers),
        ("--base-port", basePort), ("--pod-cidr", podCIDR), ("--cni-plugin", cniPlugin),
      ]
      if let (flag, _) = clusterOnly.first(where: { $0.1 != nil }) {
        throw ValidationError("\(flag) goes with --cluster")
      }
      return
    }
    let nodeOnly: [(String, String?)] = [
      ("--identity-store", identityStore), ("--policy-store", policyStore),
      ("--bpf-pin-dir", bpfPinDir), ("--etcd-prefix", etcdPrefix),
      ("--conntrack-max-entries", conntrackMaxEntries.map(String.init)),
      ("--allow-localhost", allowLocalhost),
    ]
    if let (flag, _) = nodeOnly.first(where: { $0.1 != nil }) {
      throw ValidationError("\(flag) is for a single node; --cluster lays out its own")
    }
    guard datapathBackend == "bpf" else {
      throw ValidationError("--cluster runs the bpf datapath: its pods are real")
    }
    do { try clusterConfiguration.validate() } catch { throw ValidationError(error.message) }
  }

  func run() async throws {
    if cluster {
      do { return try await runCluster() } catch let error as LocalClusterError {
        throw CLIError(error.description)
      }
    }
    let run = global.runDirectory
    try run.create()
    if detach, !noSupervise { return try await detachSupervised(run) }
    let binaries = binDir ?? Self.ownDirectory
    var started: [Int32] = []
    var launches: [DaemonLaunch] = []
    // Restarts the foreground node's daemons when they exit; unused with --detach.
    let supervisor = NodeSupervisor()
    for service in TesseraService.startOrder {
      if let pid = runningPID(run, service) {
        throw CLIError(
          "\(service.executableName) is already running (pid \(pid)) in \(run.path); run `tessera node down` first"
        )
      }
    }
    for service in TesseraService.startOrder {
      let executable = "\(binaries)/\(service.executableName)"
      guard FileManager.default.isExecutableFile(atPath: executable) else {
        throw CLIError("\(executable) not found; build with scripts/build.sh or pass --bin-dir")
      }
      var arguments = [
        "--run-dir", run.path, "--state-dir", stateDir, "--node-name", nodeName,
        "--log-format", logFormat, "--log-level", logLevel,
      ]
      if let metricsBasePort, let offset = TesseraService.startOrder.firstIndex(of: service) {
        arguments += ["--metrics-address", "127.0.0.1:\(metricsBasePort + offset)"]
      }
      let sharedEtcd = identityStore?.hasPrefix(EtcdConfiguration.storeScheme) == true
      if service == .identity, let identityStore {
        arguments += ["--identity-store", identityStore]
        if let etcdPrefix { arguments += ["--etcd-prefix", etcdPrefix] }
        if sharedEtcd { arguments += etcd.arguments }
      }
      if service == .policy, let policyStore {
        arguments += ["--policy-store", policyStore] + etcd.arguments
      }
      if service == .policy, let allowLocalhost {
        arguments += ["--allow-localhost", allowLocalhost]
      }
      // Nodes that share identities share their endpoints' addresses too (the cluster ipcache).
      if service == .endpoint, sharedEtcd, let identityStore {
        arguments += ["--cluster-store", identityStore] + etcd.arguments
      }
      if service == .datapath {
        arguments += ["--backend", datapathBackend]
        if let bpfPinDir { arguments += ["--bpf-pin-dir", bpfPinDir] }
        if let conntrackMaxEntries {
          arguments += ["--conntrack-max-entries", "\(conntrackMaxEntries)"]
        }
      }
      let launch = DaemonLaunch(
        service: service, executable: executable, arguments: arguments,
        log: run.logPath(for: service))
      launches.append(launch)
      let pid = try launch.spawn(onExit: detach ? nil : supervisor.daemonExited)
      started.append(pid)
      do {
        try await waitHealthy(service, pid: pid)
      } catch {
        for pid in started.reversed() { kill(pid, SIGTERM) }
        throw CLIError("\(error) (log: \(run.logPath(for: service)))")
      }
      if global.output == .table { print("\(service.executableName) ready (pid \(pid))") }
    }
    if global.output == .json {
      try printJSON([
        "runDir": run.path,
        "pids": Dictionary(
          uniqueKeysWithValues: zip(
            TesseraService.startOrder.map(\.rawValue), started.map(Int.init))),
      ])
    }
    guard !detach else { return }
    try await supervisor.supervise(
      launches, pids: Dictionary(uniqueKeysWithValues: zip(started, launches.map(\.name))),
      run: run,
      waitHealthy: { launch, pid in
        guard let service = launch.service else { return }
        try await waitHealthy(service, pid: pid)
      },
      stopAll: { try await NodeDown.stop(run, output: .table) })
  }

  /// `--detach` with supervision: this command again, without `--detach`, in a session of
  /// its own (no terminal to lose), its output in the run directory; returns once it
  /// supervises healthy daemons.
  private func detachSupervised(_ run: RunDirectory) async throws {
    for service in TesseraService.startOrder {
      if let pid = runningPID(run, service) {
        throw CLIError(
          "\(service.executableName) is already running (pid \(pid)) in \(run.path); run `tessera node down` first"
        )
      }
    }
    let log = "\(run.path)/node-supervisor.log"
    let arguments =
      [Self.ownDirectory + "/tessera"]
      + CommandLine.arguments.dropFirst().filter { $0 != "--detach" }
    let supervisor = try spawnInOwnSession(arguments, log: log)
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
      var status: Int32 = 0
      if waitpid(supervisor, &status, WNOHANG) == supervisor {
        let tail =
          (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").suffix(8)
          .joined(separator: "\n") ?? ""
        throw CLIError("the node did not start (log \(log)):\n\(tail)")
      }
      let supervising =
        (try? String(contentsOfFile: NodeSupervisor.pidPath(run), encoding: .utf8))
        .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } == supervisor
      if supervising {
        let pids = TesseraService.startOrder.map { ($0, runningPID(run, $0) ?? 0) }
        if global.output == .json {
          try printJSON([
            "runDir": run.path, "supervisor": Int(supervisor),
            "pids": Dictionary(uniqueKeysWithValues: pids.map { ($0.0.rawValue, Int($0.1)) }),
          ])
        } else {
          for (service, pid) in pids { print("\(service.executableName) ready (pid \(pid))") }
          print(
            "supervised by tessera node up (pid \(supervisor), log \(log)); `tessera node down` stops it"
          )
        }
        return
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    kill(supervisor, SIGTERM)
    throw CLIError("the node did not become healthy within 120 s (log \(log))")
  }

  /// Starts `arguments` in a new session (setsid), stdin from /dev/null, output to `log`.
  private func spawnInOwnSession(_ arguments: [String], log: String) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o640)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    // Nothing else of ours: a caller that learns of our exit from a descriptor it gave
    // us (Foundation's Process does) must not wait for the supervisor, which outlives us.
    let inherited = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    for fd in inherited.compactMap(Int32.init) where fd > 2 {
      posix_spawn_file_actions_addclose(&actions, fd)
    }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // POSIX_SPAWN_SETSID (glibc 2.26+), which Swift's Glibc module does not export.
    let spawnSetsid: Int16 = 0x80
    posix_spawnattr_setflags(&attributes, spawnSetsid)
    var pid: pid_t = 0
    let argv = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    let result = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, environ)
    guard result == 0 else {
      throw CLIError("cannot start the node's supervisor: \(String(cString: strerror(result)))")
    }
    return pid
  }

  /// The directory of the running `tessera` executable, found through
  /// /proc/self/exe (not argv[0], which may be relative to another directory).
  static var ownDirectory: String {
    let exe =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
      ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent().path
  }

  private func waitHealthy(_ service: TesseraService, pid: Int32) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    var delay = Duration.milliseconds(10)
    while ContinuousClock.now < deadline {
      if !isRunning(pid) {
        let log = global.runDirectory.logPath(for: service)
        let tail =
          (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").suffix(5)
          .joined(separator: "\n") ?? ""
        throw CLIError("\(service.executableName) exited during startup (log \(log)):\n\(tail)")
      }
      if FileManager.default.fileExists(atPath: global.runDirectory.socketPath(for: service)) {
        let serving = try? await global.withClient(service) { client, options in
          try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init(), options: options)
            .status == .serving
        }
        if serving == true { return }
      }
      try await Task.sleep(for: delay)
      delay = min(delay * 2, .milliseconds(200))
    }
    throw CLIError("\(service.executableName) did not become healthy within 60 s")
  }
}

/// Lets exactly one of several racing callbacks act.
final class OnceFlag: @unchecked Sendable {
  // Guarded by `lock`; NSLock keeps this usable from Dispatch handlers and threads alike.
  private let lock = NSLock()
  private var claimed = false
  func claim() -> Bool {
    lock.lock()
    defer { lock.unlock() }
    if claimed { return false }
    claimed = true
    return true
  }
}

func runningPID(_ run: RunDirectory, _ service: TesseraService) -> Int32? {
  guard let text = try? String(contentsOfFile: run.pidPath(for: service), encoding: .utf8),
    let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), isRunning(pid)
  else { return nil }
  return pid
}

/// Alive and not a zombie: a detached daemon that exited stays a zombie until
/// PID 1 reaps it, which some container inits do late.
func isRunning(_ pid: Int32) -> Bool {
  guard kill(pid, 0) == 0 else { return false }
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return true }
  let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
  return state != "Z" && state != "X"
}

struct NodeDown: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "down",
    abstract: "Stop the daemons gracefully (SIGTERM, then SIGKILL after 10 s).",
    discussion:
      "On a local cluster's run directory (or with --cluster), stop the whole cluster: its pods, network namespaces, processes and pinned maps."
  )

  @OptionGroup var global: GlobalOptions

  @Flag(
    help: "Stop the local cluster of `node up --cluster` (default run dir /run/tessera-cluster).")
  var cluster = false

  func run() async throws {
    let root = cluster ? clusterRoot(global) : global.runDir
    guard let plan = try ClusterPlan.load(root: root) else {
      guard !cluster else {
        if global.output == .json {
          try printJSON(["cluster": root, "stopped": [String]()])
        } else {
          print("no cluster in \(root): nothing to stop")
        }
        return
      }
      return try await Self.stop(global.runDirectory, output: global.output)
    }
    let report: LocalClusterTeardown.Report
    do { report = try await LocalClusterTeardown(plan: plan).stop(output: global.output) } catch let
      error as LocalClusterError
    { throw CLIError(error.description) }
    if global.output == .json {
      try printJSON([
        "cluster": root, "stopped": report.processes.map(\.name), "pods": report.pods,
        "namespaces": report.namespaces, "pins": report.pins ?? "",
      ])
    } else if report.isEmpty {
      print("no cluster running in \(root): nothing to stop")
    } else {
      print("cluster in \(root) stopped (logs kept there)")
    }
  }

  static func stop(_ run: RunDirectory, output: OutputFormat) async throws {
    // A foreground node's supervisor would restart what is stopped here: it goes
    // first, and stops the daemons itself.
    if let text = try? String(contentsOfFile: NodeSupervisor.pidPath(run), encoding: .utf8),
      let supervisor = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
      supervisor != getpid(), isRunning(supervisor)
    {
      kill(supervisor, SIGTERM)
      let deadline = ContinuousClock.now + .seconds(45)
      while isRunning(supervisor) && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(50))
      }
      if output == .table { print("stopped the foreground node (supervisor pid \(supervisor))") }
    }
    var stopped: [String] = []
    for service in TesseraService.startOrder.reversed() {
      guard let pid = runningPID(run, service) else { continue }
      try await terminate(pid)
      stopped.append(service.executableName)
      if output == .table { print("\(service.executableName) stopped (pid \(pid))") }
    }
    if output == .json {
      try printJSON(["stopped": stopped])
    } else if stopped.isEmpty {
      print("no daemons running in \(run.path)")
    }
  }
}

/// SIGTERM, then SIGKILL once `grace` has passed; returns when the process is gone.
func terminate(_ pid: Int32, grace: Duration = .seconds(10)) async throws {
  kill(pid, SIGTERM)
  let deadline = ContinuousClock.now + grace
  while isRunning(pid) && ContinuousClock.now < deadline {
    var status: Int32 = 0
    if waitpid(pid, &status, WNOHANG) == pid { break }
    try await Task.sleep(for: .milliseconds(20))
  }
  if isRunning(pid) {
    kill(pid, SIGKILL)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
  }
}

/// `tessera node status`: the node's services, or with --cluster (or on a
/// cluster's run directory) every component of the local cluster.
struct NodeStatus: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status", abstract: "Show the node's services, or the local cluster's (--cluster)."
  )

  @OptionGroup var global: GlobalOptions

  @Flag(
    help: "Show the local cluster of `node up --cluster` (default run dir /run/tessera-cluster).")
  var cluster = false

  func run() async throws {
    let root = cluster ? clusterRoot(global) : global.runDir
    if let plan = try ClusterPlan.load(root: root) {
      return try await LocalClusterStatus(plan: plan, global: global).show()
    }
    if cluster {
      throw CLIError(
        "no cluster in \(root): start one with `tessera node up --cluster --run-dir \(root)`")
    }
    let status = try Status.parse([
      "--run-dir", root, "--output", global.output.rawValue, "--timeout", "\(global.timeout)",
    ])
    try await status.run()
  }
}

/// A local cluster's run directory: `--run-dir` or `$TESSERA_RUN_DIR` when
/// given, else /run/tessera-cluster (not /run/tessera, where a single node runs).
func clusterRoot(_ global: GlobalOptions) -> String {
  let explicit = CommandLine.arguments.contains { $0 == "--run-dir" || $0.hasPrefix("--run-dir=") }
  let environment = ProcessInfo.processInfo.environment[RunDirectory.environmentVariable]
  guard explicit || environment?.isEmpty == false else {
    return ClusterPlan.Configuration.defaults.root
  }
  var path = global.runDir
  if !path.hasPrefix("/") { path = FileManager.default.currentDirectoryPath + "/" + path }
  return path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
}
