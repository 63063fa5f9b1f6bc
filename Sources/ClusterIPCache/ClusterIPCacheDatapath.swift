import TesseraCore

/// The local datapath's ipcache as the cluster ipcache writes it: addresses of
/// endpoints on other nodes and their identities.
public protocol ClusterIPCacheDatapath: Sendable {
  func upsertIPCache(_ entries: [IPPrefix: NumericIdentity]) async throws
  /// Unmaps addresses; with `endingFlows` (their holders released them) every tracked
  /// flow with one of them ends too.
  func deleteIPCache(_ prefixes: [IPPrefix], endingFlows: Bool) async throws
}
