import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension DatapathServiceHandler {
  public func upsertIPCache(
    request: Tessera_Datapath_V1_UpsertIPCacheRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_IPCacheResponse {
    let entries = try request.entries.map { entry throws(RPCError) in
      IPCacheEntry(
        prefix: try IPPrefix(parsing: entry.prefix), identity: NumericIdentity(entry.identity))
    }
    if request.cidr {
      try datapath.upsertCIDREntries(entries)
    } else {
      try datapath.upsertIPCache(entries)
    }
    return .with { $0.changed = UInt32(entries.count) }
  }

  public func deleteIPCache(
    request: Tessera_Datapath_V1_DeleteIPCacheRequest, context: ServerContext
  ) async throws -> Tessera_Datapath_V1_IPCacheResponse {
    let prefixes = try request.prefixes.map { text throws(RPCError) in try IPPrefix(parsing: text) }
    if request.cidr {
      try datapath.deleteCIDREntries(prefixes)
    } else {
      try datapath.deleteIPCache(prefixes, endingFlows: request.endFlows)
    }
    return .with { $0.changed = UInt32(prefixes.count) }
  }

  public func listIPCache(request: Tessera_Datapath_V1_ListIPCacheRequest, context: ServerContext)
    async throws -> Tessera_Datapath_V1_ListIPCacheResponse
  {
    let entries = try datapath.ipcacheEntries()
    return .with { $0.entries = entries.map(Tessera_Datapath_V1_IPCacheEntry.init) }
  }
}
