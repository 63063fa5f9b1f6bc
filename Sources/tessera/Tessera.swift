import ArgumentParser
import Foundation

/// `tessera`: inspect and control a Tessera node.
struct Tessera: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tessera",
    abstract: "Identity-based network policy for Linux containers.",
    version: "0.1.0",
    subcommands: [
      Status.self, Node.self, EndpointCommand.self, IdentityCommand.self, PolicyCommand.self,
      Selectors.self, WorkloadCommand.self, NamespaceCommand.self, DatapathCommand.self,
      Monitor.self, Observe.self,
    ])
}

/// Runs `tessera` with two habits of operators' tools: global flags may come
/// before the subcommand (`tessera -o json status`), and under `-o json` an
/// error is a JSON object on stderr (`{"error": ..., "exitCode": ...}`).
@main
enum TesseraMain {
  static func main() async {
    let arguments = GlobalOptions.movingLeadingGlobals(Array(CommandLine.arguments.dropFirst()))
    do {
      var command = try Tessera.parseAsRoot(arguments)
      if var command = command as? any AsyncParsableCommand {
        try await command.run()
      } else {
        try command.run()
      }
    } catch {
      let exitCode = Tessera.exitCode(for: error)
      guard GlobalOptions.wantsJSON(arguments), exitCode != .success else {
        Tessera.exit(withError: error)
      }
      let message = Tessera.message(for: error)
      // An ExitCode carries no message: the command already printed its result.
      guard !message.isEmpty else { Foundation.exit(exitCode.rawValue) }
      let object: [String: Any] = ["error": message, "exitCode": Int(exitCode.rawValue)]
      if let data = try? JSONSerialization.data(
        withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
      {
        FileHandle.standardError.write(data + Data("\n".utf8))
      }
      Foundation.exit(exitCode.rawValue)
    }
  }
}
