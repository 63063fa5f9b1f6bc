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
/// (about 1 ms: a few dozen instructions to verify); the handlers are loaded
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
  public struct Configuration: Sendable, Equatable {
    /// The compiled object (`scripts/build-bpf.sh` → `.build-bpf/endpoint.bpf.o`).
    public var objectPath: String
    /// Where maps and programs are pinned; one per node (two "nodes" on one
    /// machine share bpffs, so each needs its own).
    public var pinDirectory: String

    public init(objectPath: String, pinDirectory: String = Self.defaultPinDirectory) {
      self.objectPath = objectPath
      self.pinDirectory = pinDirectory
    }

    public static let defaultPinDirectory = "/sys/fs/bpf/tessera"
    public static let installedObjectPath = "/usr/lib/tessera/endpoint.bpf.o"

    /// The located object (or the installed path) pinned under `/sys/fs/bpf/tessera`.
    public static var defaults: Configuration {
      Configuration(objectPath: locateObject() ?? installedObjectPath)
    }

    /// The BPF object to load: `$TESSERA_BPF_OBJECT`, then
    /// `<executable dir>/tessera-bpf/endpoint.bpf.o`, then
    /// `<repo>/.build-bpf/endpoint.bpf.o` for an executable built in
    /// `<repo>/.build/…`, then `/usr/lib/tessera/endpoint.bpf.o`.
    public static func locateObject() -> String? {
      if let env = getenv("TESSERA_BPF_OBJECT"), env.pointee != 0 {
        return String(cString: env)
      }
      var candidates: [String] = []
      if let executable = executablePath() {
        var directory = parent(of: executable)
        candidates.append(directory + "/tessera-bpf/endpoint.bpf.o")
        // <repo>/.build/debug/x or <repo>/.build/x86_64-unknown-linux-gnu/debug/x
        for _ in 0..<4 {
          candidates.append(directory + "/.build-bpf/endpoint.bpf.o")
          if directory == "/" { break }
          directory = parent(of: directory)
        }
      }
      candidates.append(installedObjectPath)
      return candidates.first { access($0, R_OK) == 0 }
    }
  }

  private struct State {
    /// Mirror of each endpoint's entries in the policy map.
    var slices: [UInt64: PolicySlice] = [:]
    /// Node addresses inserted into the ipcache as `host`.
    var hostAddresses: Set<IPPrefix> = []
    /// Time of the last endpoint program load, for measurements.
    var lastLoadNanoseconds: UInt64 = 0
  }

  public let configuration: Configuration
  private let loader: BPFLoader
  private let state = Mutex(State())
  private let logger: Logger

  public var name: String { "bpf (\(configuration.pinDirectory))" }

  /// Whether startup found the shared handlers of this same object installed
  /// (a restart) and re-used them without loading.
  public var adoptedExistingHandlers: Bool { loader.adopted }

  /// Opens (or creates) the pinned datapath under `configuration.pinDirectory`.
  ///
  /// - Throws: `DatapathError` with code `.precondition` when eBPF cannot be
  ///   used here (privileges, bpffs, kernel features, missing object) or the
  ///   kernel refuses the object (the message carries the verifier's log).
  public init(configuration: Configuration, logger: Logger = Logger(label: "tessera.datapath.bpf")) throws(DatapathError) {
    self.configuration = configuration
    self.logger = logger
    if let reason = Self.probe() {
      throw DatapathError(code: .precondition, message: "the eBPF datapath cannot run here: \(reason)")
    }
    try Self.requireBPFFS(for: configuration.pinDirectory)
    guard access(configuration.objectPath, R_OK) == 0 else {
      throw DatapathError(
        code: .precondition,
        message: "BPF object not found at \(configuration.objectPath): build it with scripts/build-bpf.sh or set TESSERA_BPF_OBJECT")
    }
    loader = try BPFLoader(objectPath: configuration.objectPath, pinDirectory: configuration.pinDirectory)
    let slices = try readSlices()
    state.withLock { $0.slices = slices }
    try removeOrphans()
    try syncHostAddresses(removeStale: true)
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
      do { try LibBPF.mountBPFFS("/sys/fs/bpf") } catch { return "bpffs is not mounted at /sys/fs/bpf and mounting it failed: \(error.message)" }
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
      throw DatapathError(code: .invalidArgument, message: "endpoint \(id) has \(endpoint.ips.count) addresses; at most \(TESSERA_EP_MAX_IPS)")
    }
    guard endpoint.hostInterface.utf8.count < Int(TESSERA_IFNAMSIZ) else {
      throw DatapathError(code: .invalidArgument, message: "interface name \(endpoint.hostInterface) is too long")
    }
    let previous = try readInfo(id)
    let attachNeeded = change.isNew || change.interfaceChanged || previous == nil
    // A missing device is a permanent error, found before anything is created.
    if attachNeeded, !endpoint.hostInterface.isEmpty, if_nametoindex(endpoint.hostInterface) == 0 {
      throw DatapathError(
        code: .precondition,
        message: "endpoint \(id): host device \(endpoint.hostInterface) does not exist (it must exist before the endpoint's policy is realised)")
    }

    // 1. Programs: loaded for a new endpoint (or when their pins are gone).
    var programs: BPFLoader.Programs
    if !change.isNew, let pinned = try loader.pinnedPrograms(id), pinned.fromContainer >= 0, pinned.toContainer >= 0 {
      programs = pinned
    } else {
      let (loaded, nanoseconds) = try loader.loadEndpoint(id)
      programs = loaded
      state.withLock { $0.lastLoadNanoseconds = nanoseconds }
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
    info.flags |= UInt32(TESSERA_EP_F_POLICY_KINDS) | Self.policyKinds(of: state.withLock { Array(($0.slices[id] ?? [:]).keys) })
    if attachNeeded, !endpoint.hostInterface.isEmpty {
      let ifindex = try Self.ifindex(of: endpoint.hostInterface)
      info.ifindex = UInt32(ifindex)
      try writeInfo(id, info)
      let created = try loader.attach(ifindex: ifindex, programs, device: endpoint.hostInterface)
      if created {
        info.flags |= UInt32(TESSERA_EP_F_HOOK_CREATED)
        try writeInfo(id, info)
      }
      try syncHostAddresses(removeStale: false)
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
    let remaining = UInt32(TESSERA_EP_F_POLICY_KINDS) | Self.policyKinds(of: state.withLock { Array(($0.slices[id] ?? [:]).keys) })
    if info.flags & (Self.policyKindsMask | UInt32(TESSERA_EP_F_POLICY_KINDS)) != remaining {
      info.flags = (info.flags & ~Self.policyKindsMask) | remaining
      try writeInfo(id, info)
    }
  }

  /// The policy-kind bits (and their validity flag) the programs read for the endpoint.
  func announcedPolicyKinds(endpointID: UInt64) throws(DatapathError) -> UInt32? {
    try readInfo(endpointID).map { $0.flags & (Self.policyKindsMask | UInt32(TESSERA_EP_F_POLICY_KINDS)) }
  }

  /// The endpoint-info flag bits of the policy kinds (`TESSERA_EP_POLICY_KINDS_SHIFT`).
  static let policyKindsMask = UInt32(0xffff) << UInt32(TESSERA_EP_POLICY_KINDS_SHIFT)

  /// The policy-kind flag bits of entries of these groups: per direction,
  /// whether there are deny or allow entries for a named or any peer and
  /// protocol, so that the programs skip the lookups nothing can answer.
  static func policyKinds(of groups: [PolicyGroup]) -> UInt32 {
    var kinds: UInt32 = 0
    for group in groups {
      var kind: UInt32 = group.verdict == .deny ? 0 : UInt32(TESSERA_POLICY_KIND_ALLOW)
      if group.peer == .unknown { kind |= UInt32(TESSERA_POLICY_KIND_ANY_PEER) }
      if group.proto == .any { kind |= UInt32(TESSERA_POLICY_KIND_ANY_PROTO) }
      let byte = UInt32(TESSERA_EP_POLICY_KINDS_SHIFT) + UInt32(group.direction.rawValue - 1) * 8
      kinds |= 1 << (byte + kind)
    }
    return kinds
  }

  public func removeEndpoint(_ endpoint: DatapathEndpoint) throws(DatapathError) {
    let id = endpoint.id
    let info = try readInfo(id)
    let programs = try loader.pinnedPrograms(id)
    let ifindex: Int32 =
      if let info, info.ifindex != 0 { Int32(info.ifindex) } else if !endpoint.hostInterface.isEmpty {
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
    try loader.purge(id, scanPolicy: slice == nil)
    try loader.unpin(id)
    state.withLock { _ = $0.slices.removeValue(forKey: id) }
  }

  public func upsertIPCache(_ entries: [IPCacheEntry]) throws(DatapathError) {
    for entry in entries {
      var value = ipcache_value()
      value.identity = entry.identity.rawValue
      try LibBPF.update(loader.ipcacheFD, Self.ipcacheKey(entry.prefix), value, "writing \(entry.prefix) to the ipcache")
    }
  }

  public func deleteIPCache(_ prefixes: [IPPrefix]) throws(DatapathError) {
    for prefix in prefixes {
      try LibBPF.delete(loader.ipcacheFD, Self.ipcacheKey(prefix), "deleting \(prefix) from the ipcache")
    }
  }

  public func ipcacheEntries() throws(DatapathError) -> [IPCacheEntry] {
    var entries: [IPCacheEntry] = []
    for key in try LibBPF.keys(loader.ipcacheFD, as: ipcache_key.self, "listing the ipcache") {
      guard let value = try LibBPF.lookup(loader.ipcacheFD, key, as: ipcache_value.self, "reading the ipcache"),
        let prefix = Self.prefix(of: key)
      else { continue }
      entries.append(IPCacheEntry(prefix: prefix, identity: NumericIdentity(value.identity)))
    }
    return entries.sorted()
  }

  /// Read back from the kernel's policy map (not from memory). Ranges come
  /// back as written, except that ranges overlapping within one (verdict,
  /// direction, peer, protocol) come back as their union.
  public func policyEntries(endpointID: UInt64) throws(DatapathError) -> [PolicyEntry] {
    guard try readInfo(endpointID) != nil else {
      throw DatapathError(code: .notFound, message: "endpoint \(endpointID) is not in the eBPF endpoint map")
    }
    return PolicyEncoding.decode(try readSlices(only: endpointID)[endpointID] ?? [:])
  }

  public func conntrackEntries() throws(DatapathError) -> [ConntrackEntry] {
    let now = LibBPF.monotonicNanoseconds
    var entries: [ConntrackEntry] = []
    for key in try LibBPF.keys(loader.conntrackFD, as: ct_key.self, "listing conntrack") {
      guard let entry = try LibBPF.lookup(loader.conntrackFD, key, as: ct_entry.self, "reading conntrack"),
        entry.expires_ns > now
      else { continue }
      let family: IPPrefix.Family = key.family == UInt8(TESSERA_FAMILY_V6) ? .v6 : .v4
      var saddr = key.saddr
      var daddr = key.daddr
      var (sport, dport, direction) = (key.sport, key.dport, key.direction)
      // Canonical keys (maps_types.h): shown as the packet that created the entry.
      if entry.flags & UInt32(TESSERA_CT_F_CANONICAL) != 0 {
        direction = entry.direction
        if entry.reversed != 0 {
          swap(&saddr, &daddr)
          swap(&sport, &dport)
        }
      }
      entries.append(
        ConntrackEntry(
          source: Self.addressText(family: family, &saddr), destination: Self.addressText(family: family, &daddr),
          sourcePort: sport, destinationPort: dport,
          // L4Protocol has no ICMP: portless protocols show as ANY.
          proto: L4Protocol(rawValue: key.proto) ?? .any,
          endpointID: key.endpoint_id,
          direction: TrafficDirection(rawValue: direction) ?? .ingress,
          packets: entry.packets_fwd + entry.packets_rev,
          lastSeenNanoseconds: entry.last_seen_ns))
    }
    return entries.sorted { ($0.endpointID, $0.source, $0.sourcePort) < ($1.endpointID, $1.source, $1.sourcePort) }
  }

  public func counters(endpointID: UInt64) throws(DatapathError) -> EndpointCounters {
    let perReason = try dropAndForwardCounts(endpointID: endpointID)
    var counters = EndpointCounters()
    for (index, packets) in perReason.enumerated() {
      let ingress = index < Int(TESSERA_REASON_MAX.rawValue)
      let reason = UInt32(index % Int(TESSERA_REASON_MAX.rawValue))
      switch (ingress, tessera_reason_is_drop(reason) == 0) {
      case (true, true): counters.ingressForwarded += packets
      case (true, false): counters.ingressDropped += packets
      case (false, true): counters.egressForwarded += packets
      case (false, false): counters.egressDropped += packets
      }
      if packets > 0 {
        counters.reasons.append(
          .init(direction: ingress ? .ingress : .egress, reason: Self.reasonNames[Int(reason)], packets: packets))
      }
    }
    return counters
  }

  // MARK: Extras (CLI, tests, benchmarks)

  /// Packets per direction and named reason (`forward-policy`, `drop-policy-deny`, …).
  public func reasonCounters(endpointID: UInt64) throws(DatapathError) -> [(direction: TrafficDirection, reason: String, packets: UInt64)] {
    let perReason = try dropAndForwardCounts(endpointID: endpointID)
    let reasons = Int(TESSERA_REASON_MAX.rawValue)
    return perReason.enumerated().compactMap { index, packets in
      packets == 0 ? nil : (index < reasons ? .ingress : .egress, Self.reasonNames[index % reasons], packets)
    }
  }

  /// Names of the programs' reasons (`enum tessera_reason`), by number.
  static let reasonNames = [
    "forward-policy", "forward-ct-established", "forward-ct-reply", "forward-non-ip", "forward-icmp6-nd",
    "drop-policy-deny", "drop-policy-default", "drop-invalid-packet", "drop-fragment", "drop-no-endpoint",
    "drop-ct-create-failed", "drop-missed-tail-call", "drop-invalid-source", "drop-unknown-l3",
    "drop-ipv6-ext-headers", "forward-ct-related", "forward-fragment",
  ]

  /// The time the last endpoint program load took (stubs + counters + pins).
  public var lastProgramLoadNanoseconds: UInt64 { state.withLock { $0.lastLoadNanoseconds } }

  /// The verdict of a test run.
  public struct ProgramRun: Sendable, Equatable {
    /// The tc action: `TC_ACT_OK` (0) passes, `TC_ACT_SHOT` (2) drops.
    public var action: UInt32
    /// Mean time per run in nanoseconds.
    public var nanoseconds: UInt32
    public var passed: Bool { action == 0 }
  }

  /// Runs the endpoint's program for `direction` on an Ethernet frame with
  /// `BPF_PROG_TEST_RUN` (ingress runs `to_container`, egress
  /// `from_container`). Affects conntrack and counters like a real packet.
  public func runProgram(endpointID: UInt64, direction: TrafficDirection, packet: [UInt8], repeat count: UInt32 = 1) throws(DatapathError) -> ProgramRun {
    guard let programs = try loader.pinnedPrograms(endpointID) else {
      throw DatapathError(code: .notFound, message: "endpoint \(endpointID) has no pinned programs")
    }
    let fd = direction == .ingress ? programs.toContainer : programs.fromContainer
    let (action, nanoseconds) = try BPFLoader.testRun(programFD: fd, packet: packet, repeat: count)
    return ProgramRun(action: action, nanoseconds: nanoseconds)
  }

  /// Program ids of the Tessera filters on a device, 0 when absent.
  public func attachedProgramIDs(interface: String) throws(DatapathError) -> (fromContainer: UInt32, toContainer: UInt32) {
    let ids = try loader.attachedProgramIDs(ifindex: try Self.ifindex(of: interface), device: interface)
    return (ids.from, ids.to)
  }

  /// Program ids of the endpoint's pinned stubs, 0 when absent.
  public func pinnedProgramIDs(endpointID: UInt64) throws(DatapathError) -> (fromContainer: UInt32, toContainer: UInt32) {
    guard let programs = try loader.pinnedPrograms(endpointID) else { return (0, 0) }
    let ids = programs.ids
    return (ids.from, ids.to)
  }

  // MARK: Policy map

  /// Writes the new and changed blocks of the groups the change touches and
  /// returns the blocks to delete afterwards.
  private func writePolicy(_ change: EndpointChange) throws(DatapathError) -> [(PolicyGroup, PortPrefix)] {
    let id = change.endpoint.id
    let wanted = change.endpoint.policy.entries
    var slice = state.withLock { $0.slices[id] ?? [:] }
    defer { state.withLock { [slice] in $0.slices[id] = slice } }

    var affected = Set<PolicyGroup>()
    if change.isNew {
      affected.formUnion(slice.keys)
      affected.formUnion(wanted.map(PolicyGroup.init))
    } else {
      for key in change.upserts.map(\.key) + change.deletes { affected.formUnion(PolicyGroup.both(key)) }
    }
    let wantedByGroup = Dictionary(grouping: wanted.filter { affected.contains(PolicyGroup($0)) }, by: PolicyGroup.init)

    var removals: [(PolicyGroup, PortPrefix)] = []
    for group in affected {
      let desired = PolicyEncoding.encodeGroup(wantedByGroup[group]?.map(\.ports) ?? [])
      let current = slice[group] ?? [:]
      for (prefix, cluster) in desired where current[prefix] != cluster {
        try LibBPF.update(
          loader.policyFD, PolicyEncoding.key(endpointID: id, group: group, prefix: prefix),
          PolicyEncoding.value(group: group, cluster: cluster), "writing a policy entry of endpoint \(id)")
        slice[group, default: [:]][prefix] = cluster
      }
      for prefix in current.keys where desired[prefix] == nil { removals.append((group, prefix)) }
    }
    return removals
  }

  private func deletePolicy(_ id: UInt64, _ removals: [(PolicyGroup, PortPrefix)]) throws(DatapathError) {
    guard !removals.isEmpty else { return }
    var slice = state.withLock { $0.slices[id] ?? [:] }
    defer { state.withLock { [slice] in $0.slices[id] = slice.isEmpty ? nil : slice } }
    for (group, prefix) in removals {
      try LibBPF.delete(
        loader.policyFD, PolicyEncoding.key(endpointID: id, group: group, prefix: prefix),
        "deleting a policy entry of endpoint \(id)")
      slice[group]?[prefix] = nil
      if slice[group]?.isEmpty == true { slice[group] = nil }
    }
  }

  /// Every endpoint's entries as the kernel holds them (one walk of the map).
  private func readSlices(only: UInt64? = nil) throws(DatapathError) -> [UInt64: PolicySlice] {
    var slices: [UInt64: PolicySlice] = [:]
    for key in try LibBPF.keys(loader.policyFD, as: policy_key.self, "listing the policy map") {
      if let only, key.endpoint_id != only { continue }
      guard let value = try LibBPF.lookup(loader.policyFD, key, as: policy_value.self, "reading the policy map"),
        let decoded = PolicyEncoding.decode(key: key, value: value)
      else { continue }
      slices[decoded.endpointID, default: [:]][decoded.group, default: [:]][decoded.prefix] = decoded.cluster
    }
    return slices
  }

  /// Removes what a crash between load and registration left: pinned
  /// programs and policy entries of endpoints that are not in the endpoint
  /// map (they were never attached: attachment comes after registration).
  private func removeOrphans() throws(DatapathError) {
    let registered = Set(try LibBPF.keys(loader.endpointsFD, as: UInt64.self, "listing the endpoint map"))
    let withPolicy = state.withLock { Set($0.slices.keys) }
    for id in Set(try loader.pinnedEndpointIDs()).union(withPolicy).subtracting(registered) {
      logger.info("removing leftover datapath state", metadata: ["endpoint": "\(id)"])
      if let slice = state.withLock({ $0.slices[id] }) {
        try deletePolicy(id, slice.flatMap { group, blocks in blocks.keys.map { (group, $0) } })
      }
      try loader.purge(id, scanPolicy: false)
      try loader.unpin(id)
      state.withLock { _ = $0.slices.removeValue(forKey: id) }
    }
  }

  // MARK: Endpoint map

  private func readInfo(_ id: UInt64) throws(DatapathError) -> endpoint_info? {
    try LibBPF.lookup(loader.endpointsFD, id, as: endpoint_info.self, "reading endpoint \(id) from the endpoint map")
  }

  private func writeInfo(_ id: UInt64, _ info: endpoint_info) throws(DatapathError) {
    try LibBPF.update(loader.endpointsFD, id, info, "writing endpoint \(id) to the endpoint map")
  }

  private func makeInfo(_ endpoint: DatapathEndpoint, previous: endpoint_info?) throws(DatapathError) -> endpoint_info {
    var info = endpoint_info()
    info.identity = endpoint.identity.rawValue
    var flags: UInt32 = 0
    if endpoint.policy.ingressEnforced { flags |= UInt32(TESSERA_EP_F_INGRESS_ENFORCED) }
    if endpoint.policy.egressEnforced { flags |= UInt32(TESSERA_EP_F_EGRESS_ENFORCED) }
    if let previous, Self.string(fromIfname: previous.ifname) == endpoint.hostInterface {
      flags |= previous.flags & UInt32(TESSERA_EP_F_HOOK_CREATED)
      info.ifindex = previous.ifindex
    }
    info.flags = flags
    info.policy_revision = endpoint.policy.revision
    withUnsafeMutableBytes(of: &info.ifname) { raw in
      raw.initializeMemory(as: UInt8.self, repeating: 0)
      for (i, byte) in endpoint.hostInterface.utf8.prefix(raw.count - 1).enumerated() { raw[i] = byte }
    }
    info.nr_ips = UInt32(endpoint.ips.count)
    withUnsafeMutableBytes(of: &info.ips) { raw in
      let slots = raw.bindMemory(to: endpoint_ip.self)
      for (i, ip) in endpoint.ips.enumerated() {
        var slot = endpoint_ip()
        slot.family = ip.family.rawValue
        slot.prefixlen = ip.length
        withUnsafeMutableBytes(of: &slot.addr) { addr in
          for (j, byte) in ip.bytes.prefix(16).enumerated() { addr[j] = byte }
        }
        slots[i] = slot
      }
    }
    return info
  }

  private static func ips(of info: endpoint_info) -> [IPPrefix] {
    var info = info
    let count = min(Int(info.nr_ips), Int(TESSERA_EP_MAX_IPS))
    return withUnsafeBytes(of: &info.ips) { raw in
      let slots = raw.bindMemory(to: endpoint_ip.self)
      return (0..<count).compactMap { i -> IPPrefix? in
        var slot = slots[i]
        let family: IPPrefix.Family = slot.family == IPPrefix.Family.v6.rawValue ? .v6 : .v4
        return IPPrefix("\(addressText(family: family, &slot.addr))/\(slot.prefixlen)")
      }
    }
  }

  /// After a restart: re-attach an endpoint whose device is there but whose
  /// filters are gone or not its own (nothing is touched when all is in place).
  private func repairAttachment(_ endpoint: DatapathEndpoint, info: endpoint_info) throws(DatapathError) {
    guard !endpoint.hostInterface.isEmpty else { return }
    let ifindex = Int32(bitPattern: if_nametoindex(endpoint.hostInterface))
    guard ifindex > 0 else {
      logger.warning("endpoint device is gone", metadata: ["endpoint": "\(endpoint.id)", "device": "\(endpoint.hostInterface)"])
      return
    }
    guard let programs = try loader.pinnedPrograms(endpoint.id), programs.fromContainer >= 0, programs.toContainer >= 0 else {
      logger.warning("endpoint programs are not pinned; they are loaded at the next regeneration", metadata: ["endpoint": "\(endpoint.id)"])
      return
    }
    let attached = try loader.attachedProgramIDs(ifindex: ifindex, device: endpoint.hostInterface)
    let expected = programs.ids
    if attached.from == expected.from, attached.to == expected.to, UInt32(ifindex) == info.ifindex { return }
    logger.notice("re-attaching endpoint programs", metadata: ["endpoint": "\(endpoint.id)", "device": "\(endpoint.hostInterface)"])
    var updated = info
    updated.ifindex = UInt32(ifindex)
    try writeInfo(endpoint.id, updated)
    if try loader.attach(ifindex: ifindex, programs, device: endpoint.hostInterface) {
      updated.flags |= UInt32(TESSERA_EP_F_HOOK_CREATED)
      try writeInfo(endpoint.id, updated)
    }
  }

  // MARK: Counters

  private func dropAndForwardCounts(endpointID: UInt64) throws(DatapathError) -> [UInt64] {
    guard
      let perCPU = try LibBPF.lookupPerCPU(
        loader.metricsFD, endpointID, as: endpoint_metrics.self, "reading the counters of endpoint \(endpointID)")
    else {
      throw DatapathError(code: .notFound, message: "endpoint \(endpointID) has no counters in the eBPF datapath")
    }
    var totals = [UInt64](repeating: 0, count: 2 * Int(TESSERA_REASON_MAX.rawValue))
    for var cpu in perCPU {
      withUnsafeBytes(of: &cpu.counters) { raw in
        for (i, value) in raw.bindMemory(to: metrics_value.self).enumerated() where i < totals.count {
          totals[i] += value.packets
        }
      }
    }
    return totals
  }

  // MARK: Host addresses

  /// Puts the node's own addresses (this network namespace) in the ipcache
  /// as `host`; with `removeStale`, drops `host` entries no longer local.
  private func syncHostAddresses(removeStale: Bool) throws(DatapathError) {
    let local = Self.localAddresses()
    let known = state.withLock { $0.hostAddresses }
    let added = local.subtracting(known)
    if !added.isEmpty {
      try upsertIPCache(added.sorted().map { IPCacheEntry(prefix: $0, identity: .host) })
    }
    if removeStale {
      let stale = try ipcacheEntries().filter { $0.identity == .host && !local.contains($0.prefix) }.map(\.prefix)
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
        var bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        let text = withUnsafeBytes(of: &bytes) { Self.addressText(family: .v4, bytes: Array($0)) }
        if let prefix = IPPrefix(text) { result.insert(prefix) }
      case AF_INET6:
        var bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
        let text = withUnsafeBytes(of: &bytes) { Self.addressText(family: .v6, bytes: Array($0)) }
        if let prefix = IPPrefix(text) { result.insert(prefix) }
      default:
        continue
      }
    }
    return result
  }

  // MARK: Helpers

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

  private static func addressText<T>(family: IPPrefix.Family, _ raw: inout T) -> String {
    withUnsafeBytes(of: &raw) { addressText(family: family, bytes: Array($0)) }
  }

  private static func addressText(family: IPPrefix.Family, bytes: [UInt8]) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    let af = family == .v4 ? AF_INET : AF_INET6
    _ = bytes.withUnsafeBytes { inet_ntop(af, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  private static func string<T>(fromIfname ifname: T) -> String {
    var ifname = ifname
    return withUnsafeBytes(of: &ifname) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
  }

  private static func ifindex(of device: String) throws(DatapathError) -> Int32 {
    let index = if_nametoindex(device)
    guard index > 0 else { throw DatapathError(code: .notFound, message: "no network device named \(device)") }
    return Int32(bitPattern: index)
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
    if pinDirectory.hasPrefix("/sys/fs/bpf/") || pinDirectory == "/sys/fs/bpf", !LibBPF.isBPFFS("/sys/fs/bpf") {
      try LibBPF.mountBPFFS("/sys/fs/bpf")
      if LibBPF.isBPFFS(nearestExisting(pinDirectory)) { return }
    }
    throw DatapathError(
      code: .precondition,
      message: "pin directory \(pinDirectory) is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")
  }

  private static func executablePath() -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  private static func parent(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
  }
}
