import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// The gRPC face of the datapath; one RPC per file in `DatapathService+*.swift`.
public struct DatapathServiceHandler: Tessera_Datapath_V1_DatapathService.SimpleServiceProtocol {
  let datapath: Datapath
  let logger: Logger

  public init(datapath: Datapath, logger: Logger) {
    self.datapath = datapath
    self.logger = logger
  }
}

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
