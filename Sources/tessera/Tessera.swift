import ArgumentParser

/// `tessera`: inspect and control a Tessera node.
@main
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
