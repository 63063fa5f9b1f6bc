import Foundation
import Testing

/// The CLI's habits an operator relies on: global flags anywhere, JSON errors
/// under `-o json`, a clear "permission denied", full IDs with `-o wide`,
/// `policy delete --all`.
@Suite("CLI habits", .serialized, .enabled(if: TesseraNode.skipReason == nil))
struct CLIHabitsTests {
  @Test("global flags before the subcommand; errors as JSON under -o json")
  func flagsAndErrors() throws {
    let node = try TesseraNode()
    defer { node.down() }
    // --run-dir comes last from cli(); -o json comes before the subcommand here.
    let status = try node.cli(["-o", "json", "status"], expectSuccess: false)
    #expect(status.status == 1)
    let parsed = try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
    #expect(parsed?["healthy"] as? Bool == false, "status as JSON: \(status.output)")

    let list = try node.cli(["--output=json", "endpoint", "list"], expectSuccess: false)
    #expect(list.status == 1)
    let error = try JSONSerialization.jsonObject(with: Data(list.output.utf8)) as? [String: Any]
    #expect((error?["error"] as? String)?.contains("not running") == true, "\(list.output)")
    #expect(error?["exitCode"] as? Int == 1)

    let usage = try node.cli(["-o", "json", "policy", "delete"], expectSuccess: false)
    #expect(usage.status == 64)
    #expect(
      usage.output.contains("\"error\":\"give a policy name, --all or --selector"),
      "\(usage.output)")
  }

  @Test(
    "a user who may not open the socket is told so, not that the node is down",
    .enabled(
      if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser"),
      "needs root and runuser to act as another user"))
  func permissionDenied() throws {
    let node = try TesseraNode()
    defer { node.down() }
    try node.up()
    // A copy of the CLI another user can run; the run directory's socket stays root's.
    let cli = node.root + "/tessera-cli"
    try FileManager.default.copyItem(atPath: node.bin + "/tessera", toPath: cli)
    chmod(node.root, 0o755)
    chmod(node.runDir, 0o755)
    chmod(node.runDir + "/endpoint.sock", 0o600)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
    process.arguments = ["-u", "nobody", "--", cli, "endpoint", "list", "--run-dir", node.runDir]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationStatus == 1)
    #expect(output.contains("permission denied"), "\(output)")
  }

  @Test(
    "endpoint list -o wide shows whole container IDs; policy delete --all empties the repository")
  func wideAndDeleteAll() throws {
    let node = try TesseraNode()
    defer { node.down() }
    try node.up()
    let container = String(repeating: "c0ffee", count: 10) + "abcd"
    try node.cli(["endpoint", "create", "--container-id", container, "--ip", "10.78.0.1"])
    #expect(try node.cli(["endpoint", "list", "-o", "wide"]).output.contains(container))
    #expect(try !node.cli(["endpoint", "list"]).output.contains(container))

    let manifest = node.root + "/two.yaml"
    try """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: one, namespace: team-a}
    spec:
      endpointSelector: {matchLabels: {app: a}}
      ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]
    ---
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: two, namespace: team-b}
    spec:
      endpointSelector: {matchLabels: {app: b}}
      ingress: [{fromEndpoints: [{matchLabels: {app: a}}]}]
    """.write(toFile: manifest, atomically: true, encoding: .utf8)
    try node.cli(["policy", "import", manifest])
    let revision = try #require(try node.json(["policy", "list"])["revision"] as? Int)
    let deleted = try node.json(["policy", "delete", "--all", "--namespace", "team-a"])
    #expect(deleted["deleted"] as? [String] == ["team-a/one"])
    let rest = try node.json(["policy", "delete", "--all"])
    #expect(rest["deleted"] as? [String] == ["team-b/two"])
    // --all with a namespace and then without: one revision each.
    #expect(rest["revision"] as? Int == revision + 2)
    let listed = try node.json(["policy", "list"])
    #expect((listed["policies"] as? [Any])?.isEmpty == true)
  }

  @Test(
    "policy delete -l deletes exactly the policies whose labels match, in one revision; a bad selector is refused"
  )
  func deleteBySelector() throws {
    let node = try TesseraNode()
    defer { node.down() }
    try node.up()
    let manifest = node.root + "/labelled.yaml"
    try """
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: pay-web, namespace: shop, labels: {team: payments, env: prod}}
    spec:
      endpointSelector: {matchLabels: {app: web}}
      ingress: [{fromEndpoints: [{matchLabels: {app: lb}}]}]
    ---
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: pay-db, namespace: shop, labels: {team: payments, env: staging}}
    spec:
      endpointSelector: {matchLabels: {app: db}}
      ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: search, namespace: shop, labels: {team: search}}
    spec:
      podSelector: {matchLabels: {app: search}}
      policyTypes: [Ingress]
    """.write(toFile: manifest, atomically: true, encoding: .utf8)
    try node.cli(["policy", "import", manifest])
    let revision = try #require(try node.json(["policy", "list"])["revision"] as? Int)
    let none = try node.json(["policy", "delete", "-l", "team=nobody"])
    #expect(none["deleted"] as? [String] == [] && none["revision"] as? Int == revision)
    let payments = try node.json(["policy", "delete", "-l", "team=payments,env notin (prod)"])
    #expect(payments["deleted"] as? [String] == ["shop/pay-db"])
    #expect(payments["revision"] as? Int == revision + 1)
    // The labels Cilium derives for a policy select too.
    let derived = try node.json([
      "policy", "delete", "-n", "shop", "--selector",
      "io.cilium.k8s.policy.derived-from in (NetworkPolicy)",
    ])
    #expect(derived["deleted"] as? [String] == ["shop/search"])
    for bad in ["team in (a", "=x", "team notin ()", "a b=c"] {
      let refused = try node.cli(["policy", "delete", "-l", bad], expectSuccess: false)
      #expect(
        refused.status != 0 && refused.output.contains("selector"), "\(bad): \(refused.output)")
    }
    let left = try node.json(["policy", "list"])
    #expect(
      (left["policies"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["pay-web"])
    let conflicting = try node.cli(
      ["policy", "delete", "--all", "-l", "team=x"], expectSuccess: false)
    #expect(conflicting.status != 0 && conflicting.output.contains("exactly one"))
  }
}
