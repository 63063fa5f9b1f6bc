import CTesseraBPF
import TesseraCore

#if canImport(Glibc)
  import Glibc
#endif

/// The one place where libbpf's and the loader's negative-errno returns
/// become ``DatapathError``s, and where Swift calls into `CTesseraBPF`.
///
/// Every call checks its return value; failures carry what libbpf printed
/// during the call (the verifier log included), so a startup or load error
/// says why the kernel refused.
enum LibBPF {
  /// A ``DatapathError`` for a negative errno `rc` returned while doing `what`.
  static func error(_ rc: Int32, _ what: String, code: DatapathError.Code? = nil) -> DatapathError {
    let errnoValue = rc < 0 ? -rc : rc
    let reason = String(cString: strerror(errnoValue))
    var message = "\(what): \(reason) (errno \(errnoValue))"
    let log = trimmed(String(cString: tessera_bpf_last_log()))
    if !log.isEmpty {
      // The verifier's last lines say what it rejected.
      let tail = log.split(separator: "\n", omittingEmptySubsequences: true).suffix(20).joined(
        separator: "\n")
      message += "\nlibbpf:\n\(tail)"
    }
    let resolved: DatapathError.Code =
      code
      ?? {
        switch errnoValue {
        case EPERM, EACCES: .precondition
        case ENOENT, ENODEV, ENXIO: .notFound
        case EINVAL, E2BIG, ENAMETOOLONG: .kernel
        default: .kernel
        }
      }()
    return DatapathError(code: resolved, message: message)
  }

  /// Returns `rc` when it is not negative, else throws.
  @discardableResult
  static func check(_ rc: Int32, _ what: @autoclosure () -> String, code: DatapathError.Code? = nil)
    throws(DatapathError) -> Int32
  {
    if rc < 0 { throw error(rc, what(), code: code) }
    return rc
  }

  // MARK: Maps

  static func update<K, V>(
    _ fd: Int32, _ key: K, _ value: V, flags: UInt64 = 0, _ what: @autoclosure () -> String
  ) throws(DatapathError) {
    var key = key
    var value = value
    let rc = withUnsafeBytes(of: &key) { k in
      withUnsafeBytes(of: &value) { v in
        tessera_bpf_map_update(fd, k.baseAddress, v.baseAddress, flags)
      }
    }
    try check(rc, what())
  }

  /// The value under `key`, or nil when there is none.
  static func lookup<K, V>(_ fd: Int32, _ key: K, as _: V.Type, _ what: @autoclosure () -> String)
    throws(DatapathError) -> V?
  {
    var key = key
    let value = UnsafeMutablePointer<V>.allocate(capacity: 1)
    defer { value.deallocate() }
    let rc = withUnsafeBytes(of: &key) { k in
      UnsafeMutableRawPointer(value).initializeMemory(
        as: UInt8.self, repeating: 0, count: MemoryLayout<V>.size)
      return tessera_bpf_map_lookup(fd, k.baseAddress, value)
    }
    if rc == -ENOENT { return nil }
    try check(rc, what())
    return value.pointee
  }

  /// Per-CPU values under `key` (one per possible CPU), or nil.
  static func lookupPerCPU<K, V>(
    _ fd: Int32, _ key: K, as _: V.Type, _ what: @autoclosure () -> String
  ) throws(DatapathError) -> [V]? {
    let cpus = Int(try check(tessera_bpf_num_possible_cpus(), "counting possible CPUs"))
    // The kernel rounds each CPU's slot up to 8 bytes.
    let stride = (MemoryLayout<V>.size + 7) & ~7
    var key = key
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: stride * cpus, alignment: 8)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0, count: stride * cpus)
    let rc = withUnsafeBytes(of: &key) { k in tessera_bpf_map_lookup(fd, k.baseAddress, buffer) }
    if rc == -ENOENT { return nil }
    try check(rc, what())
    return (0..<cpus).map { buffer.loadUnaligned(fromByteOffset: $0 * stride, as: V.self) }
  }

  /// Writes `value` under `key` for every possible CPU.
  static func updatePerCPU<K, V>(
    _ fd: Int32, _ key: K, _ value: V, _ what: @autoclosure () -> String
  )
    throws(DatapathError)
  {
    let cpus = Int(try check(tessera_bpf_num_possible_cpus(), "counting possible CPUs"))
    let stride = (MemoryLayout<V>.size + 7) & ~7
    var key = key
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: stride * cpus, alignment: 8)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0, count: stride * cpus)
    for cpu in 0..<cpus { buffer.storeBytes(of: value, toByteOffset: cpu * stride, as: V.self) }
    let rc = withUnsafeBytes(of: &key) { k in tessera_bpf_map_update(fd, k.baseAddress, buffer, 0) }
    try check(rc, what())
  }

  /// Deletes `key`; returns false when it was not there.
  @discardableResult
  static func delete<K>(_ fd: Int32, _ key: K, _ what: @autoclosure () -> String)
    throws(DatapathError) -> Bool
  {
    var key = key
    let rc = withUnsafeBytes(of: &key) { k in tessera_bpf_map_delete(fd, k.baseAddress) }
    if rc == -ENOENT { return false }
    try check(rc, what())
    return true
  }

  /// Every key of the map (a snapshot; the map may change meanwhile).
  static func keys<K>(_ fd: Int32, as _: K.Type, _ what: @autoclosure () -> String)
    throws(DatapathError) -> [K]
  {
    var result: [K] = []
    let current = UnsafeMutableRawPointer.allocate(
      byteCount: MemoryLayout<K>.size, alignment: MemoryLayout<K>.alignment)
    let next = UnsafeMutableRawPointer.allocate(
      byteCount: MemoryLayout<K>.size, alignment: MemoryLayout<K>.alignment)
    defer {
      current.deallocate()
      next.deallocate()
    }
    next.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<K>.size)
    var first = true
    while true {
      let rc = tessera_bpf_map_next_key(fd, first ? nil : UnsafeRawPointer(current), next)
      if rc == -ENOENT { break }
      try check(rc, what())
      result.append(next.load(as: K.self))
      current.copyMemory(from: next, byteCount: MemoryLayout<K>.size)
      first = false
    }
    return result
  }

  // MARK: Misc

  static func probe() -> String? {
    let reason = String(cString: tessera_bpf_probe())
    return reason.isEmpty ? nil : reason
  }

  static var monotonicNanoseconds: UInt64 { tessera_bpf_ktime_ns() }

  static func isBPFFS(_ path: String) -> Bool { tessera_bpf_is_bpffs(path) == 1 }

  static func mountBPFFS(_ path: String) throws(DatapathError) {
    try check(tessera_bpf_mount_bpffs(path), "mounting bpffs at \(path)", code: .precondition)
  }
}

/// The loader handle (`struct tessera_bpf`): the object's bytes and the
/// global map descriptors, closed when the backend goes away.
final class BPFLoader: @unchecked Sendable {
  // @unchecked: the handle is immutable after open; libbpf calls on it are
  // serialised by Datapath, and the loader only reads it.
  let handle: OpaquePointer
  let ipcacheFD: Int32
  let endpointsFD: Int32
  let conntrackFD: Int32
  let policyFD: Int32
  let policyStatsFD: Int32
  let metricsFD: Int32
  /// The shared handlers of this same object were found installed and re-used.
  let adopted: Bool

  /// The capacity of the conntrack table when none is configured.
  static let defaultConntrackMaxEntries = UInt32(TESSERA_CT_DEFAULT_MAX)

  /// - Parameter conntrackMaxEntries: the conntrack table's size in flows; a table pinned with
  ///   another size is replaced by one of this size, its entries copied over.
  init(objectPath: String, pinDirectory: String, conntrackMaxEntries: UInt32)
    throws(DatapathError)
  {
    var out: OpaquePointer?
    let rc = tessera_bpf_open(objectPath, pinDirectory, conntrackMaxEntries, &out)
    guard rc == 0, let out else {
      throw LibBPF.error(
        rc, "loading \(objectPath) with pins under \(pinDirectory)", code: .precondition)
    }
    handle = out
    ipcacheFD = tessera_bpf_ipcache_fd(out)
    endpointsFD = tessera_bpf_endpoints_fd(out)
    conntrackFD = tessera_bpf_ct_fd(out)
    policyFD = tessera_bpf_policy_fd(out)
    policyStatsFD = tessera_bpf_policy_stats_fd(out)
    metricsFD = tessera_bpf_metrics_fd(out)
    adopted = tessera_bpf_adopted(out) == 1
  }

  deinit { tessera_bpf_close(handle) }

  /// Descriptors of an endpoint's two stub programs, closed with the value.
  final class Programs {
    let fromContainer: Int32
    let toContainer: Int32
    init(fromContainer: Int32, toContainer: Int32) {
      self.fromContainer = fromContainer
      self.toContainer = toContainer
    }
    deinit {
      tessera_bpf_close_fd(fromContainer)
      tessera_bpf_close_fd(toContainer)
    }

    var ids: (from: UInt32, to: UInt32) {
      (
        fromContainer >= 0 ? tessera_bpf_obj_id(fromContainer) : 0,
        toContainer >= 0 ? tessera_bpf_obj_id(toContainer) : 0
      )
    }
  }

  /// Loads the endpoint's stubs (endpoint id in read-only data) and creates its counters.
  func loadEndpoint(_ id: UInt64) throws(DatapathError) -> Programs {
    var fds = tessera_endpoint_fds(from_container: -1, to_container: -1)
    try LibBPF.check(
      tessera_bpf_endpoint_load(handle, id, &fds, nil), "loading the programs of endpoint \(id)")
    return Programs(fromContainer: fds.from_container, toContainer: fds.to_container)
  }

  /// The endpoint's pinned stubs, or nil when none are pinned.
  func pinnedPrograms(_ id: UInt64) throws(DatapathError) -> Programs? {
    var fds = tessera_endpoint_fds(from_container: -1, to_container: -1)
    let rc = tessera_bpf_endpoint_open_pinned(handle, id, &fds)
    if rc == -ENOENT { return nil }
    try LibBPF.check(rc, "opening the pinned programs of endpoint \(id)")
    return Programs(fromContainer: fds.from_container, toContainer: fds.to_container)
  }

  /// Removes the endpoint's state, and every endpoint's flows with one of `addresses`.
  func purge(_ id: UInt64, scanPolicy: Bool, addresses: [IPPrefix]) throws(DatapathError) {
    let flowAddresses = Self.flowAddresses(addresses)
    try LibBPF.check(
      tessera_bpf_endpoint_purge(
        handle, id, scanPolicy ? 1 : 0, flowAddresses, flowAddresses.count),
      "removing the state of endpoint \(id)")
  }

  func forgetFlows(with addresses: [IPPrefix]) throws(DatapathError) {
    let flowAddresses = Self.flowAddresses(addresses)
    guard !flowAddresses.isEmpty else { return }
    try LibBPF.check(
      tessera_bpf_forget_flows(handle, flowAddresses, flowAddresses.count),
      "ending the tracked flows of \(addresses.map(\.description).joined(separator: ", "))")
  }

  /// The host addresses among `prefixes`, as the programs store a flow's addresses.
  private static func flowAddresses(_ prefixes: [IPPrefix]) -> [tessera_flow_address] {
    prefixes.filter(\.isHost).map(flowAddress)
  }

  /// `prefix`'s family and address bytes as the programs' maps hold them (an IPv4 address
  /// in the first 4 of 16 bytes); the ipcache key adds the prefix length.
  static func flowAddress(_ prefix: IPPrefix) -> tessera_flow_address {
    var address = tessera_flow_address()
    address.family = UInt8(prefix.family == .v4 ? TESSERA_FAMILY_V4 : TESSERA_FAMILY_V6)
    withUnsafeMutableBytes(of: &address.addr) { raw in
      for (i, byte) in prefix.bytes.enumerated() { raw[i] = byte }
    }
    return address
  }

  func unpin(_ id: UInt64) throws(DatapathError) {
    try LibBPF.check(
      tessera_bpf_endpoint_unpin(handle, id), "unpinning the programs of endpoint \(id)")
  }

  func pinnedEndpointIDs() throws(DatapathError) -> [UInt64] {
    var ids = [UInt64](repeating: 0, count: 65536)
    let n = try LibBPF.check(
      tessera_bpf_pinned_endpoints(handle, &ids, Int32(ids.count)), "listing pinned endpoints")
    return Array(ids.prefix(Int(n)))
  }

  // MARK: tc

  /// Attaches the stubs to the device; returns whether the clsact qdisc was created here.
  func attach(ifindex: Int32, _ programs: Programs, device: String) throws(DatapathError) -> Bool {
    var created: Int32 = 0
    try LibBPF.check(
      tessera_bpf_tc_attach(ifindex, programs.fromContainer, programs.toContainer, &created),
      "attaching to \(device) (ifindex \(ifindex))")
    return created != 0
  }

  func attachedProgramIDs(ifindex: Int32, device: String) throws(DatapathError) -> (
    from: UInt32, to: UInt32
  ) {
    var from: UInt32 = 0
    var to: UInt32 = 0
    try LibBPF.check(tessera_bpf_tc_query(ifindex, &from, &to), "querying tc filters of \(device)")
    return (from, to)
  }

  func detach(
    ifindex: Int32, expected: (from: UInt32, to: UInt32), destroyHook: Bool, device: String
  ) throws(DatapathError) {
    try LibBPF.check(
      tessera_bpf_tc_detach(ifindex, expected.from, expected.to, destroyHook ? 1 : 0),
      "detaching from \(device) (ifindex \(ifindex))")
  }

  /// BPF_PROG_TEST_RUN of one program on an Ethernet frame.
  static func testRun(programFD: Int32, packet: [UInt8], repeat count: UInt32) throws(DatapathError)
    -> (retval: UInt32, nanoseconds: UInt32)
  {
    var retval: UInt32 = 0
    var duration: UInt32 = 0
    let rc = packet.withUnsafeBytes {
      tessera_bpf_test_run(programFD, $0.baseAddress, UInt32($0.count), count, &retval, &duration)
    }
    try LibBPF.check(rc, "running the program on a test packet")
    return (retval, duration)
  }
}

/// `text` without leading and trailing whitespace.
private func trimmed(_ text: String) -> String {
  var s = Substring(text)
  while let c = s.first, c.isWhitespace { s = s.dropFirst() }
  while let c = s.last, c.isWhitespace { s = s.dropLast() }
  return String(s)
}
