import Foundation
import Testing

/// `tessera node up` in the foreground keeps its daemons running.
@Suite("Foreground node supervision", .serialized, .enabled(if: TesseraNode.skipReason == nil))
struct NodeSupervisorTests {
  private func services(_ node: TesseraNode) -> [String: [String: Any]] {
    guard let output = try? node.cli(["status", "-o", "json"], expectSuccess: false).output,
      let status = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
      let list = status["services"] as? [[String: Any]]
    else { return [:] }
    return Dictionary(
      list.compactMap { entry in (entry["service"] as? String).map { ($0, entry) } },
      uniquingKeysWith: { first, _ in first })
  }

  private func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
      if condition() { return true }
      usleep(50_000)
    }
    return condition()
  }

  @Test("a daemon killed with SIGKILL is restarted and counted; node down stops the supervisor too")
  func restartsKilledDaemon() throws {
    let node = try TesseraNode()
    defer { node.down() }
    let supervisor = Process()
    supervisor.executableURL = URL(fileURLWithPath: node.bin + "/tessera")
    supervisor.arguments = [
      "node", "up", "--run-dir", node.runDir, "--state-dir", node.stateDir,
      "--datapath-backend", "memory",
    ]
    let output = Pipe()
    supervisor.standardOutput = output
    supervisor.standardError = output
    try supervisor.run()
    defer { if supervisor.isRunning { supervisor.terminate() } }

    #expect(
      waitUntil(seconds: 60) {
        services(node).values.allSatisfy { $0["health"] as? String == "serving" }
          && services(node).count == 4
      }, "the node came up")
    let killed = try node.pid("policy")
    kill(killed, SIGKILL)
    #expect(
      waitUntil(seconds: 30) {
        let policy = services(node)["policy"]
        return policy?["health"] as? String == "serving" && policy?["restarts"] as? Int == 1
          && (policy?["pid"] as? Int).map(Int32.init) != killed
      }, "policyd is serving again under a new pid, restarts = 1")
    #expect(services(node)["identity"]?["restarts"] as? Int == 0)

    // node down from elsewhere: the supervisor must not restart what it stops.
    try node.cli(["node", "down"])
    #expect(waitUntil(seconds: 30) { !supervisor.isRunning }, "the foreground node ended")
    #expect(services(node).values.allSatisfy { $0["health"] as? String == "down" })
    let log = String(
      decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    #expect(log.contains("tessera-policyd exited"), "the exit is logged: \(log)")
  }

  @Test(
    "node up --detach returns with its daemons supervised in the background: a killed daemon comes back; node down stops everything"
  )
  func detachedNodeIsSupervised() throws {
    let node = try TesseraNode()
    defer { node.down() }
    // Through a pipe, as Foundation's Process runs it: the command must return although
    // the supervisor it starts outlives it.
    let up = try node.cli([
      "node", "up", "--detach", "--state-dir", node.stateDir, "--datapath-backend", "memory",
      "-o", "json",
    ])
    let started = try #require(
      try JSONSerialization.jsonObject(with: Data(up.output.utf8)) as? [String: Any])
    let supervisor = try #require((started["supervisor"] as? Int).map(Int32.init))
    #expect(kill(supervisor, 0) == 0, "the background supervisor runs")
    #expect(services(node).values.allSatisfy { $0["health"] as? String == "serving" })
    let killed = try node.pid("endpoint")
    kill(killed, SIGKILL)
    #expect(
      waitUntil(seconds: 30) {
        let endpoint = services(node)["endpoint"]
        return endpoint?["health"] as? String == "serving" && endpoint?["restarts"] as? Int == 1
          && (endpoint?["pid"] as? Int).map(Int32.init) != killed
      }, "endpointd is serving again under a new pid, restarts = 1")
    // A second up refuses: the node is running.
    let again = try node.cli(
      ["node", "up", "--detach", "--state-dir", node.stateDir, "--datapath-backend", "memory"],
      expectSuccess: false)
    #expect(again.status != 0 && again.output.contains("already running"), "\(again.output)")

    try node.cli(["node", "down"])
    #expect(waitUntil(seconds: 30) { kill(supervisor, 0) != 0 }, "the supervisor ended")
    #expect(services(node).values.allSatisfy { $0["health"] as? String == "down" })
    let log =
      (try? String(contentsOfFile: node.runDir + "/node-supervisor.log", encoding: .utf8)) ?? ""
    #expect(log.contains("tessera-endpointd exited"), "the exit is logged: \(log)")
  }
}
