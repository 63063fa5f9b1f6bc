import TesseraCore
import TesseraProto

// The datapath service's wire conversions: domain types to and from its protos, in one place.

extension Tessera_Datapath_V1_DatapathEndpoint {
  /// With `entries`, the policy is the entries read back from the map, with their counters.
  init(_ endpoint: DatapathEndpoint, entries: [CountedPolicyEntry]? = nil) {
    self.init()
    endpointID = endpoint.id
    hostInterface = endpoint.hostInterface
    ips = endpoint.ips.map { $0.isHost ? $0.address : $0.description }
    identity = endpoint.identity.rawValue
    realizedRevision = endpoint.policy.revision
    var policy = endpoint.policy
    if let entries { policy.entries = entries.map(\.entry) }
    self.policy = .init(policy)
    if let entries { self.entries = entries.map(Tessera_Datapath_V1_DatapathPolicyEntry.init) }
  }
}

extension Tessera_Datapath_V1_DatapathPolicyEntry {
  init(_ counted: CountedPolicyEntry) {
    self.init()
    entry = .init(counted.entry)
    packets = counted.packets
    bytes = counted.bytes
  }
}

extension Tessera_Datapath_V1_IPCacheEntry {
  init(_ entry: IPCacheEntry) {
    self.init()
    prefix = entry.prefix.description
    identity = entry.identity.rawValue
  }
}

extension Tessera_Datapath_V1_FlowEvent {
  init(_ event: FlowEvent) {
    self.init()
    timeUnixNano = Int64(event.time.timeIntervalSince1970 * 1e9)
    endpointID = event.endpointID
    direction = Tessera_Common_V1_Direction(event.direction)
    verdict = event.verdict == .dropped ? .dropped : .forwarded
    reason = event.reason
    match = Tessera_Datapath_V1_PolicyMatch(rawValue: Int(event.match.rawValue)) ?? .none
    state =
      switch event.state {
      case .none: ""
      case .new: "new"
      case .closing: "closing"
      }
    ipProtocol = UInt32(event.ipProtocol)
    sourceIp = event.source
    destinationIp = event.destination
    sourcePort = UInt32(event.sourcePort)
    destinationPort = UInt32(event.destinationPort)
    sourceIdentity = event.sourceIdentity
    destinationIdentity = event.destinationIdentity
    length = event.length
    if let type = event.icmpType { icmpType = UInt32(type) }
  }
}

extension FlowFilter {
  init(_ filter: Tessera_Datapath_V1_FlowFilter) {
    self.init()
    switch filter.verdict {
    case .forwarded: verdict = .forwarded
    case .dropped: verdict = .dropped
    default: verdict = nil
    }
    policyVerdictsOnly = filter.policyVerdictsOnly
    endpointID = filter.endpointID == 0 ? nil : filter.endpointID
    identities = Set(filter.identities)
    sourceIdentities = Set(filter.sourceIdentities)
    destinationIdentities = Set(filter.destinationIdentities)
    port = filter.port == 0 ? nil : UInt16(clamping: filter.port)
  }
}
