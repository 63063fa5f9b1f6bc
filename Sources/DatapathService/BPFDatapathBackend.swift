import CTesseraBPF
import Logging
import Synchronization
import TesseraCore

#if canImport(Glibc)
  import Glibc
#endif

/// Enforces policy in the kernel: tc programs on the host side of each
/// endpoint's veth, with the policy, ipcache, conntrack and counters in
/// pinned eBPF maps.
///
/// Layout (see `Sources/CTesseraBPF/include/tessera_bpf.h`):
///
///     host veth tc ingress ──▶ from_container stub ──tail call──▶ handle_from_container (egress policy)
///     host veth tc egress  ──▶ to_container stub   ──tail call──▶ handle_to_container   (ingress policy)
///
/// The stubs are loaded per endpoint with the endpoint id in read-only data
/// (about 0.25 ms: the instructions of a template loaded once at startup, a
/// few dozen to verify); the handlers are loaded
/// and verified once per daemon start and shared. Every per-endpoint setting
/// lives in maps keyed by endpoint id, so regeneration is map writes only.
///
/// Programs stay attached and maps pinned when the daemon exits; a new
/// backend on the same pin directory re-adopts them (``restoreEndpoints()``)
/// without reloading anything when the object is unchanged.
///
/// - Important: calls are serialised by ``Datapath``; the backend keeps an
///   in-memory mirror of each endpoint's policy map entries (rebuilt from the
///   kernel at startup) so that a regeneration writes only what changed.
public final class BPFDatapathBackend: DatapathBackend {
  struct State {
    /// Mirror of each endpoint's entries in the policy map.
    var slices: [UInt64: PolicySlice] = [:]
    /// The node's addresses (in the ipcache as `host`) and the devices holding
    /// each: ptp gives every host-side veth the same gateway address, which stays
    /// the node's until the last of them goes.
    var hostAddressDevices: [IPPrefix: Set<Int32>] = [:]
    /// Counter slots held by the entries of `slices`.
    var counterSlots = PolicyCounterSlots()
    /// The "every slot is in use" warning was logged (until a slot is freed).
    var counterSlotsExhaustedWarned = false
  }

  public let configuration: Configuration
  let loader: BPFLoader
  let state = Mutex(State())
  let logger: Logger
  /// Changes of the node's addresses, read by ``HostAddressWatch``.
  let hostAddressWatch: HostAddressWatchHandle

  public var name: String { "bpf (\(configuration.pinDirectory))" }

  /// Whether startup found the shared handlers of this same object installed
  /// (a restart) and re-used them without loading.
  public var adoptedExistingHandlers: Bool { loader.adopted }

  /// Opens (or creates) the pinned datapath under `configuration.pinDirectory`.
  ///
  /// - Throws: `DatapathError` with code `.precondition` when eBPF cannot be
  ///   used here (privileges, bpffs, kernel features, missing object) or the
  ///   kernel refuses the object (the message carries the verifier's log).
  public init(configuration: Configuration, logger: Logger = Logger(label: "tessera.datapath.bpf"))
    throws(DatapathError)
  {
    self.configuration = configuration
    self.logger = logger
    if let reason = Self.probe() {
      throw DatapathError(
        code: .precondition, message: "the eBPF datapath cannot run here: \(reason)")
    }
    try Self.requireBPFFS(for: configuration.pinDirectory)
    guard access(configuration.objectPath, R_OK) == 0 else {
      throw DatapathError(
        code: .precondition,
        message:
          "BPF object not found at \(configuration.objectPath): build it with scripts/build-bpf.sh or set TESSERA_BPF_OBJECT"
      )
    }
    loader = try BPFLoader(
      objectPath: configuration.objectPath, pinDirectory: configuration.pinDirectory,
      conntrackMaxEntries: configuration.conntrackMaxEntries)
    // Subscribed before the first listing (below), so that no change falls between the two.
    hostAddressWatch = try HostAddressWatchHandle()
    let slices = try readSlices()
    state.withLock {
      $0.slices = slices
      $0.counterSlots = PolicyCounterSlots(
        inUse: slices.values.reduce(into: Set<UInt32>()) { $0.formUnion($1.counterSlots) })
    }
    try removeOrphans()
    try removePortlessICMPConntrack()
    try assignMissingCounterSlots()
    try syncHostAddresses()
    logger.info(
      "eBPF datapath ready",
      metadata: [
        "pin_directory": "\(configuration.pinDirectory)", "object": "\(configuration.objectPath)",
        "handlers": "\(loader.adopted ? "re-adopted" : "installed")",
      ])
  }

  /// The BPF object to load; see ``Configuration/locateObject()``.
  public static func locateObject() -> String? { Configuration.locateObject() }

  /// Nil when the eBPF datapath can run here, else the reason it cannot
  /// (privileges, kernel features, bpffs). Mounts bpffs at `/sys/fs/bpf`
  /// when it is missing and can be mounted.
  public static func probe() -> String? {
    #if os(Linux)
      if let reason = LibBPF.probe() { return reason }
      if !LibBPF.isBPFFS("/sys/fs/bpf") {
        do { try LibBPF.mountBPFFS("/sys/fs/bpf") } catch {
          return "bpffs is not mounted at /sys/fs/bpf and mounting it failed: \(error.message)"
        }
      }
      return nil
    #else
      return "eBPF needs Linux"
    #endif
  }

  // MARK: DatapathBackend

  public func restoreEndpoints() throws(DatapathError) -> [DatapathEndpoint] {
    var restored: [DatapathEndpoint] = []
    for id in try LibBPF.keys(loader.endpointsFD, as: UInt64.self, "listing the endpoint map") {
      guard let info = try readInfo(id) else { continue }
      let entries = state.withLock { PolicyEncoding.decode($0.slices[id] ?? [:]) }
      let endpoint = DatapathEndpoint(
        id: id, hostInterface: Self.string(fromIfname: info.ifname), ips: Self.ips(of: info),
        identity: NumericIdentity(info.identity),
        policy: EndpointPolicy(
          revision: info.policy_revision,
          ingressEnforced: info.flags & UInt32(TESSERA_EP_F_INGRESS_ENFORCED) != 0,
          egressEnforced: info.flags & UInt32(TESSERA_EP_F_EGRESS_ENFORCED) != 0,
          entries: entries))
      try repairAttachment(endpoint, info: info)
      restored.append(endpoint)
    }
    return restored.sorted { $0.id < $1.id }
  }

  public func apply(_ change: EndpointChange) throws(DatapathError) {
    let endpoint = change.endpoint
    let id = endpoint.id
    guard endpoint.ips.count <= Int(TESSERA_EP_MAX_IPS) else {
      throw DatapathError(
        code: .invalidArgument,
        message: "endpoint \(id) has \(endpoint.ips.count) addresses; at most \(TESSERA_EP_MAX_IPS)"
      )
    }
    guard endpoint.hostInterface.utf8.count < Int(TESSERA_IFNAMSIZ) else {
      throw DatapathError(
        code: .invalidArgument, message: "interface name \(endpoint.hostInterface) is too long")
    }
    let previous = try readInfo(id)
    let attachNeeded = change.isNew || change.interfaceChanged || previous == nil
    // A missing device is a permanent error, found before anything is created.
    if attachNeeded, !endpoint.hostInterface.isEmpty, if_nametoindex(endpoint.hostInterface) == 0 {
      throw DatapathError(
        code: .precondition,
        message:
          "endpoint \(id): host device \(endpoint.hostInterface) does not exist (it must exist before the endpoint's policy is realised)"
      )
    }

    // 1. Programs: loaded for a new endpoint (or when their pins are gone).
    var programs: BPFLoader.Programs
    if !change.isNew, let pinned = try loader.pinnedPrograms(id), pinned.fromContainer >= 0,
      pinned.toContainer >= 0
    {
      programs = pinned
    } else {
      programs = try loader.loadEndpoint(id)
    }

    // 2. Policy entries that are new or changed (deletions come last, so a
    //    change never opens a moment where less is denied than before or
    //    after). The programs look up only the kinds of entries the endpoint
    //    info announces, so kinds that are new are announced first.
    if let previous, previous.flags & UInt32(TESSERA_EP_F_POLICY_KINDS) != 0 {
      let announced = previous.flags & Self.policyKindsMask
      let needed = announced | Self.policyKinds(of: endpoint.policy.entries.map(PolicyGroup.init))
      if needed != announced {
        var widened = previous
        widened.flags |= needed
        try writeInfo(id, widened)
      }
    }
    let removals = try writePolicy(change)

    // 3. The endpoint's configuration, then the attachment: the first packet
    //    through the device already sees the complete policy. Its policy
    //    kinds cover every entry in the map, including those deleted in 4.
    var info = try makeInfo(endpoint, previous: previous)
    info.flags |=
      UInt32(TESSERA_EP_F_POLICY_KINDS)
      | Self.policyKinds(of: state.withLock { Array(($0.slices[id] ?? [:]).keys) })
    if attachNeeded, !endpoint.hostInterface.isEmpty {
      let ifindex = try Self.ifindex(of: endpoint.hostInterface)
      info.ifindex = UInt32(ifindex)
      try writeInfo(id, info)
      let created = try loader.attach(ifindex: ifindex, programs, device: endpoint.hostInterface)
      if created {
        info.flags |= UInt32(TESSERA_EP_F_HOOK_CREATED)
        try writeInfo(id, info)
      }
      try addHostAddresses(ofDevice: ifindex)
    } else {
      try writeInfo(id, info)
    }
    if attachNeeded, let previous, previous.ifindex != 0, previous.ifindex != info.ifindex {
      try loader.detach(
        ifindex: Int32(previous.ifindex), expected: programs.ids,
        destroyHook: previous.flags & UInt32(TESSERA_EP_F_HOOK_CREATED) != 0,
        device: Self.string(fromIfname: previous.ifname))
    }

    // 4. Entries no longer wanted, then the kinds they leave.
    try deletePolicy(id, removals)
    let remaining =
      UInt32(TESSERA_EP_F_POLICY_KINDS)
      | Self.policyKinds(of: state.withLock { Array(($0.slices[id] ?? [:]).keys) })
    if info.flags & (Self.policyKindsMask | UInt32(TESSERA_EP_F_POLICY_KINDS)) != remaining {
      info.flags = (info.flags & ~Self.policyKindsMask) | remaining
      try writeInfo(id, info)
    }
  }

  public func removeEndpoint(_ endpoint: DatapathEndpoint) throws(DatapathError) {
    let id = endpoint.id
    let info = try readInfo(id)
    let programs = try loader.pinnedPrograms(id)
    let ifindex: Int32 =
      if let info, info.ifindex != 0 { Int32(info.ifindex) } else if !endpoint.hostInterface.isEmpty
      {
        Int32(bitPattern: if_nametoindex(endpoint.hostInterface))
      } else { 0 }
    // Detach first: no packet sees a half-removed endpoint. Only our own
    // programs are removed, and the qdisc only when it was created by us.
    if ifindex > 0 {
      try loader.detach(
        ifindex: ifindex, expected: programs?.ids ?? (0, 0),
        destroyHook: (info?.flags ?? 0) & UInt32(TESSERA_EP_F_HOOK_CREATED) != 0,
        device: endpoint.hostInterface)
    }
    let slice = state.withLock { $0.slices[id] }
    if let slice {
      try deletePolicy(id, slice.flatMap { group, blocks in blocks.keys.map { (group, $0) } })
    }
    try loader.purge(id, scanPolicy: slice == nil, addresses: endpoint.ips)
    try loader.unpin(id)
    state.withLock { _ = $0.slices.removeValue(forKey: id) }
  }

  /// Removes what a crash between load and registration left: pinned
  /// programs and policy entries of endpoints that are not in the endpoint
  /// map (they were never attached: attachment comes after registration).
  private func removeOrphans() throws(DatapathError) {
    let registered = Set(
      try LibBPF.keys(loader.endpointsFD, as: UInt64.self, "listing the endpoint map"))
    let withPolicy = state.withLock { Set($0.slices.keys) }
    for id in Set(try loader.pinnedEndpointIDs()).union(withPolicy).subtracting(registered) {
      logger.info("removing leftover datapath state", metadata: ["endpoint": "\(id)"])
      if let slice = state.withLock({ $0.slices[id] }) {
        try deletePolicy(id, slice.flatMap { group, blocks in blocks.keys.map { (group, $0) } })
      }
      try loader.purge(id, scanPolicy: false, addresses: [])
      try loader.unpin(id)
      state.withLock { _ = $0.slices.removeValue(forKey: id) }
    }
  }

  /// Deletes ICMP conntrack entries on ports 0, 0. Programs before ICMP rules tracked
  /// every ICMP message that way (and one version tracked echo replies), and the map
  /// outlives them: such an entry would admit echo requests with identifier 0 as its
  /// flow, without policy. Today only an echo request with identifier 0 makes one; it
  /// is judged again at its next request.
  private func removePortlessICMPConntrack() throws(DatapathError) {
    var removed = 0
    for key in try LibBPF.keys(loader.conntrackFD, as: ct_key.self, "listing conntrack")
    where L4Protocol(rawValue: key.proto)?.isICMP == true && key.sport == 0 && key.dport == 0 {
      if try LibBPF.delete(loader.conntrackFD, key, "deleting an ICMP conntrack entry") {
        removed += 1
      }
    }
    if removed > 0 {
      logger.info("removed ICMP conntrack entries on ports 0, 0", metadata: ["count": "\(removed)"])
    }
  }

  /// Makes sure `pinDirectory` is on bpffs, mounting `/sys/fs/bpf` when
  /// that is what is missing.
  private static func requireBPFFS(for pinDirectory: String) throws(DatapathError) {
    func nearestExisting(_ path: String) -> String {
      var existing = path
      while access(existing, F_OK) != 0, existing != "/" { existing = parent(of: existing) }
      return existing
    }
    if LibBPF.isBPFFS(nearestExisting(pinDirectory)) { return }
    if pinDirectory.hasPrefix("/sys/fs/bpf/") || pinDirectory == "/sys/fs/bpf",
      !LibBPF.isBPFFS("/sys/fs/bpf")
    {
      try LibBPF.mountBPFFS("/sys/fs/bpf")
      if LibBPF.isBPFFS(nearestExisting(pinDirectory)) { return }
    }
    throw DatapathError(
      code: .precondition,
      message:
        "pin directory \(pinDirectory) is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")
  }

  // MARK: Helpers

  static func addressText<T>(family: IPPrefix.Family, _ raw: inout T) -> String {
    withUnsafeBytes(of: &raw) { addressText(family: family, bytes: Array($0)) }
  }

  static func addressText(family: IPPrefix.Family, bytes: [UInt8]) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    let af = family == .v4 ? AF_INET : AF_INET6
    _ = bytes.withUnsafeBytes { inet_ntop(af, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  static func string<T>(fromIfname ifname: T) -> String {
    var ifname = ifname
    return withUnsafeBytes(of: &ifname) { raw in
      String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
  }

  static func ifindex(of device: String) throws(DatapathError) -> Int32 {
    let index = if_nametoindex(device)
    guard index > 0 else {
      throw DatapathError(code: .notFound, message: "no network device named \(device)")
    }
    return Int32(bitPattern: index)
  }
}
