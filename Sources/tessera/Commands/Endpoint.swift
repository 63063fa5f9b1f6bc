import ArgumentParser
import Foundation
import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

struct EndpointCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "endpoint", abstract: "Create, inspect, relabel and delete endpoints.",
    subcommands: [
      EndpointCreate.self, EndpointList.self, EndpointGet.self, EndpointDelete.self,
      EndpointLabels.self,
    ])
}

/// Which endpoint a command is about: `ID` or `--container-id`.
struct EndpointTarget: ParsableArguments {
  @Argument(help: "Endpoint ID.")
  var id: UInt64?

  @Option(help: "Select by container ID instead.")
  var containerID: String?

  @Option(help: "Interface name inside the container (with --container-id).")
  var interface: String?

  func validate() throws {
    guard (id != nil) != (containerID != nil) else {
      throw ValidationError("give an endpoint ID or --container-id (not both)")
    }
  }

  var selector: Tessera_Endpoint_V1_EndpointSelector {
    .with {
      $0.id = id ?? 0
      $0.containerID = containerID ?? ""
      $0.interfaceName = interface ?? ""
    }
  }
}

func parseLabels(_ texts: [String]) throws -> [Tessera_Common_V1_Label] {
  do {
    return try LabelSet(parsing: texts).proto
  } catch {
    throw ValidationError(error.description)
  }
}

/// Reads `NAME=PORT[/PROTOCOL]` (protocol TCP by default, as a Kubernetes container port).
func parseNamedPorts(_ texts: [String]) throws -> [Tessera_Common_V1_NamedPort] {
  var ports: [NamedPort] = []
  for text in texts {
    let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
    let numberAndProtocol = parts.count == 2 ? parts[1].split(separator: "/").map(String.init) : []
    guard parts.count == 2, (1...2).contains(numberAndProtocol.count),
      let number = UInt16(numberAndProtocol[0]), number > 0
    else {
      throw ValidationError("--port \(text): expected NAME=PORT[/PROTOCOL], PORT 1-65535")
    }
    let proto = numberAndProtocol.count == 2 ? L4Protocol(name: numberAndProtocol[1]) : .tcp
    guard let proto, proto != .any else {
      throw ValidationError("--port \(text): protocol must be TCP, UDP or SCTP")
    }
    ports.append(NamedPort(name: parts[0], proto: proto, port: number))
  }
  if let problem = NamedPort.problem(with: ports) { throw ValidationError(problem) }
  return ports.map(Tessera_Common_V1_NamedPort.init)
}

extension Tessera_Common_V1_NamedPort {
  private var protocolName: String { "\((try? L4Protocol(proto: `protocol`)) ?? .any)" }
  var text: String { "\(name)=\(port)/\(protocolName)" }
  var json: [String: Any] { ["name": name, "port": Int(port), "protocol": protocolName] }
}

extension Tessera_Endpoint_V1_EndpointState {
  var name: String {
    switch self {
    case .waitingForIdentity: "waiting-for-identity"
    case .waitingToRegenerate: "waiting-to-regenerate"
    case .regenerating: "regenerating"
    case .ready: "ready"
    case .disconnecting: "disconnecting"
    case .disconnected: "disconnected"
    case .restoring: "restoring"
    case .creating: "creating"
    default: "unknown"
    }
  }
}

extension Tessera_Common_V1_Label {
  var text: String { "\(source):\(key)=\(value)" }
}

extension Tessera_Endpoint_V1_Endpoint {
  var json: [String: Any] {
    [
      "id": Int(id), "containerId": containerID, "interfaceName": interfaceName,
      "hostInterface": hostInterface,
      "ips": ips, "namespace": namespace, "pod": podName, "labels": labels.map(\.text),
      "identity": Int(identity),
      "state": state.name, "policyRevision": Int(policyRevision),
      "identityRevision": Int(identityRevision),
      "netns": netns, "createdAtUnixMs": Int(createdAtUnixMs),
      "regenerationFailures": Int(regenerationFailures),
      "lastRegenerationError": lastRegenerationError,
      "namedPorts": namedPorts.map(\.json),
    ]
  }

  var row: [String] { row(wide: false) }

  /// `wide`: the whole container ID (a table cuts it at 16 characters).
  func row(wide: Bool) -> [String] {
    // A failing endpoint says so in its state column: "ready (regeneration failing 3x)".
    let stateText =
      regenerationFailures == 0
      ? state.name : "\(state.name) (regeneration failing \(regenerationFailures)x)"
    let row = [
      String(id), wide ? containerID : String(containerID.prefix(16)), ips.joined(separator: ","),
      String(identity),
      stateText, String(policyRevision), labels.map(\.text).joined(separator: ","),
    ]
    let ports = namedPorts.isEmpty ? "-" : namedPorts.map(\.text).joined(separator: ",")
    return wide ? row + [ports, lastRegenerationError.isEmpty ? "-" : lastRegenerationError] : row
  }
}

let endpointHeader = ["ID", "CONTAINER", "IPS", "IDENTITY", "STATE", "POLICY-REV", "LABELS"]

func printEndpoints(
  _ endpoints: [Tessera_Endpoint_V1_Endpoint], _ global: GlobalOptions, single: Bool = false
) throws {
  if global.output == .json {
    try printJSON(single ? endpoints[0].json : ["endpoints": endpoints.map(\.json)] as Any)
  } else {
    let wide = global.output == .wide
    printTable(
      wide ? endpointHeader + ["NAMED-PORTS", "LAST-REGENERATION-ERROR"] : endpointHeader,
      endpoints.map { $0.row(wide: wide) })
  }
}

struct EndpointCreate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create",
    abstract: "Create an endpoint and wait until its policy is in force (the CNI plugin's call).")

  @OptionGroup var global: GlobalOptions
  @Option var containerID: String
  @Option(help: "Endpoint IP (repeatable).") var ip: [String]
  @Option var namespace: String?
  @Option var pod: String?
  @Option(help: "Interface name inside the container.") var interface = "eth0"
  @Option(help: "Host-side veth to attach programs to.") var hostInterface: String?
  @Option(help: "Label source:key=value (repeatable).") var label: [String] = []
  @Option(
    help: "A named port NAME=PORT[/PROTOCOL] (repeatable; TCP by default), as a container port."
  ) var port: [String] = []
  @Flag(help: "Return at once instead of waiting for the first regeneration.") var async = false

  func run() async throws {
    let request = Tessera_Endpoint_V1_CreateEndpointRequest.with {
      $0.containerID = containerID
      $0.ips = ip
      $0.namespace = namespace ?? ""
      $0.podName = pod ?? ""
      $0.interfaceName = interface
      $0.hostInterface = hostInterface ?? ""
      $0.sync = !async
    }
    let labels = try parseLabels(label)
    let namedPorts = try parseNamedPorts(port)
    let response = try await global.withClient(.endpoint) { client, options in
      var request = request
      request.labels = labels
      request.namedPorts = namedPorts
      return try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).createEndpoint(
        request, options: options)
    }
    try printEndpoints([response.endpoint], global, single: true)
  }
}

struct EndpointList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "List endpoints.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let response = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).listEndpoints(
        .init(), options: options)
    }
    try printEndpoints(response.endpoints, global)
  }
}

struct EndpointGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "get", abstract: "Show one endpoint.")
  @OptionGroup var global: GlobalOptions
  @OptionGroup var target: EndpointTarget

  func run() async throws {
    let selector = target.selector
    let endpoint = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).getEndpoint(
        .with { $0.endpoint = selector }, options: options)
    }
    try printEndpoints([endpoint], global, single: true)
  }
}

struct EndpointDelete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delete", abstract: "Delete an endpoint (succeeds when it is already gone).")
  @OptionGroup var global: GlobalOptions
  @OptionGroup var target: EndpointTarget

  func run() async throws {
    let selector = target.selector
    let response = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).deleteEndpoint(
        .with { $0.endpoint = selector }, options: options)
    }
    if global.output == .json {
      try printJSON(["existed": response.existed, "deleted": Int(response.deleted)])
    } else {
      print(
        response.existed
          ? "deleted \(response.deleted) endpoint(s)" : "no such endpoint (nothing to do)")
    }
  }
}

struct EndpointLabels: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "labels",
    abstract: "Replace an endpoint's labels; its identity is re-resolved without recreating it.")
  @OptionGroup var global: GlobalOptions
  @OptionGroup var target: EndpointTarget
  @Option(help: "Label source:key=value (repeatable); the full new set.") var label: [String] = []

  func run() async throws {
    let selector = target.selector
    let labels = try parseLabels(label)
    let endpoint = try await global.withClient(.endpoint) { client, options in
      try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).updateEndpointLabels(
        .with {
          $0.endpoint = selector
          $0.labels = labels
          $0.sync = true
        }, options: options)
    }
    try printEndpoints([endpoint], global, single: true)
  }
}
