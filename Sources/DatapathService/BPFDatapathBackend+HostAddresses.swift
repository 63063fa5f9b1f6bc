import CTesseraBPF
import Synchronization
import TesseraCore

#if canImport(Glibc)
  import Glibc
#endif

/// The node's own addresses in the ipcache as `host`, kept equal to what the
/// kernel delivers to the node itself (docs/architecture.md §5): the prefixes
/// of its local routing table (its addresses, broadcast addresses, IPv6 anycast
/// and multicast), and IPv4's limited broadcast and multicast, which the kernel
/// delivers to the node's sockets without a route. Listed at start, the
/// attached device's own listed as an endpoint is attached (ptp gives the
/// host-side veth the pod's gateway address before the chain reaches Tessera),
/// and every other change followed by ``HostAddressWatch``. A prefix leaves
/// the ipcache when the last device holding it loses it, as a deleted pod's
/// veth takes its link-local address with it.
extension BPFDatapathBackend {
  /// One prefix of one device: listed (present), or a change the kernel reported.
  struct HostAddress: Hashable, Sendable {
    var prefix: IPPrefix
    var ifindex: Int32
    var present: Bool
  }

  /// The node's whatever its routes: 255.255.255.255 and 224.0.0.0/4 reach its
  /// sockets (a socket bound to 0.0.0.0 receives broadcasts, and multicast with
  /// `mc_all`) though no local route names them. Held by no device (-1), so no
  /// change removes them.
  static let alwaysHostAddresses = ["255.255.255.255/32", "224.0.0.0/4"].map {
    HostAddress(prefix: IPPrefix($0)!, ifindex: -1, present: true)
  }

  /// Makes the ipcache's `host` entries the node's addresses, all of them
  /// listed again: at start, and when the watch lost changes.
  func syncHostAddresses() throws(DatapathError) {
    let devices = Dictionary(
      grouping: try HostAddressWatchHandle.list() + Self.alwaysHostAddresses, by: \.prefix
    ).mapValues { Set($0.map(\.ifindex)) }
    try state.withLock { state throws(DatapathError) in
      let added = devices.keys.filter { state.hostAddressDevices[$0] == nil }
      if !added.isEmpty {
        try upsertIPCache(added.sorted().map { IPCacheEntry(prefix: $0, identity: .host) })
      }
      let stale = try ipcacheEntries().filter { $0.identity == .host && devices[$0.prefix] == nil }
        .map(\.prefix)
      if !stale.isEmpty { try deleteIPCache(stale) }
      state.hostAddressDevices = devices
    }
  }

  /// Adds the addresses the device holds now; one device is listed, so the
  /// cost does not grow with the node's pods.
  func addHostAddresses(ofDevice ifindex: Int32) throws(DatapathError) {
    try applyHostAddressChanges(try HostAddressWatchHandle.list(ifindex: ifindex))
  }

  /// Applies listed addresses and reported changes: an address enters the
  /// ipcache with its first device and leaves it with its last, and only
  /// while the entry is still `host`'s.
  func applyHostAddressChanges(_ changes: [HostAddress]) throws(DatapathError) {
    try state.withLock { state throws(DatapathError) in
      for change in changes {
        var devices = state.hostAddressDevices[change.prefix] ?? []
        if change.present {
          guard devices.insert(change.ifindex).inserted else { continue }
          state.hostAddressDevices[change.prefix] = devices
          if devices.count == 1 {
            try upsertIPCache([IPCacheEntry(prefix: change.prefix, identity: .host)])
          }
        } else {
          guard devices.remove(change.ifindex) != nil else { continue }
          state.hostAddressDevices[change.prefix] = devices.isEmpty ? nil : devices
          if devices.isEmpty,
            try LibBPF.lookup(
              loader.ipcacheFD, Self.ipcacheKey(change.prefix), as: ipcache_value.self,
              "reading the ipcache")?.identity == NumericIdentity.host.rawValue
          {
            try deleteIPCache([change.prefix])
          }
        }
      }
    }
  }

  /// The `host` addresses the backend holds, for tests and inspection.
  var hostAddresses: Set<IPPrefix> { state.withLock { Set($0.hostAddressDevices.keys) } }
}

/// A subscription to the kernel's address changes (`struct
/// tessera_host_address_watch`), and listings of addresses.
final class HostAddressWatchHandle: @unchecked Sendable {
  // One reader at a time (HostAddressWatch's thread); the pointer never changes.
  private let watch: OpaquePointer

  init() throws(DatapathError) {
    var watch: OpaquePointer?
    try LibBPF.check(
      tessera_host_address_watch_open(&watch), "subscribing to the node's address changes")
    guard let watch else {
      throw DatapathError(code: .kernel, message: "address watch missing after open")
    }
    self.watch = watch
  }

  deinit { tessera_host_address_watch_close(watch) }

  /// What the read found.
  enum Reading {
    case changes([BPFDatapathBackend.HostAddress])
    /// The kernel dropped changes (its buffer was full): list everything again.
    case lost
  }

  /// Waits up to `timeoutMilliseconds` for changes.
  func read(timeoutMilliseconds: Int32) throws(DatapathError) -> Reading {
    let collected = Collected()
    let rc = tessera_host_address_watch_read(
      watch, timeoutMilliseconds, Collected.add, Unmanaged.passUnretained(collected).toOpaque())
    withExtendedLifetime(collected) {}
    if rc == -ENOBUFS { return .lost }
    try LibBPF.check(rc, "reading the node's address changes")
    return .changes(collected.addresses)
  }

  /// The local-table prefixes of device `ifindex`, or of every device.
  static func list(ifindex: Int32 = 0) throws(DatapathError) -> [BPFDatapathBackend.HostAddress] {
    let collected = Collected()
    let rc = tessera_host_addresses_list(
      ifindex, Collected.add, Unmanaged.passUnretained(collected).toOpaque())
    withExtendedLifetime(collected) {}
    try LibBPF.check(
      rc,
      ifindex == 0
        ? "listing the node's addresses" : "listing the addresses of ifindex \(ifindex)")
    return collected.addresses
  }

  /// Where the C callback puts what it is passed.
  private final class Collected {
    var addresses: [BPFDatapathBackend.HostAddress] = []

    static let add: tessera_host_address_fn = { address, context in
      guard let address, let context else { return }
      let collected = Unmanaged<Collected>.fromOpaque(context).takeUnretainedValue()
      var raw = address.pointee
      let family: IPPrefix.Family = Int32(raw.family) == AF_INET ? .v4 : .v6
      let bytes = withUnsafeBytes(of: &raw.bytes) { Array($0.prefix(family == .v4 ? 4 : 16)) }
      guard
        let prefix = IPPrefix(
          "\(BPFDatapathBackend.addressText(family: family, bytes: bytes))/\(raw.prefix_length)")
      else { return }
      collected.addresses.append(
        .init(prefix: prefix, ifindex: raw.ifindex, present: raw.added != 0))
    }
  }
}
