import Foundation
import TesseraRuntime

/// One supervised process (a node's daemon, or a local cluster's etcd member,
/// replica or node daemon): how to start it again.
struct DaemonLaunch: Sendable {
  /// Unique among the launches of one supervisor: the service's name on a
  /// single node (so `restarts.json` keys stay the services), `identity-1` or
  /// `node-1/endpoint` in a local cluster.
  var name: String
  /// Nil for a process that is not a Tessera daemon (an etcd member).
  var service: TesseraService?
  var executable: String
  var arguments: [String]
  var log: String

  init(service: TesseraService, executable: String, arguments: [String], log: String) {
    self.init(
      name: service.rawValue, service: service, executable: executable, arguments: arguments,
      log: log)
  }

  init(
    name: String, service: TesseraService?, executable: String, arguments: [String], log: String
  ) {
    self.name = name
    self.service = service
    self.executable = executable
    self.arguments = arguments
    self.log = log
  }

  /// How messages name it: the executable, and which one when several run.
  var displayName: String {
    guard let service else { return name }
    return name == service.rawValue ? service.executableName : "\(service.executableName) (\(name))"
  }

  /// Starts the daemon with its output appended to its log; `onExit` gets its pid when it exits.
  func spawn(onExit: (@Sendable (Int32, Int32) -> Void)?) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if !FileManager.default.fileExists(atPath: log) {
      _ = FileManager.default.createFile(atPath: log, contents: nil)
    }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    handle.seekToEndOfFile()
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    if let onExit {
      process.terminationHandler = { onExit($0.processIdentifier, $0.terminationStatus) }
    }
    try process.run()
    return process.processIdentifier
  }
}

/// Keeps a foreground node's daemons running: a daemon that exits is logged,
/// counted (`<run-dir>/restarts.json`, shown by `tessera status`) and started
/// again after a backoff (1 s doubling to 30 s, back to 1 s once it ran a
/// minute); SIGINT or SIGTERM stops them all. `tessera node down` from
/// elsewhere stops the supervisor first (its pid is in
/// `<run-dir>/node-supervisor.pid`), so it does not restart what is being stopped.
final class NodeSupervisor: Sendable {
  enum Event: Sendable {
    case exited(pid: Int32, status: Int32)
    case stop
  }

  private let events = AsyncStream<Event>.makeStream()

  var daemonExited: @Sendable (Int32, Int32) -> Void {
    { [continuation = events.continuation] pid, status in
      continuation.yield(.exited(pid: pid, status: status))
    }
  }

  static func pidPath(_ run: RunDirectory) -> String { "\(run.path)/node-supervisor.pid" }
  static func restartsPath(_ run: RunDirectory) -> String { "\(run.path)/restarts.json" }

  /// Restarts counted so far for each service (empty when none or no supervisor).
  static func restarts(_ run: RunDirectory) -> [String: Int] {
    guard let data = FileManager.default.contents(atPath: restartsPath(run)),
      let counts = try? JSONSerialization.jsonObject(with: data) as? [String: Int]
    else { return [:] }
    return counts
  }

  func supervise(
    _ launches: [DaemonLaunch], pids: [Int32: String], run: RunDirectory,
    waitHealthy: (DaemonLaunch, Int32) async throws -> Void,
    stopAll: () async throws -> Void
  ) async throws {
    try? "\(getpid())\n".write(
      toFile: Self.pidPath(run), atomically: true, encoding: .utf8)
    try? FileManager.default.removeItem(atPath: Self.restartsPath(run))
    defer { try? FileManager.default.removeItem(atPath: Self.pidPath(run)) }
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let signals = [SIGINT, SIGTERM].map { number in
      let source = DispatchSource.makeSignalSource(signal: number)
      source.setEventHandler { [continuation = events.continuation] in continuation.yield(.stop) }
      source.resume()
      return source
    }
    defer { signals.forEach { $0.cancel() } }

    let byName = Dictionary(uniqueKeysWithValues: launches.map { ($0.name, $0) })
    var pids = pids
    var restarts: [String: Int] = [:]
    var backoff: [String: Duration] = [:]
    var startedAt = Dictionary(
      uniqueKeysWithValues: pids.values.map { ($0, ContinuousClock.now) })
    for await event in events.stream {
      guard case .exited(let pid, let status) = event else { break }
      guard let service = pids.removeValue(forKey: pid), let launch = byName[service] else {
        continue
      }
      restarts[service, default: 0] += 1
      let ranFor = startedAt[service].map { ContinuousClock.now - $0 } ?? .zero
      var delay = backoff[service] ?? .seconds(1)
      if ranFor > .seconds(60) { delay = .seconds(1) }
      backoff[service] = min(delay * 2, .seconds(30))
      writeRestarts(restarts, run)
      say(
        "\(launch.displayName) exited (status \(status)) after \(ranFor.components.seconds) s; restart \(restarts[service, default: 0]) in \(delay.components.seconds) s (log: \(launch.log))"
      )
      try? await Task.sleep(for: delay)
      if Task.isCancelled { break }
      do {
        let newPID = try launch.spawn(onExit: daemonExited)
        pids[newPID] = service
        startedAt[service] = ContinuousClock.now
        try await waitHealthy(launch, newPID)
        say("\(launch.displayName) ready again (pid \(newPID))")
      } catch {
        // It exits again (and is restarted after a longer wait) or never answers.
        say("\(launch.displayName) did not come back: \(error)")
      }
    }
    try await stopAll()
  }

  /// One line on stdout at once, also when stdout is a file or a pipe.
  private func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
  }

  private func writeRestarts(_ restarts: [String: Int], _ run: RunDirectory) {
    if let data = try? JSONSerialization.data(withJSONObject: restarts, options: [.sortedKeys]) {
      try? data.write(to: URL(fileURLWithPath: Self.restartsPath(run)), options: .atomic)
    }
  }
}
