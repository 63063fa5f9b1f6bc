import TesseraCore
import TesseraProto

// The datapath service's wire conversions: domain types to and from its protos, in one place.

extension Tessera_Datapath_V1_DatapathEndpoint {
  init(_ endpoint: DatapathEndpoint, entries: [PolicyEntry]? = nil) {
    self.init()
    endpointID = endpoint.id
    hostInterface = endpoint.hostInterface
    ips = endpoint.ips.map { $0.isHost ? $0.address : $0.description }
    identity = endpoint.identity.rawValue
    realizedRevision = endpoint.policy.revision
    var policy = endpoint.policy
    if let entries { policy.entries = entries }
    self.policy = .init(policy)
  }
}

extension Tessera_Datapath_V1_IPCacheEntry {
  init(_ entry: IPCacheEntry) {
    self.init()
    prefix = entry.prefix.description
    identity = entry.identity.rawValue
  }
}
