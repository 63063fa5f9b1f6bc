import TesseraCore

/// What the datapath knows about one endpoint.
public struct DatapathEndpoint: Hashable, Sendable {
  public var id: UInt64
  /// Host side of the endpoint's veth; empty for endpoints without a device.
  public var hostInterface: String
  public var ips: [IPPrefix]
  public var identity: NumericIdentity
  /// The policy in force, including its revision.
  public var policy: EndpointPolicy

  public init(
    id: UInt64, hostInterface: String, ips: [IPPrefix], identity: NumericIdentity,
    policy: EndpointPolicy
  ) {
    self.id = id
    self.hostInterface = hostInterface
    self.ips = ips
    self.identity = identity
    self.policy = policy
  }
}

/// A change to one endpoint's kernel state, computed by ``Datapath`` as the
/// difference between what is realised and what is wanted.
public struct EndpointChange: Sendable {
  /// The endpoint as it must be after the change.
  public var endpoint: DatapathEndpoint
  /// True when nothing was realised for this endpoint before (create programs and maps).
  public var isNew: Bool
  /// True when the device changed (attach again).
  public var interfaceChanged: Bool
  public var upserts: [PolicyEntry]
  public var deletes: [PolicyEntry.Key]

  public init(
    endpoint: DatapathEndpoint, isNew: Bool, interfaceChanged: Bool, upserts: [PolicyEntry],
    deletes: [PolicyEntry.Key]
  ) {
    self.endpoint = endpoint
    self.isNew = isNew
    self.interfaceChanged = interfaceChanged
    self.upserts = upserts
    self.deletes = deletes
  }
}

public struct IPCacheEntry: Hashable, Sendable, Comparable {
  public var prefix: IPPrefix
  public var identity: NumericIdentity

  public init(prefix: IPPrefix, identity: NumericIdentity) {
    self.prefix = prefix
    self.identity = identity
  }

  public static func < (lhs: Self, rhs: Self) -> Bool { lhs.prefix < rhs.prefix }
}

/// One tracked connection.
public struct ConntrackEntry: Hashable, Sendable {
  public var source: String
  public var destination: String
  public var sourcePort: UInt16
  public var destinationPort: UInt16
  public var proto: L4Protocol
  public var endpointID: UInt64
  public var direction: TrafficDirection
  public var packets: UInt64
  public var lastSeenNanoseconds: UInt64

  public init(
    source: String, destination: String, sourcePort: UInt16, destinationPort: UInt16,
    proto: L4Protocol, endpointID: UInt64, direction: TrafficDirection, packets: UInt64,
    lastSeenNanoseconds: UInt64
  ) {
    self.source = source
    self.destination = destination
    self.sourcePort = sourcePort
    self.destinationPort = destinationPort
    self.proto = proto
    self.endpointID = endpointID
    self.direction = direction
    self.packets = packets
    self.lastSeenNanoseconds = lastSeenNanoseconds
  }
}

/// A policy entry with what was counted on it: the packets and bytes of
/// the connections it allowed (both directions, every packet), or the
/// packets it denied.
public struct CountedPolicyEntry: Hashable, Sendable {
  public var entry: PolicyEntry
  public var packets: UInt64
  public var bytes: UInt64

  public init(entry: PolicyEntry, packets: UInt64 = 0, bytes: UInt64 = 0) {
    self.entry = entry
    self.packets = packets
    self.bytes = bytes
  }
}

/// Per-endpoint packet counters, by direction and verdict.
public struct EndpointCounters: Hashable, Sendable {
  public var ingressForwarded: UInt64 = 0
  public var ingressDropped: UInt64 = 0
  public var egressForwarded: UInt64 = 0
  public var egressDropped: UInt64 = 0
  /// Packets by direction and named reason (`drop-invalid-source`, …), reasons
  /// with no packet left out; empty for backends that do not name reasons.
  public var reasons: [ReasonCount] = []

  /// Packets counted under one reason in one direction.
  public struct ReasonCount: Hashable, Sendable {
    public var direction: TrafficDirection
    public var reason: String
    public var packets: UInt64
  }

  public init(
    ingressForwarded: UInt64 = 0, ingressDropped: UInt64 = 0, egressForwarded: UInt64 = 0,
    egressDropped: UInt64 = 0
  ) {
    self.ingressForwarded = ingressForwarded
    self.ingressDropped = ingressDropped
    self.egressForwarded = egressForwarded
    self.egressDropped = egressDropped
  }
}

/// Where policy is realised: the kernel (eBPF) or, for unprivileged unit
/// tests only, memory.
///
/// Calls are serialised by ``Datapath``; a backend need not lock.
public protocol DatapathBackend: Sendable {
  /// Shown by `tessera status`, e.g. `bpf (/sys/fs/bpf/tessera)` or `memory (test backend)`.
  var name: String { get }

  /// Endpoints whose kernel state survived a restart of the daemon, to re-adopt.
  func restoreEndpoints() throws(DatapathError) -> [DatapathEndpoint]

  /// Applies the change; returns only once it is in force.
  func apply(_ change: EndpointChange) throws(DatapathError)

  /// Detaches programs and removes the endpoint's maps. Idempotent.
  func removeEndpoint(_ endpoint: DatapathEndpoint) throws(DatapathError)

  func upsertIPCache(_ entries: [IPCacheEntry]) throws(DatapathError)
  func deleteIPCache(_ prefixes: [IPPrefix]) throws(DatapathError)
  /// Ends every endpoint's tracked flows with one of `addresses` (host prefixes; others are
  /// ignored) at either end: the endpoint that held them no longer does, and the next one
  /// given an address must not find its predecessor's connections open.
  func forgetFlows(with addresses: [IPPrefix]) throws(DatapathError)
  func ipcacheEntries() throws(DatapathError) -> [IPCacheEntry]
  /// The identity the programs see for `address` (a host prefix): the longest prefix that
  /// covers it, nil when none does.
  func ipcacheIdentity(of address: IPPrefix) throws(DatapathError) -> NumericIdentity?

  /// The entries actually present in the endpoint's policy map.
  func policyEntries(endpointID: UInt64) throws(DatapathError) -> [PolicyEntry]
  /// ``policyEntries(endpointID:)`` with the packets and bytes counted on each.
  func countedPolicyEntries(endpointID: UInt64) throws(DatapathError) -> [CountedPolicyEntry]
  func conntrackEntries() throws(DatapathError) -> [ConntrackEntry]
  /// The conntrack table's capacity in entries; 0 for a backend without one.
  var conntrackMaxEntries: UInt32 { get }
  func counters(endpointID: UInt64) throws(DatapathError) -> EndpointCounters

  /// A reader of the datapath's verdict events, or nil when it emits none.
  func makeEventReader() throws(DatapathError) -> (any DatapathEventReader)?
}

extension DatapathBackend {
  public func makeEventReader() throws(DatapathError) -> (any DatapathEventReader)? { nil }

  /// Every entry at zero: for backends that count nothing.
  public func countedPolicyEntries(endpointID: UInt64) throws(DatapathError)
    -> [CountedPolicyEntry]
  {
    try policyEntries(endpointID: endpointID).map { CountedPolicyEntry(entry: $0) }
  }
}

/// Where ``FlowEventPump`` reads events from; used by one thread at a time.
public protocol DatapathEventReader: Sendable {
  /// Waits up to `timeoutMilliseconds` and returns the events that arrived (maybe none).
  func read(timeoutMilliseconds: Int32) throws(DatapathError) -> [FlowEvent]
  /// Events the datapath lost because its buffer was full.
  var lostInKernel: UInt64 { get }
}
