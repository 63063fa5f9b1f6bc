import ArgumentParser
import GRPCCore
import TesseraProto
import TesseraRuntime

struct IdentityCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "identity", abstract: "Inspect security identities.",
    subcommands: [IdentityList.self, IdentityGet.self])
}

extension Tessera_Identity_V1_IdentityInfo {
  var json: [String: Any] {
    [
      "id": Int(identity.id), "labels": identity.labels.map(\.text), "reserved": reserved,
      "references": Int(references),
      "nodes": Dictionary(uniqueKeysWithValues: nodes.map { ($0.node, Int($0.count)) }),
    ]
  }

  var row: [String] {
    [
      String(identity.id), reserved ? "reserved" : String(references),
      nodes.map { "\($0.node)(\($0.count))" }.joined(separator: ","),
      identity.labels.map(\.text).joined(separator: ","),
    ]
  }
}

struct IdentityList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "List identities with their references.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let response = try await global.withClient(.identity) { client, options in
      try await Tessera_Identity_V1_IdentityService.Client(wrapping: client).listIdentities(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON(["backend": response.backend, "identities": response.identities.map(\.json)])
    } else {
      print("backend: \(response.backend)")
      printTable(["ID", "REFS", "NODES", "LABELS"], response.identities.map(\.row))
    }
  }
}

struct IdentityGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "get", abstract: "Show one identity.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Numeric identity.") var id: UInt32

  func run() async throws {
    let id = self.id
    let info = try await global.withClient(.identity) { client, options in
      try await Tessera_Identity_V1_IdentityService.Client(wrapping: client).getIdentity(
        .with { $0.id = id }, options: options)
    }
    if global.output == .json {
      try printJSON(info.json)
    } else {
      printTable(["ID", "REFS", "NODES", "LABELS"], [info.row])
    }
  }
}
