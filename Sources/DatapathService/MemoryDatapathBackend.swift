import Synchronization
import TesseraCore

/// Keeps policy in memory and enforces nothing.
///
/// - Important: a test backend for unprivileged unit tests. It is never the
///   default where eBPF is available, and `status` reports it as such.
public final class MemoryDatapathBackend: DatapathBackend {
  private struct State {
    var policyMaps: [UInt64: [PolicyEntry.Key: PolicyEntry]] = [:]
    var ipcache: [IPPrefix: NumericIdentity] = [:]
    var applied: [UInt64: DatapathEndpoint] = [:]
  }

  private let state = Mutex(State())

  public init() {}

  public var name: String { "memory (test backend: nothing is enforced)" }

  public func restoreEndpoints() throws(DatapathError) -> [DatapathEndpoint] {
    state.withLock { Array($0.applied.values) }
  }

  public func apply(_ change: EndpointChange) throws(DatapathError) {
    state.withLock { state in
      var map = change.isNew ? [:] : state.policyMaps[change.endpoint.id, default: [:]]
      for key in change.deletes { map[key] = nil }
      for entry in change.upserts { map[entry.key] = entry }
      state.policyMaps[change.endpoint.id] = map
      state.applied[change.endpoint.id] = change.endpoint
    }
  }

  public func removeEndpoint(_ endpoint: DatapathEndpoint) throws(DatapathError) {
    state.withLock { state in
      state.policyMaps[endpoint.id] = nil
      state.applied[endpoint.id] = nil
    }
  }

  public func upsertIPCache(_ entries: [IPCacheEntry]) throws(DatapathError) {
    state.withLock { state in
      for entry in entries { state.ipcache[entry.prefix] = entry.identity }
    }
  }

  public func deleteIPCache(_ prefixes: [IPPrefix]) throws(DatapathError) {
    state.withLock { state in
      for prefix in prefixes { state.ipcache[prefix] = nil }
    }
  }

  /// No flows are tracked here.
  public func forgetFlows(with addresses: [IPPrefix]) throws(DatapathError) {}

  public func ipcacheIdentity(of address: IPPrefix) throws(DatapathError) -> NumericIdentity? {
    state.withLock { state in
      state.ipcache.filter { $0.key.contains(address) }.max { $0.key.length < $1.key.length }?
        .value
    }
  }

  public func ipcacheEntries() throws(DatapathError) -> [IPCacheEntry] {
    state.withLock { $0.ipcache.map { IPCacheEntry(prefix: $0.key, identity: $0.value) }.sorted() }
  }

  public func policyEntries(endpointID: UInt64) throws(DatapathError) -> [PolicyEntry] {
    try state.withLock { (state) throws(DatapathError) -> [PolicyEntry] in
      guard let map = state.policyMaps[endpointID] else {
        throw DatapathError(code: .notFound, message: "endpoint \(endpointID) has no policy map")
      }
      return map.values.sorted()
    }
  }

  public func conntrackEntries() throws(DatapathError) -> [ConntrackEntry] { [] }
  public var conntrackMaxEntries: UInt32 { 0 }

  public func counters(endpointID: UInt64) throws(DatapathError) -> EndpointCounters {
    EndpointCounters()
  }
}
