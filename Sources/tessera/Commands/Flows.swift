import ArgumentParser
import Foundation
import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

/// Which events `monitor` and `observe` show.
enum FlowEventType: String, ExpressibleByArgument, CaseIterable {
  /// Dropped packets, whatever the reason.
  case drop
  /// Policy decisions: connections policy allowed and packets it dropped.
  case verdict
  case all
}

/// Filters and output shared by `tessera monitor` and `tessera observe`.
struct FlowOptions: ParsableArguments {
  @Option(help: "Events to show: drop, verdict (policy decisions, allowed or denied) or all.")
  var type: FlowEventType = .all

  @Option(help: "Only events of this endpoint.")
  var endpoint: UInt64?

  @Option(help: "Only events where either side has this numeric identity.")
  var identity: [UInt32] = []

  @Option(
    help:
      "Only events whose source identity has this label (key=value or source:key=value; repeat to require several)."
  )
  var fromLabel: [String] = []

  @Option(help: "Only events whose destination identity has this label (as --from-label).")
  var toLabel: [String] = []

  @Option(help: "Only events with this source or destination port.")
  var port: UInt16?

  /// The request's filter; label selectors become identity sets looked up now.
  func filter(identities: IdentityDirectory) throws -> Tessera_Datapath_V1_FlowFilter {
    var filter = Tessera_Datapath_V1_FlowFilter()
    switch type {
    case .drop: filter.verdict = .dropped
    case .verdict: filter.policyVerdictsOnly = true
    case .all: break
    }
    filter.endpointID = endpoint ?? 0
    filter.identities = identity
    filter.port = UInt32(port ?? 0)
    if !fromLabel.isEmpty {
      filter.sourceIdentities = try identities.matching(fromLabel, flag: "--from-label")
    }
    if !toLabel.isEmpty {
      filter.destinationIdentities = try identities.matching(toLabel, flag: "--to-label")
    }
    return filter
  }

  var needsIdentities: Bool { !fromLabel.isEmpty || !toLabel.isEmpty }
}

/// Identities with their labels, read once from the identity service (and the CIDR
/// identities from the datapath's ipcache, by the prefix each maps), so events name
/// their peers by labels.
struct IdentityDirectory: Sendable {
  var labels: [UInt32: [String]] = [:]

  static func load(_ global: GlobalOptions, required: Bool) async throws -> IdentityDirectory {
    var directory = IdentityDirectory()
    do {
      let response = try await global.withClient(.identity) { client, options in
        try await Tessera_Identity_V1_IdentityService.Client(wrapping: client).listIdentities(
          .init(), options: options)
      }
      directory.labels = Dictionary(
        response.identities.map { ($0.identity.id, $0.identity.labels.map(\.text)) },
        uniquingKeysWith: { first, _ in first })
    } catch  where !required {
      // Events still show numbers when the identity service is down.
    }
    if let ipcache = try? await global.withClient(
      .datapath,
      { client, options in
        try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).listIPCache(
          .init(), options: options)
      })
    {
      for entry in ipcache.entries where CIDRIdentity.isCIDR(NumericIdentity(entry.identity)) {
        directory.labels[entry.identity] = ["\(CIDRIdentity.labelSource):\(entry.prefix)"]
      }
    }
    return directory
  }

  /// Identities carrying every label of `selectors`.
  func matching(_ selectors: [String], flag: String) throws -> [UInt32] {
    for selector in selectors where !selector.contains("=") {
      throw ValidationError("\(flag) takes key=value or source:key=value, got '\(selector)'")
    }
    return labels.filter { _, texts in
      selectors.allSatisfy { selector in
        texts.contains { $0 == selector || $0.hasSuffix(":" + selector) }
      }
    }.map(\.key).sorted()
  }

  func describe(_ identity: UInt32) -> String {
    guard identity != 0 else { return "?" }
    guard let texts = labels[identity], !texts.isEmpty else { return String(identity) }
    return "\(identity)(\(texts.joined(separator: ",")))"
  }
}

extension Tessera_Datapath_V1_FlowEvent {
  var protocolName: String {
    switch ipProtocol {
    case 0: "-"
    case 1: "ICMP"
    case 6: "TCP"
    case 17: "UDP"
    case 58: "ICMPv6"
    case 132: "SCTP"
    default: String(ipProtocol)
    }
  }

  var matchName: String {
    switch match {
    case .l3L4: "l3-l4"
    case .l3Only: "l3-only"
    case .l4Only: "l4-only"
    case .all: "all"
    case .default: "default"
    default: "none"
    }
  }

  var time: Date { Date(timeIntervalSince1970: Double(timeUnixNano) / 1e9) }

  func endpointText(_ address: String, _ port: UInt32) -> String {
    guard !address.isEmpty else { return "-" }
    guard port != 0 else { return address }
    return address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
  }

  func json(_ identities: IdentityDirectory) -> [String: Any] {
    [
      "time": ISO8601DateFormatter.flows.string(from: time), "timeUnixNano": Int(timeUnixNano),
      "endpoint": Int(endpointID), "direction": direction == .ingress ? "ingress" : "egress",
      "verdict": verdict == .dropped ? "dropped" : "forwarded", "reason": reason,
      "match": matchName, "state": state, "protocol": protocolName,
      "ipProtocol": Int(ipProtocol),
      "source": [
        "ip": sourceIp, "port": Int(sourcePort), "identity": Int(sourceIdentity),
        "labels": identities.labels[sourceIdentity] ?? [],
      ],
      "destination": [
        "ip": destinationIp, "port": Int(destinationPort),
        "identity": Int(destinationIdentity),
        "labels": identities.labels[destinationIdentity] ?? [],
      ],
      "length": Int(length),
    ].merging(hasIcmpType ? ["icmpType": Int(icmpType)] : [:]) { first, _ in first }
  }

  func line(_ identities: IdentityDirectory) -> String {
    let verdictText = verdict == .dropped ? "DROPPED" : "FORWARDED"
    let policy =
      (match == .none ? "" : " (policy \(matchName))") + (state.isEmpty ? "" : " [\(state)]")
    return
      "\(ISO8601DateFormatter.flows.string(from: time)) ep \(endpointID) \(direction == .ingress ? "ingress" : "egress") \(verdictText) \(reason)\(policy) \(protocolName)\(hasIcmpType ? " type \(icmpType)" : "") \(endpointText(sourceIp, sourcePort)) \(identities.describe(sourceIdentity)) -> \(endpointText(destinationIp, destinationPort)) \(identities.describe(destinationIdentity))"
  }
}

extension ISO8601DateFormatter {
  nonisolated(unsafe) static let flows: ISO8601DateFormatter = {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter
  }()
}

/// Streams events from the datapath and prints each as it arrives.
func printFlows(
  _ global: GlobalOptions, _ flows: FlowOptions, last: UInt32, follow: Bool
) async throws {
  let identities = try await IdentityDirectory.load(global, required: flows.needsIdentities)
  // Built before the call: a bad label selector is an error, not an empty stream.
  let filter = try flows.filter(identities: identities)
  let request = Tessera_Datapath_V1_ObserveFlowsRequest.with {
    $0.last = last
    $0.follow = follow
    $0.filter = filter
  }
  let json = global.output == .json
  try await global.withClient(.datapath) { client, options in
    var options = options
    if follow { options.timeout = nil }
    let datapath = Tessera_Datapath_V1_DatapathService.Client(wrapping: client)
    let stats = try await datapath.getFlowStats(.init(), options: options)
    guard stats.supported else {
      throw CLIError(
        "this datapath emits no events (the memory test backend); events need the eBPF datapath")
    }
    try await datapath.observeFlows(request, options: options) { response in
      for try await event in response.messages {
        // Written unbuffered, one event per line, so a pipe (jq, a log shipper) sees it at once.
        var line: Data
        if json {
          line = try JSONSerialization.data(
            withJSONObject: event.json(identities),
            options: [.sortedKeys, .withoutEscapingSlashes])
        } else {
          line = Data(event.line(identities).utf8)
        }
        line.append(0x0A)
        FileHandle.standardOutput.write(line)
      }
    }
  }
}

struct Monitor: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "monitor",
    abstract: "Show drop and policy-verdict events live, as they happen (Ctrl-C to stop).",
    discussion: """
      Every dropped packet and every connection policy allowed (its first packet) is an event;
      established flows emit none. -o json prints one event per line.
      """)
  @OptionGroup var global: GlobalOptions
  @OptionGroup var flows: FlowOptions

  func run() async throws {
    try await printFlows(global, flows, last: 0, follow: true)
  }
}

struct Observe: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "observe",
    abstract: "Show the most recent drop and policy-verdict events the datapath kept.")
  @OptionGroup var global: GlobalOptions
  @OptionGroup var flows: FlowOptions

  @Option(help: "How many of the most recent matching events to show.")
  var last: UInt32 = 100

  @Flag(help: "Then keep following new events.")
  var follow = false

  func validate() throws {
    guard last > 0 || follow else { throw ValidationError("--last must be at least 1") }
  }

  func run() async throws {
    try await printFlows(global, flows, last: last, follow: follow)
  }
}
