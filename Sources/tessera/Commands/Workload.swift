import ArgumentParser
import GRPCCore
import TesseraProto
import TesseraRuntime

struct WorkloadCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "workload",
    abstract: "The workload registry: namespace/pod → labels (the metadata source).",
    subcommands: [WorkloadSet.self, WorkloadGet.self, WorkloadDelete.self, WorkloadList.self])
}

func splitWorkload(_ text: String) throws -> (String, String) {
  let parts = text.split(separator: "/", omittingEmptySubsequences: false)
  guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
    throw ValidationError("workload must be NAMESPACE/POD, not '\(text)'")
  }
  return (String(parts[0]), String(parts[1]))
}

extension Tessera_Endpoint_V1_Workload {
  var json: [String: Any] {
    ["namespace": namespace, "pod": podName, "labels": labels.map(\.text)]
  }
}

struct WorkloadSet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set", abstract: "Set a workload's labels: NS/POD key=value…")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "NAMESPACE/POD") var workload: String
  @Argument(help: "Labels [source:]key=value") var labels: [String] = []

  func run() async throws {
    let (namespace, pod) = try splitWorkload(workload)
    let parsed = try parseLabels(labels)
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).setWorkload(
        .with {
          $0.workload = .with {
            $0.namespace = namespace
            $0.podName = pod
            $0.labels = parsed
          }
        }, options: options)
    }
    if global.output == .json {
      try printJSON(result.json)
    } else {
      print("\(namespace)/\(pod): \(result.labels.map(\.text).joined(separator: ","))")
    }
  }
}

struct WorkloadGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "get", abstract: "Show a workload's labels.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "NAMESPACE/POD") var workload: String

  func run() async throws {
    let (namespace, pod) = try splitWorkload(workload)
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).getWorkload(
        .with {
          $0.workload = .with {
            $0.namespace = namespace
            $0.podName = pod
          }
        }, options: options)
    }
    if global.output == .json {
      try printJSON(result.json)
    } else {
      print("\(namespace)/\(pod): \(result.labels.map(\.text).joined(separator: ","))")
    }
  }
}

struct WorkloadDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete", abstract: "Forget a workload.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "NAMESPACE/POD") var workload: String

  func run() async throws {
    let (namespace, pod) = try splitWorkload(workload)
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).deleteWorkload(
        .with {
          $0.workload = .with {
            $0.namespace = namespace
            $0.podName = pod
          }
        }, options: options)
    }
    if global.output == .json {
      try printJSON(["existed": result.existed])
    } else {
      print(result.existed ? "deleted" : "no such workload")
    }
  }
}

struct WorkloadList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List workloads.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).listWorkloads(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON(["workloads": result.workloads.map(\.json)])
    } else {
      printTable(
        ["NAMESPACE", "POD", "LABELS"],
        result.workloads.map {
          [$0.namespace, $0.podName, $0.labels.map(\.text).joined(separator: ",")]
        })
    }
  }
}
