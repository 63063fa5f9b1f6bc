import ArgumentParser
import Foundation
import GRPCCore
import TesseraProto
import TesseraRuntime

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show each service's health, version, pid and backend.")

  @OptionGroup var global: GlobalOptions

  func run() async throws {
    var results: [[String: Any]] = []
    var allHealthy = true
    let restarts = NodeSupervisor.restarts(global.runDirectory)
    for service in TesseraService.startOrder {
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
        if health.status != .serving { allHealthy = false }
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
        ["SERVICE", "HEALTH", "PID", "RESTARTS", "VERSION", "BACKEND"],
        results.map {
          [
            $0["service"] as? String ?? "", $0["health"] as? String ?? "",
            ($0["pid"] as? Int).map(String.init) ?? "-", String($0["restarts"] as? Int ?? 0),
            $0["version"] as? String ?? "-",
            ($0["backend"] as? String) ?? ($0["error"] as? String ?? ""),
          ]
        })
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
