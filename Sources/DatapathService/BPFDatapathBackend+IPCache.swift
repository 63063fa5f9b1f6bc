import CTesseraBPF
import Synchronization
import TesseraCore

#if canImport(Glibc)
  import Glibc
#endif

/// The ipcache (`tessera_ipcache`): prefix to identity, including the node's own addresses as `host`.
extension BPFDatapathBackend {
  public func upsertIPCache(_ entries: [IPCacheEntry]) throws(DatapathError) {
    for entry in entries {
      var value = ipcache_value()
      value.identity = entry.identity.rawValue
      try LibBPF.update(
        loader.ipcacheFD, Self.ipcacheKey(entry.prefix), value,
        "writing \(entry.prefix) to the ipcache")
    }
  }

  public func deleteIPCache(_ prefixes: [IPPrefix]) throws(DatapathError) {
    for prefix in prefixes {
      try LibBPF.delete(
        loader.ipcacheFD, Self.ipcacheKey(prefix), "deleting \(prefix) from the ipcache")
    }
  }

  public func ipcacheEntries() throws(DatapathError) -> [IPCacheEntry] {
    var entries: [IPCacheEntry] = []
    for key in try LibBPF.keys(loader.ipcacheFD, as: ipcache_key.self, "listing the ipcache") {
      guard
        let value = try LibBPF.lookup(
          loader.ipcacheFD, key, as: ipcache_value.self, "reading the ipcache"),
        let prefix = Self.prefix(of: key)
      else { continue }
      entries.append(IPCacheEntry(prefix: prefix, identity: NumericIdentity(value.identity)))
    }
    return entries.sorted()
  }

  /// Puts the node's own addresses (this network namespace) in the ipcache
  /// as `host`; with `removeStale`, drops `host` entries no longer local.
  func syncHostAddresses(removeStale: Bool) throws(DatapathError) {
    let local = Self.localAddresses()
    let known = state.withLock { $0.hostAddresses }
    let added = local.subtracting(known)
    if !added.isEmpty {
      try upsertIPCache(added.sorted().map { IPCacheEntry(prefix: $0, identity: .host) })
    }
    if removeStale {
      let stale = try ipcacheEntries().filter { $0.identity == .host && !local.contains($0.prefix) }
        .map(\.prefix)
      if !stale.isEmpty { try deleteIPCache(stale) }
    }
    state.withLock { $0.hostAddresses = local }
  }

  private static func localAddresses() -> Set<IPPrefix> {
    var result = Set<IPPrefix>()
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return result }
    defer { freeifaddrs(list) }
    var cursor: UnsafeMutablePointer<ifaddrs>? = first
    while let entry = cursor {
      defer { cursor = entry.pointee.ifa_next }
      guard let address = entry.pointee.ifa_addr else { continue }
      switch Int32(address.pointee.sa_family) {
      case AF_INET:
        var bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
          $0.pointee.sin_addr
        }
        let text = withUnsafeBytes(of: &bytes) { Self.addressText(family: .v4, bytes: Array($0)) }
        if let prefix = IPPrefix(text) { result.insert(prefix) }
      case AF_INET6:
        var bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
          $0.pointee.sin6_addr
        }
        let text = withUnsafeBytes(of: &bytes) { Self.addressText(family: .v6, bytes: Array($0)) }
        if let prefix = IPPrefix(text) { result.insert(prefix) }
      default:
        continue
      }
    }
    return result
  }

  private static func ipcacheKey(_ prefix: IPPrefix) throws(DatapathError) -> ipcache_key {
    let size = prefix.family == .v4 ? 4 : 16
    guard prefix.bytes.count == size, Int(prefix.length) <= size * 8 else {
      throw DatapathError(code: .invalidArgument, message: "malformed prefix \(prefix)")
    }
    var key = ipcache_key()
    key.prefixlen = UInt32(TESSERA_IPCACHE_STATIC_PREFIX) + UInt32(prefix.length)
    key.family = prefix.family == .v4 ? UInt8(TESSERA_FAMILY_V4) : UInt8(TESSERA_FAMILY_V6)
    withUnsafeMutableBytes(of: &key.addr) { raw in
      for (i, byte) in prefix.bytes.enumerated() { raw[i] = byte }
    }
    return key
  }

  private static func prefix(of key: ipcache_key) -> IPPrefix? {
    var key = key
    let family: IPPrefix.Family = key.family == UInt8(TESSERA_FAMILY_V6) ? .v6 : .v4
    guard key.prefixlen >= UInt32(TESSERA_IPCACHE_STATIC_PREFIX) else { return nil }
    let length = key.prefixlen - UInt32(TESSERA_IPCACHE_STATIC_PREFIX)
    return IPPrefix("\(addressText(family: family, &key.addr))/\(length)")
  }
}
