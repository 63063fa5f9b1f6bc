import ArgumentParser
import Foundation
import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

/// One side of a traced flow, as the operator names it.
struct TraceEndpointOptions: ParsableArguments {
  @Option(help: "Source: a numeric identity.") var fromIdentity: UInt32?
  @Option(help: "Source: labels its identity carries (key=value or source:key=value; repeat).")
  var fromLabel: [String] = []
  @Option(help: "Source: an endpoint ID on this node.") var fromEndpoint: UInt64?
  @Option(help: "Destination: a numeric identity.") var toIdentity: UInt32?
  @Option(help: "Destination: labels its identity carries (as --from-label).")
  var toLabel: [String] = []
  @Option(help: "Destination: an endpoint ID on this node.") var toEndpoint: UInt64?
  @Option(
    help:
      "Destination: an IP address, looked up in the ipcache (world-ipv4 or world-ipv6 if none covers it)."
  )
  var toIp: String?

  func validate() throws {
    let sources = [fromIdentity != nil, !fromLabel.isEmpty, fromEndpoint != nil].filter { $0 }
    let destinations = [toIdentity != nil, !toLabel.isEmpty, toEndpoint != nil, toIp != nil]
      .filter { $0 }
    guard sources.count == 1 else {
      throw ValidationError(
        "give the source once: --from-identity, --from-label or --from-endpoint")
    }
    guard destinations.count == 1 else {
      throw ValidationError(
        "give the destination once: --to-identity, --to-label, --to-endpoint or --to-ip")
    }
    if let toIp, IPPrefix(toIp) == nil { throw ValidationError("--to-ip: '\(toIp)' is not an IP") }
  }
}

struct PolicyTraceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "trace",
    abstract: "Explain whether a flow is allowed: the rules that decide each side.",
    discussion: """
      The policy service evaluates the source's egress and the destination's ingress from the
      rule repository and names every rule and section that matches. For an endpoint on this
      node, the policy map the datapath realised is read back and its verdict shown beside it.
      Named ports (port: http) resolve on the destination, so only with --to-endpoint.
      """)
  @OptionGroup var global: GlobalOptions
  @OptionGroup var sides: TraceEndpointOptions
  @Option(
    name: .customLong("protocol"),
    help:
      "Protocol: tcp, udp, sctp, icmp, icmpv6, or any (another protocol, such as GRE: only rules without ports cover it)."
  )
  var protocolName: String = "tcp"
  @Option(
    help:
      "Destination port (default 0); for icmp and icmpv6 the ICMP type, required (8: echo request, 128: ICMPv6 echo request)."
  )
  var port: UInt16?

  private var proto: Tessera_Common_V1_Protocol? {
    switch protocolName.lowercased() {
    case "tcp": .tcp
    case "udp": .udp
    case "sctp": .sctp
    case "icmp": .icmp
    case "icmpv6": .icmpv6
    case "any": .any
    default: nil
    }
  }

  func validate() throws {
    guard let proto else {
      throw ValidationError(
        "--protocol must be tcp, udp, sctp, icmp, icmpv6 or any, not '\(protocolName)'")
    }
    if proto.isICMP {
      guard let port else {
        throw ValidationError("--protocol \(protocolName) needs the ICMP type as --port (0-255)")
      }
      if port > 255 {
        throw ValidationError("--port is the ICMP type for \(protocolName): 0-255, not \(port)")
      }
    }
  }

  func run() async throws {
    let identities = try await IdentityDirectory.load(
      global, required: !sides.fromLabel.isEmpty || !sides.toLabel.isEmpty)
    let source = try await resolve(
      identity: sides.fromIdentity, labels: sides.fromLabel, endpoint: sides.fromEndpoint,
      ip: nil, identities: identities, side: "source"
    ).identity
    let (destination, destinationPorts) = try await resolve(
      identity: sides.toIdentity, labels: sides.toLabel, endpoint: sides.toEndpoint, ip: sides.toIp,
      identities: identities, side: "destination")
    let request = Tessera_Policy_V1_TracePolicyRequest.with {
      $0.sourceIdentity = source
      $0.destinationIdentity = destination
      $0.protocol = proto ?? .tcp
      $0.port = UInt32(port ?? 0)
      // Named ports resolve on the destination pod, known only with --to-endpoint.
      $0.destinationNamedPorts = destinationPorts
    }
    let trace = try await global.withClient(.policy) { client, options in
      try await Tessera_Policy_V1_PolicyService.Client(wrapping: client).tracePolicy(
        request, options: options)
    }
    // What the datapath realised for endpoints on this node, beside what policy says.
    var realised: [String: String] = [:]
    if let endpoint = sides.fromEndpoint {
      realised["egress"] = try await datapathVerdict(
        endpoint: endpoint, peer: destination, direction: .egress)
    }
    if let endpoint = sides.toEndpoint {
      realised["ingress"] = try await datapathVerdict(
        endpoint: endpoint, peer: source, direction: .ingress)
    }
    if global.output == .json {
      try printJSON([
        "allowed": trace.allowed, "revision": Int(trace.revision),
        "source": ["identity": Int(source), "labels": identities.labels[source] ?? []],
        "destination": [
          "identity": Int(destination), "labels": identities.labels[destination] ?? [],
        ],
        "protocol": (proto ?? .tcp).name, "port": Int(port ?? 0),
        "egress": json(trace.egress, realised: realised["egress"]),
        "ingress": json(trace.ingress, realised: realised["ingress"]),
      ])
      return
    }
    print(
      "\(identities.describe(source)) -> \(identities.describe(destination)) \((proto ?? .tcp).name)/\(port ?? 0): \(trace.allowed ? "ALLOWED" : "DENIED") (repository revision \(trace.revision))"
    )
    for direction in [trace.egress, trace.ingress] {
      let side =
        direction.direction == .egress ? "egress of the source" : "ingress of the destination"
      print("  \(side): \(direction.decision)")
      if direction.decision == "allow-node" {
        print(
          "    the node reaches its own pods whatever their ingress rules (tessera-policyd --allow-localhost always)"
        )
      }
      for rule in direction.enforcedBy {
        print("    enforced by \(name(rule.policy)) rule \(rule.rule)")
      }
      for match in direction.matches {
        print(
          "    \(match.verdict == .deny ? "denied" : "allowed") by \(name(match.policy)) rule \(match.rule) section \(match.section)"
        )
      }
      if let verdict = realised[direction.direction == .egress ? "egress" : "ingress"] {
        print("    datapath: \(verdict)")
      }
    }
  }

  private func name(_ ref: Tessera_Policy_V1_PolicyRef) -> String {
    "\(ref.kind) \(ref.namespace.isEmpty ? "" : ref.namespace + "/")\(ref.name)"
  }

  private func json(_ direction: Tessera_Policy_V1_TraceDirection, realised: String?) -> [String:
    Any]
  {
    var object: [String: Any] = [
      "decision": direction.decision, "verdict": direction.verdict == .deny ? "deny" : "allow",
      "subjectIdentity": Int(direction.subjectIdentity),
      "enforcedBy": direction.enforcedBy.map {
        [
          "namespace": $0.policy.namespace, "name": $0.policy.name, "kind": $0.policy.kind,
          "rule": Int($0.rule),
        ] as [String: Any]
      },
      "matches": direction.matches.map {
        [
          "namespace": $0.policy.namespace, "name": $0.policy.name, "kind": $0.policy.kind,
          "rule": Int($0.rule), "section": Int($0.section),
          "verdict": $0.verdict == .deny ? "deny" : "allow",
        ] as [String: Any]
      },
    ]
    if let realised { object["datapath"] = realised }
    return object
  }

  /// The identity a side names, resolved through the identity, endpoint or datapath service,
  /// and for an endpoint its named ports.
  private func resolve(
    identity: UInt32?, labels: [String], endpoint: UInt64?, ip: String?,
    identities: IdentityDirectory, side: String
  ) async throws -> (identity: UInt32, namedPorts: [Tessera_Common_V1_NamedPort]) {
    if let identity { return (identity, []) }
    if !labels.isEmpty {
      let matching = try identities.matching(labels, flag: side)
      guard matching.count == 1 else {
        throw CLIError(
          matching.isEmpty
            ? "\(side): no identity carries \(labels.joined(separator: ","))"
            : "\(side): \(matching.count) identities carry \(labels.joined(separator: ",")) (\(matching.map(String.init).joined(separator: ", "))); add labels or give the identity"
        )
      }
      return (matching[0], [])
    }
    if let endpoint {
      let found = try await global.withClient(.endpoint) { client, options in
        try await Tessera_Endpoint_V1_EndpointService.Client(wrapping: client).getEndpoint(
          .with { $0.endpoint = .with { $0.id = endpoint } }, options: options)
      }
      return (found.identity, found.namedPorts)
    }
    guard let ip,
      let address = IPPrefix(ip.contains("/") ? ip : ip + (ip.contains(":") ? "/128" : "/32"))
    else { throw CLIError("\(side): nothing to resolve") }
    let entries = try await global.withClient(.datapath) { client, options in
      try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).listIPCache(
        .init(), options: options)
    }
    let covering = entries.entries.compactMap { entry -> (IPPrefix, UInt32)? in
      guard let prefix = IPPrefix(entry.prefix), prefix.contains(address) else { return nil }
      return (prefix, entry.identity)
    }
    // As the datapath: an address no entry covers is its family's world.
    let world: NumericIdentity = address.family == .v4 ? .worldIPv4 : .worldIPv6
    return (covering.max { $0.0.length < $1.0.length }?.1 ?? world.rawValue, [])
  }

  /// The verdict the endpoint's realised policy map gives (TesseraCore's reference
  /// semantics over the entries read back from the kernel).
  private func datapathVerdict(endpoint: UInt64, peer: UInt32, direction: TrafficDirection)
    async throws -> String
  {
    let realised = try await global.withClient(.datapath) { client, options in
      try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).getEndpointPolicy(
        .with { $0.endpointID = endpoint }, options: options)
    }
    let policy = try EndpointPolicy(proto: realised.policy)
    let verdict = policy.verdict(
      peer: NumericIdentity(peer), direction: direction,
      proto: L4Protocol(rawValue: UInt8(clamping: (proto ?? .tcp).rawValue)) ?? .any,
      port: port ?? 0)
    return
      "\(verdict == .deny ? "deny" : "allow") (endpoint \(endpoint), revision \(realised.realizedRevision))"
  }
}
