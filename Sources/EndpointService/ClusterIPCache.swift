import EtcdProto
import Foundation
import Logging
import Synchronization
import TesseraCore
import TesseraEtcd
import TesseraRuntime

/// Shares endpoint addresses between nodes through etcd, so each node's
/// ipcache knows the identity of pods on other nodes (DESIGN §4).
///
/// Publishes `<prefix>/<address>` → `{"identity":…,"node":…}` for every local
/// endpoint whose identity is realised, bound to this node's lease (a node
/// that dies withdraws its addresses); watches the prefix and writes other
/// nodes' entries into the local datapath. The local datapath is brought back
/// in line every few seconds, so a restarted datapath service relearns them.
public final class ClusterIPCache: Sendable {
  public struct Configuration: Sendable {
    public var prefix: String
    public var nodeName: String
    public var leaseTTLSeconds: Int64
    /// How often the datapath is re-sent every remote entry.
    public var resyncInterval: Duration

    public init(prefix: String = "/tessera/ipcache", nodeName: String, leaseTTLSeconds: Int64 = 30, resyncInterval: Duration = .seconds(10)) {
      self.prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
      self.nodeName = nodeName
      self.leaseTTLSeconds = leaseTTLSeconds
      self.resyncInterval = resyncInterval
    }
  }

  struct Entry: Codable, Hashable, Sendable {
    var identity: UInt32
    var node: String
  }

  private struct State: Sendable {
    var lease: Int64 = 0
    /// What etcd holds for this node.
    var published: [IPPrefix: NumericIdentity] = [:]
    /// Every other node's entries, as last read or watched.
    var remote: [IPPrefix: Entry] = [:]
    /// What this synchroniser wrote into the local datapath.
    var installed: [IPPrefix: NumericIdentity] = [:]
  }

  public let configuration: Configuration
  private let client: EtcdClient
  private let datapath: any IPCacheWriting
  private let localEntries: @Sendable () -> [IPPrefix: NumericIdentity]
  private let state = Mutex(State())
  private let localChanged: Wakeup
  private let remoteChanged = Wakeup()
  private let logger: Logger

  /// - Parameters:
  ///   - localChanged: signalled when `localEntries` may have changed.
  ///   - localEntries: this node's endpoint addresses with realised identities.
  public init(
    configuration: Configuration, client: EtcdClient, datapath: any IPCacheWriting,
    logger: Logger = Logger(label: "tessera.ipcache"), localChanged: Wakeup,
    localEntries: @escaping @Sendable () -> [IPPrefix: NumericIdentity]
  ) {
    self.localChanged = localChanged
    self.configuration = configuration
    self.client = client
    self.datapath = datapath
    self.logger = logger
    self.localEntries = localEntries
  }

  /// Other nodes' entries as last seen.
  public var remoteEntries: [IPPrefix: (identity: NumericIdentity, node: String)] {
    state.withLock { $0.remote.mapValues { (NumericIdentity($0.identity), $0.node) } }
  }

  private func key(_ prefix: IPPrefix) -> String { "\(configuration.prefix)/\(prefix)" }

  private func prefix(fromKey key: Data) -> IPPrefix? {
    let text = String(decoding: key, as: UTF8.self)
    guard text.hasPrefix(configuration.prefix + "/") else { return nil }
    return IPPrefix(String(text.dropFirst(configuration.prefix.count + 1)))
  }

  /// Runs until cancelled, reconnecting by itself.
  public func run() async throws {
    let session = EtcdSession(client: client, prefix: configuration.prefix + "/", leaseTTLSeconds: configuration.leaseTTLSeconds, logger: logger)
    try await session.run(.init(
      lease: {
        // A fresh lease each session: what was published under the old one is gone with it.
        let lease = try await self.client.grantLease(ttl: self.configuration.leaseTTLSeconds)
        self.state.withLock {
          $0.lease = lease
          $0.published = [:]
        }
        return lease
      },
      load: { _ in try await self.loadAndClearStale() },
      apply: { events in self.apply(events) },
      loops: [{ try await self.publishLoop() }, { try await self.installLoop() }]))
  }

  /// Reads every entry; keeps other nodes' and deletes this node's leftovers from an earlier run.
  private func loadAndClearStale() async throws -> Int64 {
    let (kvs, revision) = try await client.rangeAll(prefix: configuration.prefix + "/")
    var remote: [IPPrefix: Entry] = [:]
    var stale: [String] = []
    for kv in kvs {
      guard let prefix = prefix(fromKey: kv.key), let entry = try? JSONDecoder().decode(Entry.self, from: kv.value) else { continue }
      if entry.node == configuration.nodeName {
        if kv.lease != state.withLock({ $0.lease }) { stale.append(key(prefix)) }
      } else {
        remote[prefix] = entry
      }
    }
    for chunk in stride(from: 0, to: stale.count, by: 64) {
      _ = try await client.txn(Etcd.txn(when: [], then: stale[chunk..<min(chunk + 64, stale.count)].map(Etcd.delete)))
    }
    state.withLock { $0.remote = remote }
    remoteChanged.signal()
    localChanged.signal()
    return revision
  }

  private func apply(_ events: [Mvccpb_Event]) {
    state.withLock { state in
      for event in events {
        guard let prefix = prefix(fromKey: event.kv.key) else { continue }
        switch event.type {
        case .put:
          guard let entry = try? JSONDecoder().decode(Entry.self, from: event.kv.value), entry.node != configuration.nodeName else { continue }
          state.remote[prefix] = entry
        case .delete:
          state.remote[prefix] = nil
        default:
          continue
        }
      }
    }
    remoteChanged.signal()
  }

  /// Makes etcd hold exactly this node's realised endpoint addresses.
  private func publishLoop() async throws {
    while true {
      let wanted = localEntries()
      let (lease, published) = state.withLock { ($0.lease, $0.published) }
      var operations: [Etcdserverpb_RequestOp] = []
      for (prefix, identity) in wanted where published[prefix] != identity {
        let value = try JSONEncoder().encode(Entry(identity: identity.rawValue, node: configuration.nodeName))
        operations.append(Etcd.put(key(prefix), String(decoding: value, as: UTF8.self), lease: lease))
      }
      for prefix in published.keys where wanted[prefix] == nil {
        operations.append(Etcd.delete(key(prefix)))
      }
      // Leased puts inside a Txn: a plain leased Put costs O(keys on the lease) in etcd 3.4.
      for chunk in stride(from: 0, to: operations.count, by: 64) {
        _ = try await client.txn(Etcd.txn(when: [], then: Array(operations[chunk..<min(chunk + 64, operations.count)])))
      }
      if !operations.isEmpty {
        state.withLock { $0.published = wanted }
        logger.debug("published endpoint addresses", metadata: ["changes": "\(operations.count)", "total": "\(wanted.count)"])
      }
      await localChanged.wait(timeout: .seconds(5))
      try Task.checkCancellation()
    }
  }

  /// Writes other nodes' entries into the local datapath: changes at once, everything every resync interval.
  private func installLoop() async throws {
    var lastFull = ContinuousClock.now - configuration.resyncInterval
    while true {
      let local = localEntries()
      let (remote, installed) = state.withLock { ($0.remote, $0.installed) }
      var wanted: [IPPrefix: NumericIdentity] = [:]
      for (prefix, entry) in remote where local[prefix] == nil { wanted[prefix] = NumericIdentity(entry.identity) }
      let full = ContinuousClock.now - lastFull >= configuration.resyncInterval
      let upserts = full ? wanted : wanted.filter { installed[$0.key] != $0.value }
      let deletes = installed.keys.filter { wanted[$0] == nil && local[$0] == nil }
      do {
        try await datapath.upsertIPCache(upserts)
        try await datapath.deleteIPCache(Array(deletes))
        state.withLock { $0.installed = wanted }
        if full { lastFull = ContinuousClock.now }
        if !upserts.isEmpty || !deletes.isEmpty {
          logger.debug("ipcache learned from other nodes", metadata: ["upserts": "\(upserts.count)", "deletes": "\(deletes.count)"])
        }
      } catch {
        logger.warning("cannot write other nodes' addresses to the datapath yet", metadata: ["error": "\(error)"])
      }
      await remoteChanged.wait(timeout: .seconds(2))
      try Task.checkCancellation()
    }
  }
}
