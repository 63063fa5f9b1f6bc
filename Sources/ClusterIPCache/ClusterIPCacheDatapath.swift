import TesseraCore

/// The local datapath's ipcache as the cluster ipcache writes it: addresses of
/// endpoints on other nodes and their identities.
public protocol ClusterIPCacheDatapath: Sendable {
  func upsertIPCache(_ entries: [IPPrefix: NumericIdentity]) async throws
  func deleteIPCache(_ prefixes: [IPPrefix]) async throws
}
