import ArgumentParser
import GRPCCore
import TesseraProto
import TesseraRuntime

struct NamespaceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "namespace",
    abstract:
      "Namespace labels: every pod in the namespace carries them as k8s:io.cilium.k8s.namespace.labels.KEY (what namespaceSelector matches).",
    subcommands: [NamespaceSet.self, NamespaceGet.self, NamespaceDelete.self, NamespaceList.self])
}

extension Tessera_Endpoint_V1_Namespace {
  var json: [String: Any] { ["name": name, "labels": labels.map(\.text)] }
  var line: String { "\(name): \(labels.map(\.text).joined(separator: ","))" }
}

struct NamespaceSet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set",
    abstract: "Set a namespace's labels (replacing its old ones); its pods are re-labelled.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Namespace name") var name: String
  @Argument(help: "Labels key=value") var labels: [String] = []

  func run() async throws {
    let parsed = try parseLabels(labels)
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).setNamespace(
        .with {
          $0.namespace = .with {
            $0.name = name
            $0.labels = parsed
          }
        }, options: options)
    }
    if global.output == .json { try printJSON(result.json) } else { print(result.line) }
  }
}

struct NamespaceGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "get", abstract: "Show a namespace's labels.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Namespace name") var name: String

  func run() async throws {
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).getNamespace(
        .with { $0.name = name }, options: options)
    }
    if global.output == .json { try printJSON(result.json) } else { print(result.line) }
  }
}

struct NamespaceDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete", abstract: "Remove a namespace's labels; its pods are re-labelled.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Namespace name") var name: String

  func run() async throws {
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).deleteNamespace(
        .with { $0.name = name }, options: options)
    }
    if global.output == .json {
      try printJSON(["existed": result.existed])
    } else {
      print(result.existed ? "deleted" : "no labels set for \(name)")
    }
  }
}

struct NamespaceList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "List namespaces with labels.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let result = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).listNamespaces(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON(["namespaces": result.namespaces.map(\.json)])
    } else {
      printTable(
        ["NAMESPACE", "LABELS"],
        result.namespaces.map { [$0.name, $0.labels.map(\.text).joined(separator: ",")] })
    }
  }
}
