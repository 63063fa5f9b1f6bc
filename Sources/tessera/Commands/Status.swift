import ArgumentParser
import Foundation
import GRPCCore
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
    var results: [[String: Any]] = []
    var allHealthy = true
    let restarts = NodeSupervisor.restarts(global.runDirectory)
    let checked = TesseraService.startOrder.filter {
      services.isEmpty || services.contains($0.rawValue)
    }
    for service in checked {
      var entry: [String: Any] = [
        "service": service.rawValue, "socket": global.runDirectory.socketPath(for: service),
        // Restarts by a foreground `tessera node up` (0 for a detached node or under systemd).
        "restarts": restarts[service.rawValue] ?? 0,
      ]
      do {
        let (health, info) = try await global.withClient(service) { client, options in
          let health = try await Grpc_Health_V1_Health.Client(wrapping: client).check(
            .init(), options: options)
          let info = try await Tessera_Runtime_V1_DaemonService.Client(wrapping: client)
            .getDaemonInfo(.init(), options: options)
          return (health, info)
        }
        entry["health"] = health.status == .serving ? "serving" : "not-serving"
        entry["version"] = info.version
        entry["pid"] = Int(info.pid)
        entry["backend"] = info.backend
        entry["details"] = info.details
        entry["controllers"] = info.controllers.map(\.json)
        entry["controllersFailing"] = info.controllers.filter { $0.consecutiveFailures > 0 }.count
        if health.status != .serving, !live { allHealthy = false }
      } catch {
        entry["health"] = "down"
        entry["error"] = "\(error)"
        allHealthy = false
      }
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
