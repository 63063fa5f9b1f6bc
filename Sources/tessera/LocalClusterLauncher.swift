import Foundation
import GRPCCore
import LocalCluster
import LocalEtcd
import TesseraProto
import TesseraRuntime

/// Starts a local cluster (`tessera node up --cluster`): etcd, a CA and a
/// certificate per replica and node, identityd and policyd replicas on
/// loopback TCP with mutual TLS, and nodes of endpointd + datapathd (eBPF,
/// own run, state and pin directories), with the same daemon flags as
/// `Tests/cluster/cluster_e2e.sh`.
struct LocalClusterLauncher {
  var plan: ClusterPlan
  /// Holds the tessera-*d executables.
  var binaries: String
  var cniPlugin: String
  var logFormat: String
  var logLevel: String
  var output: OutputFormat

  /// Every process started so far, in start order (stopped in reverse on failure).
  private(set) var launches: [DaemonLaunch] = []
  private(set) var pids: [Int32] = []

  init(
    plan: ClusterPlan, binaries: String, cniPlugin: String, logFormat: String, logLevel: String,
    output: OutputFormat
  ) {
    self.plan = plan
    self.binaries = binaries
    self.cniPlugin = cniPlugin
    self.logFormat = logFormat
    self.logLevel = logLevel
    self.output = output
  }

  /// Starts everything, each stage only once the previous one is healthy.
  /// `onExit` is the foreground supervisor's (nil with `--detach`).
  mutating func start(onExit: (@Sendable (Int32, Int32) -> Void)?) async throws {
    try makeDirectories()
    try makeCertificates()
    progress("certificates in \(plan.pkiDirectory) (CA \(plan.caFile))")
    for member in plan.etcd { try spawn(etcdLaunch(member), onExit: onExit) }
    for (launch, pid) in zip(launches, pids) { try await waitHealthy(launch, pid) }
    progress("etcd: \(plan.etcd.map(\.clientURL).joined(separator: ","))")
    for stage in [plan.identity, plan.policy] {
      let started = launches.count
      for replica in stage { try spawn(replicaLaunch(replica), onExit: onExit) }
      for (launch, pid) in zip(launches[started...], pids[started...]) {
        try await waitHealthy(launch, pid)
        progress(
          "\(launch.displayName) ready on \(stage.first { $0.name == launch.name }?.address ?? "")")
      }
    }
    for service in [TesseraService.datapath, .endpoint] {
      let started = launches.count
      for node in plan.nodes { try spawn(nodeLaunch(node, service), onExit: onExit) }
      for (launch, pid) in zip(launches[started...], pids[started...]) {
        try await waitHealthy(launch, pid)
        progress("\(launch.displayName) ready (pid \(pid))")
      }
    }
    try writeNodeHelpers()
  }

  // MARK: - Launches

  private func etcdLaunch(_ member: ClusterPlan.EtcdMember) -> DaemonLaunch {
    DaemonLaunch(
      name: "etcd-\(member.name)", service: nil,
      executable: LocalEtcdCluster.executable ?? "/usr/bin/etcd",
      arguments: [
        "--name", member.name, "--data-dir", member.dataDirectory,
        "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
        "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.peerURL,
        "--initial-cluster", plan.etcdInitialCluster, "--initial-cluster-state", "new",
        "--initial-cluster-token", "tessera-\(plan.tag)",
      ], log: member.log)
  }

  private func tlsArguments(_ name: String) -> [String] {
    let files = plan.certificate(name)
    return [
      "--tls-cert-file", files.certificate, "--tls-key-file", files.key, "--tls-ca-file",
      plan.caFile,
    ]
  }

  private func commonArguments(run: String, state: String, node: String) -> [String] {
    // The daemons' default metrics ports are one per service: many replicas of
    // one service on one machine would all want them.
    [
      "--run-dir", run, "--state-dir", state, "--node-name", node, "--log-format", logFormat,
      "--log-level", logLevel, "--metrics-address", "off",
    ]
  }

  private func replicaLaunch(_ replica: ClusterPlan.Replica) -> DaemonLaunch {
    let service: TesseraService = replica.service == "identity" ? .identity : .policy
    var arguments =
      commonArguments(run: replica.runDirectory, state: replica.stateDirectory, node: replica.name)
      + ["--listen", replica.address] + tlsArguments(replica.name)
    if service == .identity {
      arguments += ["--identity-store", plan.etcdStore]
      // A replica without a policyd beside it leaves announcing to the policy replicas' watches.
      if !plan.hasPolicyBeside(replica) { arguments += ["--policy-service", "none"] }
    } else {
      arguments += ["--policy-store", plan.etcdStore, "--identity-address", plan.identityAddresses]
    }
    return DaemonLaunch(
      name: replica.name, service: service, executable: "\(binaries)/\(service.executableName)",
      arguments: arguments,
      log: RunDirectory(path: replica.runDirectory).logPath(for: service))
  }

  private func nodeLaunch(_ node: ClusterPlan.Node, _ service: TesseraService) -> DaemonLaunch {
    var arguments = commonArguments(
      run: node.runDirectory, state: node.stateDirectory, node: node.name)
    if service == .datapath {
      arguments += ["--backend", "bpf", "--bpf-pin-dir", node.pinDirectory]
    } else {
      arguments +=
        [
          "--identity-address", plan.identityAddresses, "--policy-address", plan.policyAddresses,
          "--cluster-store", plan.etcdStore,
        ] + tlsArguments(node.name)
    }
    return DaemonLaunch(
      name: "\(node.name)/\(service.rawValue)", service: service,
      executable: "\(binaries)/\(service.executableName)", arguments: arguments,
      log: RunDirectory(path: node.runDirectory).logPath(for: service))
  }

  private mutating func spawn(
    _ launch: DaemonLaunch, onExit: (@Sendable (Int32, Int32) -> Void)?
  ) throws {
    let pid: Int32
    do { pid = try launch.spawn(onExit: onExit) } catch {
      throw LocalClusterError(.startFailed, "cannot start \(launch.executable)", cause: error)
    }
    launches.append(launch)
    pids.append(pid)
    if launch.service == nil,
      let member = plan.etcd.first(where: { "etcd-\($0.name)" == launch.name })
    {
      try? "\(pid)\n".write(toFile: member.pidFile, atomically: true, encoding: .utf8)
    }
  }

  /// Waits until the process answers: etcd's `/health`, a daemon's gRPC health check on its socket.
  func waitHealthy(_ launch: DaemonLaunch, _ pid: Int32) async throws {
    if launch.service == nil,
      let member = plan.etcd.first(where: { "etcd-\($0.name)" == launch.name })
    {
      try? "\(pid)\n".write(toFile: member.pidFile, atomically: true, encoding: .utf8)
    }
    let deadline = ContinuousClock.now + .seconds(60)
    var delay = Duration.milliseconds(20)
    while ContinuousClock.now < deadline {
      guard isRunning(pid) else {
        let tail =
          (try? String(contentsOfFile: launch.log, encoding: .utf8))?.split(separator: "\n")
          .suffix(5).joined(separator: "\n") ?? ""
        throw LocalClusterError(
          .startFailed, "\(launch.displayName) exited during startup (log \(launch.log)):\n\(tail)")
      }
      if try await answers(launch) { return }
      try await Task.sleep(for: delay)
      delay = min(delay * 2, .milliseconds(250))
    }
    throw LocalClusterError(
      .startFailed, "\(launch.displayName) did not become healthy within 60 s (log \(launch.log))")
  }

  private func answers(_ launch: DaemonLaunch) async throws -> Bool {
    guard let service = launch.service else {
      guard let member = plan.etcd.first(where: { "etcd-\($0.name)" == launch.name }) else {
        return false
      }
      return LocalEtcdCluster.isHealthy(clientPort: member.clientPort)
    }
    let run = launch.arguments.firstIndex(of: "--run-dir").map { launch.arguments[$0 + 1] } ?? ""
    return await Self.serving(RunDirectory(path: run), service)
  }

  /// Whether `service` in `run` answers its health check with SERVING.
  static func serving(_ run: RunDirectory, _ service: TesseraService) async -> Bool {
    var options = GlobalOptions()
    options.runDir = run.path
    options.timeout = 2
    guard FileManager.default.fileExists(atPath: run.socketPath(for: service)) else { return false }
    let status = try? await options.withClient(service) { client, callOptions in
      try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init(), options: callOptions)
        .status
    }
    return status == .serving
  }

  // MARK: - Files

  private func makeDirectories() throws {
    var directories = [plan.root, "\(plan.root)/etcd", plan.pkiDirectory]
    directories += plan.identity.flatMap { [$0.runDirectory, $0.stateDirectory] }
    directories += plan.policy.flatMap { [$0.runDirectory, $0.stateDirectory] }
    directories += plan.nodes.flatMap { [$0.runDirectory, $0.stateDirectory, $0.cniDirectory] }
    for directory in directories {
      try FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true,
        attributes: [.posixPermissions: 0o750])
    }
    // Keys and etcd's data are for root only.
    chmod(plan.pkiDirectory, 0o700)
  }

  /// A CA and one certificate per replica and node, with its name as the SAN
  /// DNS name (the daemons take a peer's node name from it), as cluster_e2e.sh makes them.
  private func makeCertificates() throws {
    let openssl = try Self.tool("openssl")
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    try run(
      openssl,
      ["req", "-x509"] + ec + [
        "-days", "30", "-subj", "/CN=tessera-local-cluster-ca", "-keyout", "ca.key", "-out",
        "ca.pem",
      ])
    for name in plan.certificateNames {
      try run(
        openssl,
        ["req"] + ec + ["-subj", "/CN=\(name)", "-keyout", "\(name).key", "-out", "\(name).csr"])
      try "subjectAltName=DNS:\(name)\n".write(
        toFile: "\(plan.pkiDirectory)/\(name).ext", atomically: true, encoding: .utf8)
      try run(
        openssl,
        [
          "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key",
          "-CAcreateserial", "-days", "30", "-extfile", "\(name).ext", "-out", "\(name).pem",
        ])
    }
  }

  private func run(_ executable: String, _ arguments: [String]) throws {
    let result = try Self.runTool(executable, arguments, in: plan.pkiDirectory)
    guard result.status == 0 else {
      throw LocalClusterError(
        .startFailed,
        "\(executable) \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.output)"
      )
    }
  }

  /// Each node's pod helper, and links to one identity and one policy replica's
  /// sockets in its run directory, so that `tessera --run-dir <node>` reaches
  /// the whole cluster (`policy import`, `identity list`) like a node's CLI does.
  private func writeNodeHelpers() throws {
    let pluginDirectories =
      [URL(fileURLWithPath: cniPlugin).deletingLastPathComponent().path]
      + Self.cniPluginDirectories
    for node in plan.nodes {
      try plan.podScript(for: node, cniPlugin: cniPlugin, pluginDirectories: pluginDirectories)
        .write(toFile: node.podScript, atomically: true, encoding: .utf8)
      chmod(node.podScript, 0o755)
      for service in [TesseraService.identity, .policy] {
        guard let replica = plan.replica(of: service.rawValue, for: node) else { continue }
        let link = RunDirectory(path: node.runDirectory).socketPath(for: service)
        try? FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(
          atPath: link,
          withDestinationPath: RunDirectory(path: replica.runDirectory).socketPath(for: service))
      }
    }
  }

  private func progress(_ line: String) {
    guard output == .table else { return }
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
  }

  // MARK: - Tools

  /// Where Debian (`containernetworking-plugins`) and the CNI convention put plugins.
  static let cniPluginDirectories = ["/usr/lib/cni", "/opt/cni/bin"]

  /// `name` on PATH or in the usual directories.
  static func tool(_ name: String) throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for directory in path.split(separator: ":").map(String.init) + [
      "/usr/bin", "/usr/sbin", "/bin", "/sbin",
    ] where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
      return "\(directory)/\(name)"
    }
    throw LocalClusterError(
      .missingDependency, "\(name) not found: install it (scripts/install-deps.sh)")
  }

  /// Runs a tool to completion; its stdout and stderr together.
  static func runTool(_ executable: String, _ arguments: [String], in directory: String? = nil)
    throws -> (status: Int32, output: String)
  {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
  }
}
