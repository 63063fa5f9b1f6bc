import Foundation
import Testing

/// `tessera status` lists every daemon's controllers and names the failing ones with
/// their last error.
@Suite(
  "Controller status", .serialized,
  .enabled(if: TesseraNode.skipReason == nil, "binaries not built"))
struct ControllerStatusTests {
  func controllers(_ status: [String: Any], of service: String) -> [String: [String: Any]] {
    let services = status["services"] as? [[String: Any]] ?? []
    let entry = services.first { $0["service"] as? String == service }
    var byName: [String: [String: Any]] = [:]
    for controller in entry?["controllers"] as? [[String: Any]] ?? [] {
      if let name = controller["name"] as? String { byName[name] = controller }
    }
    return byName
  }

  func status(_ node: TesseraNode) throws -> [String: Any] {
    let output = try node.cli(["status", "-o", "json"], expectSuccess: false).output
    return try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
  }

  @Test(
    "every daemon lists its controllers; a dead upstream makes its watchers fail with the error, and they heal when it returns"
  )
  func failingControllers() throws {
    let node = try TesseraNode()
    defer { node.down() }
    try node.up()
    let endpoint = try node.json([
      "endpoint", "create", "--container-id", "ctl-1", "--ip", "10.77.0.1", "--label", "app=web",
    ])
    let id = try #require(endpoint["id"] as? Int)
    let healthy = try status(node)
    #expect(healthy["healthy"] as? Bool == true)
    let onEndpoint = controllers(healthy, of: "endpoint")
    for name in ["policy-watch", "cni-deletion-queue", "endpoint-\(id)-regeneration"] {
      #expect(onEndpoint[name]?["consecutiveFailures"] as? Int == 0, "\(name): \(onEndpoint)")
    }
    #expect((onEndpoint["endpoint-\(id)-regeneration"]?["successes"] as? Int ?? 0) >= 1)
    #expect(controllers(healthy, of: "policy")["identity-watch"] != nil)

    // The policy service dies: the endpoint service's policy watch fails, with why.
    kill(try node.pid("policy"), SIGKILL)
    var failing: [String: Any]?
    for _ in 0..<200 {
      failing = controllers(try status(node), of: "endpoint")["policy-watch"]
      if (failing?["consecutiveFailures"] as? Int ?? 0) > 0 { break }
      usleep(50_000)
    }
    #expect((failing?["consecutiveFailures"] as? Int ?? 0) > 0, "\(String(describing: failing))")
    let lastError = failing?["lastError"] as? String ?? ""
    #expect(lastError.contains("unavailable"), "\(lastError)")
    let text = try node.cli(["status"], expectSuccess: false).output
    #expect(text.contains("failing controllers:") && text.contains("policy-watch"), "\(text)")
    #expect(text.contains("in a row"), "\(text)")

    // Back: the watch reconnects and the controller is healthy again.
    try node.restart("policy")
    var healed = false
    for _ in 0..<200 {
      let watch = controllers(try status(node), of: "endpoint")["policy-watch"]
      if watch?["consecutiveFailures"] as? Int == 0 {
        healed = true
        break
      }
      usleep(50_000)
    }
    #expect(healed, "policy-watch still failing after policyd came back")
    #expect(!(try node.cli(["status"]).output.contains("failing controllers:")))

    // A deleted endpoint's controller is no longer listed.
    try node.cli(["endpoint", "delete", String(id)])
    #expect(controllers(try status(node), of: "endpoint")["endpoint-\(id)-regeneration"] == nil)
  }
}
