import Foundation
import Testing

/// Starts the four real daemon binaries through `tessera node up` and drives
/// them with the real CLI, as an operator would.
struct TesseraNode {
  let bin: String
  let runDir: String
  let stateDir: String
  let root: String

  static var binaryDirectory: String? {
    if let dir = ProcessInfo.processInfo.environment["TESSERA_BIN"],
      FileManager.default.isExecutableFile(atPath: dir + "/tessera")
    {
      return dir
    }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .deletingLastPathComponent().deletingLastPathComponent().path
    let debug = repo + "/.build/debug"
    return FileManager.default.isExecutableFile(atPath: debug + "/tessera-endpointd") ? debug : nil
  }

  static var skipReason: String? {
    binaryDirectory == nil
      ? "skipping: daemon binaries not built (run scripts/build.sh or set TESSERA_BIN)" : nil
  }

  init() throws {
    bin = try #require(Self.binaryDirectory)
    root =
      FileManager.default.temporaryDirectory.appendingPathComponent(
        "tsr-it-\(UUID().uuidString.prefix(8))"
      ).path
    runDir = root + "/run"
    stateDir = root + "/state"
    try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
  }

  @discardableResult
  func cli(_ arguments: [String], expectSuccess: Bool = true) throws -> (
    status: Int32, output: String
  ) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: bin + "/tessera")
    process.arguments = arguments + ["--run-dir", runDir]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let output = String(decoding: data, as: UTF8.self)
    if expectSuccess && process.terminationStatus != 0 {
      Issue.record(
        "tessera \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(output)"
      )
    }
    return (process.terminationStatus, output)
  }

  func json(_ arguments: [String]) throws -> [String: Any] {
    let (_, output) = try cli(arguments + ["-o", "json"])
    return try #require(
      try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
      "not JSON: \(output)")
  }

  func up(_ extra: [String] = []) throws {
    try cli(
      [
        "node", "up", "--detach", "--no-supervise", "--state-dir", stateDir, "--datapath-backend",
        "memory",
      ] + extra)
  }

  func pid(_ service: String) throws -> Int32 {
    try #require(
      Int32(
        String(contentsOfFile: "\(runDir)/\(service).pid", encoding: .utf8).trimmingCharacters(
          in: .whitespacesAndNewlines)))
  }

  /// Restarts one daemon the way systemd would: SIGTERM, then start it again with the same flags.
  func restart(_ service: String) throws {
    let pid = try pid(service)
    kill(pid, SIGTERM)
    for _ in 0..<500 where kill(pid, 0) == 0 { usleep(10_000) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "\(bin)/tessera-\(service)d")
    process.arguments =
      ["--run-dir", runDir, "--state-dir", stateDir]
      + (service == "datapath" ? ["--backend", "memory"] : [])
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    for _ in 0..<1000 {
      if let output = try? cli(["status", "-o", "json"], expectSuccess: false).output,
        let status = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
        let services = status["services"] as? [[String: Any]],
        services.first(where: { $0["service"] as? String == service })?["health"] as? String
          == "serving"
      {
        return
      }
      usleep(20_000)
    }
    Issue.record("\(service) did not come back")
  }

  func down() {
    _ = try? cli(["node", "down"], expectSuccess: false)
    try? FileManager.default.removeItem(atPath: root)
  }
}

@Suite("Four real daemons", .serialized, .enabled(if: TesseraNode.skipReason == nil))
struct NodeIntegrationTests {
  init() {
    if let reason = TesseraNode.skipReason { print(reason) }
  }

  @Test("create, policy, relabel, delete, and restarts of identityd and endpointd")
  func fullFlow() throws {
    let node = try TesseraNode()
    defer { node.down() }
    try node.up()

    let status = try node.json(["status"])
    #expect(status["healthy"] as? Bool == true)
    let services = try #require(status["services"] as? [[String: Any]])
    #expect(Set(services.compactMap { $0["pid"] as? Int }).count == 4, "four separate processes")

    let frontend = try node.json([
      "endpoint", "create", "--container-id", "fe", "--ip", "10.77.0.1", "--label", "app=frontend",
    ])
    let backend = try node.json([
      "endpoint", "create", "--container-id", "be", "--ip", "10.77.0.2", "--label", "app=backend",
    ])
    #expect(backend["state"] as? String == "ready")
    #expect((backend["policyRevision"] as? Int ?? 0) >= 1)
    let frontendIdentity = try #require(frontend["identity"] as? Int)
    let backendIdentity = try #require(backend["identity"] as? Int)
    #expect(
      frontendIdentity >= 256 && backendIdentity >= 256 && frontendIdentity != backendIdentity)

    let policyFile = node.root + "/policy.yaml"
    try """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: backend, namespace: default}
    spec:
      endpointSelector: {matchLabels: {app: backend}}
      ingress:
      - fromEndpoints: [{matchLabels: {app: frontend}}]
        toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    """.write(toFile: policyFile, atomically: true, encoding: .utf8)
    let imported = try node.json(["policy", "import", policyFile])
    let revision = try #require(imported["revision"] as? Int)
    #expect(revision == 2)

    // The backend is regenerated by the policy watch; wait on the realised revision.
    let backendID = try #require(backend["id"] as? Int)
    var realized: [String: Any] = [:]
    for _ in 0..<250 {
      realized = try node.json(["datapath", "policy", "get", String(backendID)])
      if realized["realizedRevision"] as? Int == revision { break }
      usleep(20_000)
    }
    #expect(realized["ingressEnforced"] as? Bool == true)
    let entries = try #require(realized["entries"] as? [[String: Any]])
    // The rule's entry, and the node's (it reaches its pods whatever their rules).
    #expect(entries.count == 2)
    #expect(
      entries.contains {
        $0["peerIdentity"] as? Int == frontendIdentity && $0["port"] as? Int == 8080
      })
    #expect(entries.contains { $0["peerIdentity"] as? Int == 1 && $0["port"] as? Int == 0 })

    let selectors = try #require(try node.json(["selectors"])["selectors"] as? [[String: Any]])
    #expect(selectors.contains { ($0["identities"] as? [Int]) == [frontendIdentity] })

    // Bad input: clear errors, nothing created.
    #expect(
      try node.cli(
        ["endpoint", "create", "--container-id", "x", "--ip", "10.77.0.2"], expectSuccess: false
      ).status != 0)
    #expect(
      try node.cli(
        ["endpoint", "create", "--container-id", "x", "--ip", "not-an-ip"], expectSuccess: false
      ).output.contains("not an IP"))
    #expect(
      try node.cli(
        [
          "endpoint", "create", "--container-id", "x", "--ip", "10.77.0.9", "--label",
          "reserved:host",
        ], expectSuccess: false
      ).output.contains("reserved"))
    let badPolicy = node.root + "/bad.yaml"
    try
      "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {matchExpressions: [{key: a, operator: Foo}]}}\n"
      .write(toFile: badPolicy, atomically: true, encoding: .utf8)
    #expect(
      try node.cli(["policy", "import", badPolicy], expectSuccess: false).output.contains(
        "bad.yaml: document 1"))
    #expect((try node.json(["endpoint", "list"])["endpoints"] as? [Any])?.count == 2)

    // Relabel: new identity, old reference released.
    let relabelled = try node.json([
      "endpoint", "labels", "--container-id", "fe", "--label", "app=other",
    ])
    let otherIdentity = try #require(relabelled["identity"] as? Int)
    #expect(otherIdentity != frontendIdentity)
    #expect(relabelled["id"] as? Int == frontend["id"] as? Int)
    #expect(
      try node.json(["identity", "get", String(frontendIdentity)])["references"] as? Int == 0)

    // Restart identityd: same labels, same identity (frontend's, unreferenced since the
    // relabel but within the grace period).
    try node.restart("identity")
    // endpointd's connection to the restarted identityd may still be in its reconnect backoff:
    // the create answers "unavailable, try again" (CNI code 11) until it has reconnected, and
    // the runtime retries, as here.
    let create = [
      "endpoint", "create", "--container-id", "fe2", "--ip", "10.77.0.3", "--label",
      "app=frontend",
    ]
    var retried = 0
    while retried < 100,
      try node.cli(create + ["-o", "json"], expectSuccess: false).output.contains(
        "unavailable, try again")
    {
      retried += 1
      usleep(100_000)
    }
    let again = try node.json(["endpoint", "get", "--container-id", "fe2"])
    #expect(again["identity"] as? Int == frontendIdentity)
    // A second pod of a label set the node holds resolves on the node: the identity
    // service holds one reference per node, however many of the node's pods use it.
    _ = try node.json([
      "endpoint", "create", "--container-id", "be2", "--ip", "10.77.0.4", "--label", "app=backend",
    ])
    #expect(
      try node.json(["endpoint", "get", "--container-id", "be2"])["identity"] as? Int
        == backendIdentity)
    #expect(try node.json(["identity", "get", String(backendIdentity)])["references"] as? Int == 1)
    #expect(
      try node.json(["identity", "get", String(frontendIdentity)])["references"] as? Int == 1)

    // Restart endpointd: endpoints restored with the same IDs, identities and revisions.
    let before = try #require(try node.json(["endpoint", "list"])["endpoints"] as? [[String: Any]])
    try node.restart("endpoint")
    let after = try #require(try node.json(["endpoint", "list"])["endpoints"] as? [[String: Any]])
    #expect(after.map { $0["id"] as? Int } == before.map { $0["id"] as? Int })
    #expect(after.map { $0["identity"] as? Int } == before.map { $0["identity"] as? Int })
    #expect(after.allSatisfy { $0["state"] as? String == "ready" })

    // Delete: idempotent, reference dropped.
    #expect(
      try node.json(["endpoint", "delete", "--container-id", "be2"])["existed"] as? Bool == true)
    #expect(
      try node.json(["endpoint", "delete", "--container-id", "be2"])["existed"] as? Bool == false)
    #expect(try node.json(["identity", "get", String(backendIdentity)])["references"] as? Int == 1)
  }

  @Test("a service that is down gives a clear error naming its socket")
  func serviceDown() throws {
    let node = try TesseraNode()
    defer { node.down() }
    let (status, output) = try node.cli(["endpoint", "list"], expectSuccess: false)
    #expect(status != 0)
    #expect(output.contains(node.runDir + "/endpoint.sock"))
  }
}
