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

  public func forgetFlows(with addresses: [IPPrefix]) throws(DatapathError) {
    try loader.forgetFlows(with: addresses)
  }

  public func ipcacheIdentity(of address: IPPrefix) throws(DatapathError) -> NumericIdentity? {
    try LibBPF.lookup(
      loader.ipcacheFD, Self.ipcacheKey(address), as: ipcache_value.self,
      "looking \(address) up in the ipcache"
    ).map { NumericIdentity($0.identity) }
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

  static func ipcacheKey(_ prefix: IPPrefix) throws(DatapathError) -> ipcache_key {
    let size = prefix.family == .v4 ? 4 : 16
    guard prefix.bytes.count == size, Int(prefix.length) <= size * 8 else {
      throw DatapathError(code: .invalidArgument, message: "malformed prefix \(prefix)")
    }
    let address = BPFLoader.flowAddress(prefix)
    var key = ipcache_key()
    key.prefixlen = UInt32(TESSERA_IPCACHE_STATIC_PREFIX) + UInt32(prefix.length)
    key.family = address.family
    key.addr = address.addr
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
