import CTesseraBPF
import Foundation
import TesseraCore

#if canImport(Glibc)
  import Glibc
#endif

/// Reads the programs' events ring buffer (`tessera_events`). Used from one
/// thread only (``FlowEventPump``).
final class BPFEventReader: DatapathEventReader, @unchecked Sendable {
  // @unchecked: `reader` is used by the pump's thread alone; `loader` is
  // immutable and only read.
  private let loader: BPFLoader
  private let reader: OpaquePointer
  private var batch: [tessera_event]

  init(loader: BPFLoader, batchSize: Int = 256) throws(DatapathError) {
    var out: OpaquePointer?
    let rc = tessera_events_open(loader.handle, &out)
    guard rc == 0, let out else { throw LibBPF.error(rc, "opening the events ring buffer") }
    self.loader = loader
    self.reader = out
    self.batch = Array(repeating: tessera_event(), count: batchSize)
  }

  deinit { tessera_events_close(reader) }

  func read(timeoutMilliseconds: Int32) throws(DatapathError) -> [FlowEvent] {
    let capacity = Int32(batch.count)
    let count = batch.withUnsafeMutableBufferPointer {
      tessera_events_read(reader, $0.baseAddress, capacity, timeoutMilliseconds)
    }
    try LibBPF.check(count, "reading the events ring buffer")
    guard count > 0 else { return [] }
    let clock = MonotonicToWall()
    return batch.prefix(Int(count)).map { Self.event($0, clock: clock) }
  }

  var lostInKernel: UInt64 { tessera_events_lost(loader.handle) }

  static func event(_ raw: tessera_event, clock: MonotonicToWall) -> FlowEvent {
    var raw = raw
    let reasonName =
      BPFDatapathBackend.reasonNames.indices.contains(Int(raw.reason))
      ? BPFDatapathBackend.reasonNames[Int(raw.reason)] : "reason-\(raw.reason)"
    let dropped = reasonName.hasPrefix("drop-")
    let family: IPPrefix.Family? =
      switch raw.family {
      case UInt8(TESSERA_FAMILY_V4): .v4
      case UInt8(TESSERA_FAMILY_V6): .v6
      default: nil
      }
    return FlowEvent(
      time: clock.date(monotonicNanoseconds: raw.time_ns), endpointID: raw.endpoint_id,
      direction: raw.direction == UInt8(TESSERA_DIR_INGRESS) ? .ingress : .egress,
      verdict: dropped ? .dropped : .forwarded,
      reason: String(reasonName.drop(while: { $0 != "-" }).dropFirst()),
      match: FlowEvent.PolicyMatch(rawValue: raw.match) ?? .none,
      state: FlowEvent.ConnectionState(rawValue: raw.state) ?? .none, deniedByEntry: raw.deny != 0,
      ipProtocol: family == nil ? 0 : raw.proto,
      source: family.map { BPFDatapathBackend.addressText(family: $0, &raw.saddr) } ?? "",
      destination: family.map { BPFDatapathBackend.addressText(family: $0, &raw.daddr) } ?? "",
      sourcePort: raw.sport, destinationPort: raw.dport, sourceIdentity: raw.src_identity,
      destinationIdentity: raw.dst_identity, length: raw.length,
      icmpType: family != nil && L4Protocol(rawValue: raw.proto)?.isICMP == true
        ? raw.icmp_type : nil)
  }
}

/// Converts the programs' CLOCK_MONOTONIC timestamps to wall-clock dates,
/// from one reading of both clocks.
struct MonotonicToWall {
  let monotonic: UInt64
  let wall: Date

  init() {
    monotonic = LibBPF.monotonicNanoseconds
    wall = Date()
  }

  func date(monotonicNanoseconds: UInt64) -> Date {
    let age = monotonic >= monotonicNanoseconds ? monotonic - monotonicNanoseconds : 0
    return wall.addingTimeInterval(-Double(age) / 1e9)
  }
}

extension BPFDatapathBackend {
  public func makeEventReader() throws(DatapathError) -> (any DatapathEventReader)? {
    try BPFEventReader(loader: loader)
  }
}
