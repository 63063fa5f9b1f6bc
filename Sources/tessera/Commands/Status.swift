import ArgumentParser
import Foundation
import GRPCCore
import LocalCluster
import TesseraProto
import TesseraRuntime

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Show each service's health, version, pid, backend and controllers (the failing ones with their last error)."
  )

  @OptionGroup var global: GlobalOptions

  @Option(
    name: .customLong("service"),
    help:
      "Check only this service: identity, policy, datapath or endpoint (repeatable; a probe for a pod running some of them)."
  )
  var services: [String] = []

  @Flag(
    help:
      "Succeed when the checked services answer, serving or not (a liveness probe: policyd is not serving until its first identity sync); without it, not serving fails (a readiness probe)."
  )
  var live = false

  func validate() throws {
    for name in services where TesseraService(rawValue: name) == nil {
      throw ValidationError(
        "--service must be one of \(TesseraService.startOrder.map(\.rawValue).joined(separator: ", ")), not '\(name)'"
      )
    }
  }

  func run() async throws {
    // A local cluster's run directory holds no daemon of its own: show the cluster's.
    if services.isEmpty, let plan = try ClusterPlan.load(root: global.runDir) {
      return try await LocalClusterStatus(plan: plan, global: global).show()
    }
    var results: [[String: Any]] = []
    var allHealthy = true
    let restarts = NodeSupervisor.restarts(global.runDirectory)
    let checked = TesseraService.startOrder.filter {
      services.isEmpty || services.contains($0.rawValue)
    }
    for service in checked {
      var entry = await Self.probe(service, in: global.runDirectory, timeout: global.timeout)
      // Restarts by a foreground `tessera node up` (0 for a detached node or under systemd).
      entry["restarts"] = restarts[service.rawValue] ?? 0
      let health = entry["health"] as? String
      if health == "down" || (health == "not-serving" && !live) { allHealthy = false }
      results.append(entry)
    }
    if global.output == .json {
      try printJSON(["services": results, "healthy": allHealthy])
    } else {
      printTable(
        ["SERVICE", "HEALTH", "PID", "RESTARTS", "CONTROLLERS", "VERSION", "BACKEND"],
        results.map {
          let controllers = ($0["controllers"] as? [[String: Any]])?.count
          let failing = $0["controllersFailing"] as? Int ?? 0
          return [
            $0["service"] as? String ?? "", $0["health"] as? String ?? "",
            ($0["pid"] as? Int).map(String.init) ?? "-", String($0["restarts"] as? Int ?? 0),
            controllers.map { "\($0 - failing)/\($0) healthy" } ?? "-",
            $0["version"] as? String ?? "-",
            ($0["backend"] as? String) ?? ($0["error"] as? String ?? ""),
          ]
        })
      let failing = results.flatMap { result in
        ((result["controllers"] as? [[String: Any]]) ?? []).filter {
          ($0["consecutiveFailures"] as? Int ?? 0) > 0
        }.map { (result["service"] as? String ?? "", $0) }
      }
      if !failing.isEmpty {
        print("\nfailing controllers:")
        printTable(
          ["SERVICE", "CONTROLLER", "FAILURES", "LAST ERROR"],
          failing.map { service, controller in
            [
              service, controller["name"] as? String ?? "",
              "\(controller["consecutiveFailures"] as? Int ?? 0) in a row",
              controller["lastError"] as? String ?? "",
            ]
          })
      }
    }
    if global.output != .json,
      let endpoint = results.first(where: { $0["service"] as? String == "endpoint" }),
      let failing = (endpoint["details"] as? [String: String])?["regenerationFailing"],
      let count = Int(failing), count > 0
    {
      print(
        "\(count) endpoint(s) failing regeneration, retried with backoff (last errors: tessera endpoint list -o wide)"
      )
    }
    if !allHealthy { throw ExitCode(1) }
  }

  /// One service's health check and daemon info over its socket in `run`
  /// (`health`: serving, not-serving or down, with `error`).
  static func probe(_ service: TesseraService, in run: RunDirectory, timeout: Double) async
    -> [String: Any]
  {
    var options = GlobalOptions()
    options.runDir = run.path
    options.timeout = timeout
    var entry: [String: Any] = [
      "service": service.rawValue, "socket": run.socketPath(for: service),
    ]
    do {
      let (health, info) = try await options.withClient(service) { client, callOptions in
        let health = try await Grpc_Health_V1_Health.Client(wrapping: client).check(
          .init(), options: callOptions)
        let info = try await Tessera_Runtime_V1_DaemonService.Client(wrapping: client)
          .getDaemonInfo(.init(), options: callOptions)
        return (health, info)
      }
      entry["health"] = health.status == .serving ? "serving" : "not-serving"
      entry["version"] = info.version
      entry["pid"] = Int(info.pid)
      entry["backend"] = info.backend
      entry["details"] = info.details
      entry["controllers"] = info.controllers.map(\.json)
      entry["controllersFailing"] = info.controllers.filter { $0.consecutiveFailures > 0 }.count
    } catch {
      entry["health"] = "down"
      entry["error"] = "\(error)"
    }
    return entry
  }
}

extension Tessera_Runtime_V1_ControllerStatus {
  var json: [String: Any] {
    var object: [String: Any] = [
      "name": name, "successes": Int(successes), "failures": Int(failures),
      "consecutiveFailures": Int(consecutiveFailures),
    ]
    if !lastError.isEmpty { object["lastError"] = lastError }
    if lastSuccessUnixMs > 0 { object["lastSuccessUnixMs"] = Int(lastSuccessUnixMs) }
    if lastFailureUnixMs > 0 { object["lastFailureUnixMs"] = Int(lastFailureUnixMs) }
    return object
  }
}
