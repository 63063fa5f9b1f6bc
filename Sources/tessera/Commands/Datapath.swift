import ArgumentParser
import GRPCCore
import TesseraProto
import TesseraRuntime

struct DatapathCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "datapath", abstract: "Inspect what the datapath has realised.",
    subcommands: [
      DatapathPolicy.self, DatapathIPCache.self, DatapathConntrack.self, DatapathCounters.self,
      DatapathFlows.self,
    ])
}

struct DatapathPolicy: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "policy", abstract: "Policy maps.", subcommands: [DatapathPolicyGet.self])
}

extension Tessera_Common_V1_Protocol {
  /// The name policies use.
  var name: String {
    switch self {
    case .tcp: "TCP"
    case .udp: "UDP"
    case .sctp: "SCTP"
    case .icmp: "ICMP"
    case .icmpv6: "ICMPv6"
    default: "ANY"
    }
  }

  /// Whether entries of this protocol carry ICMP types instead of ports.
  var isICMP: Bool { self == .icmp || self == .icmpv6 }
}

extension Tessera_Common_V1_PolicyEntry {
  /// Ports, or the ICMP types of an ICMP entry (type 0 included).
  var portText: String {
    if port == 0 && endPort == 0 && !`protocol`.isICMP { return "any" }
    let range = endPort == 0 ? String(port) : "\(port)-\(endPort)"
    return `protocol`.isICMP ? "type \(range)" : range
  }
  var protocolText: String { `protocol`.name }
  var json: [String: Any] {
    [
      "peerIdentity": Int(peerIdentity), "direction": direction == .ingress ? "ingress" : "egress",
      "protocol": protocolText,
      "port": Int(port), "endPort": Int(endPort), "verdict": verdict == .deny ? "deny" : "allow",
    ]
  }
}

struct DatapathPolicyGet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "get",
    abstract: "Show an endpoint's realised policy map, read back from the datapath.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Endpoint ID.") var endpoint: UInt64

  func run() async throws {
    let id = endpoint
    let result = try await global.withClient(.datapath) { client, options in
      try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).getEndpointPolicy(
        .with { $0.endpointID = id }, options: options)
    }
    // A daemon that predates the counters sends the entries without them.
    let entries =
      result.entries.isEmpty
      ? result.policy.entries.map { entry in
        Tessera_Datapath_V1_DatapathPolicyEntry.with { $0.entry = entry }
      } : result.entries
    let identities = try await IdentityDirectory.load(global, required: false)
    if global.output == .json {
      try printJSON([
        "endpoint": Int(result.endpointID), "identity": Int(result.identity),
        "hostInterface": result.hostInterface,
        "realizedRevision": Int(result.realizedRevision),
        "ingressEnforced": result.policy.ingressEnforced,
        "egressEnforced": result.policy.egressEnforced,
        "entries": entries.map { counted in
          var json = counted.entry.json
          json["peerLabels"] = identities.labels[counted.entry.peerIdentity] ?? []
          json["packets"] = Int(counted.packets)
          json["bytes"] = Int(counted.bytes)
          return json
        },
      ])
    } else {
      print(
        "endpoint \(result.endpointID) identity \(result.identity) revision \(result.realizedRevision) ingress \(result.policy.ingressEnforced ? "enforced" : "default-allow") egress \(result.policy.egressEnforced ? "enforced" : "default-allow")"
      )
      printTable(
        ["DIRECTION", "PEER", "PROTO", "PORT", "VERDICT", "PACKETS", "BYTES"],
        entries.map { counted in
          let entry = counted.entry
          return [
            entry.direction == .ingress ? "ingress" : "egress",
            entry.peerIdentity == 0 ? "any" : identities.describe(entry.peerIdentity),
            entry.protocolText, entry.portText, entry.verdict == .deny ? "deny" : "allow",
            String(counted.packets), String(counted.bytes),
          ]
        })
    }
  }
}

struct DatapathIPCache: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ipcache", abstract: "The ipcache.", subcommands: [DatapathIPCacheList.self])
}

struct DatapathIPCacheList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "List IP prefix → identity entries.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let result = try await global.withClient(.datapath) { client, options in
      try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).listIPCache(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON([
        "entries": result.entries.map { ["prefix": $0.prefix, "identity": Int($0.identity)] }
      ])
    } else {
      printTable(["PREFIX", "IDENTITY"], result.entries.map { [$0.prefix, String($0.identity)] })
    }
  }
}

struct DatapathConntrack: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ct", abstract: "Conntrack.", subcommands: [DatapathConntrackList.self])
}

struct DatapathConntrackList: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "List tracked connections, read from the kernel's conntrack map."
  )
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let result = try await global.withClient(.datapath) { client, options in
      try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).listConntrack(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON([
        "maxEntries": Int(result.maxEntries),
        "entries": result.entries.map {
          [
            "endpoint": Int($0.endpointID),
            "direction": $0.direction == .ingress ? "ingress" : "egress",
            "protocol": $0.protocol.name, "source": $0.source,
            "sourcePort": Int($0.sourcePort),
            "destination": $0.destination, "destinationPort": Int($0.destinationPort),
            "packets": Int($0.packets),
            "idleMs": Int($0.idleNanoseconds / 1_000_000),
          ] as [String: Any]
        },
      ])
    } else {
      printTable(
        ["ENDPOINT", "DIR", "PROTO", "SOURCE", "DESTINATION", "PACKETS", "IDLE"],
        result.entries.map {
          [
            String($0.endpointID), $0.direction == .ingress ? "ingress" : "egress",
            $0.protocol.name,
            "\($0.source):\($0.sourcePort)", "\($0.destination):\($0.destinationPort)",
            String($0.packets),
            "\($0.idleNanoseconds / 1_000_000) ms",
          ]
        })
      if result.maxEntries > 0 {
        print("\(result.entries.count) of \(result.maxEntries) entries in use")
      }
    }
  }
}

struct DatapathCounters: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "counters",
    abstract: "Forwarded and dropped packets of an endpoint, by direction and reason.")
  @OptionGroup var global: GlobalOptions
  @Argument(help: "Endpoint ID.") var endpoint: UInt64

  func run() async throws {
    let id = endpoint
    let counters = try await global.withClient(.datapath) { client, options in
      try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).getEndpointCounters(
        .with { $0.endpointID = id }, options: options)
    }
    if global.output == .json {
      try printJSON([
        "endpoint": Int(counters.endpointID), "ingressForwarded": Int(counters.ingressForwarded),
        "ingressDropped": Int(counters.ingressDropped),
        "egressForwarded": Int(counters.egressForwarded),
        "egressDropped": Int(counters.egressDropped),
        "reasons": counters.reasons.map { reason -> [String: Any] in
          [
            "direction": reason.direction == .ingress ? "ingress" : "egress",
            "reason": reason.reason, "packets": Int(reason.packets),
          ]
        },
      ])
    } else {
      printTable(
        ["DIRECTION", "FORWARDED", "DROPPED"],
        [
          ["ingress", String(counters.ingressForwarded), String(counters.ingressDropped)],
          ["egress", String(counters.egressForwarded), String(counters.egressDropped)],
        ])
      let reasons = counters.reasons.filter { $0.packets > 0 }
      if !reasons.isEmpty {
        print()
        printTable(
          ["DIRECTION", "REASON", "PACKETS"],
          reasons.map { reason in
            [
              reason.direction == .ingress ? "ingress" : "egress", reason.reason,
              String(reason.packets),
            ]
          })
      }
    }
  }
}

struct DatapathFlows: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "flows",
    abstract: "Events read from the datapath, lost by a full ring buffer, and kept for `observe`.")
  @OptionGroup var global: GlobalOptions

  func run() async throws {
    let stats = try await global.withClient(.datapath) { client, options in
      try await Tessera_Datapath_V1_DatapathService.Client(wrapping: client).getFlowStats(
        .init(), options: options)
    }
    if global.output == .json {
      try printJSON([
        "supported": stats.supported, "received": Int(stats.received), "lost": Int(stats.lost),
        "buffered": Int(stats.buffered), "capacity": Int(stats.capacity),
      ])
    } else if !stats.supported {
      print("events: not emitted by this datapath (the memory test backend)")
    } else {
      print(
        "events received \(stats.received), lost in the kernel \(stats.lost), kept \(stats.buffered) of \(stats.capacity)"
      )
    }
  }
}
