import Foundation
import Synchronization
import Testing
import TesseraCore

@testable import DatapathService

/// Whether the eBPF tests can run here, and how to reach the object.
enum BPFTestEnvironment {
  /// The object: `TESSERA_BPF_OBJECT`, next to the test binary, or `<repo>/.build-bpf`.
  static let objectPath: String? = {
    if let located = BPFDatapathBackend.locateObject() { return located }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let path = repo.appendingPathComponent(".build-bpf/endpoint.bpf.o").path
    return FileManager.default.fileExists(atPath: path) ? path : nil
  }()

  /// Nil when the tests can run, else why they are skipped.
  static let unavailableReason: String? = {
    if let reason = BPFDatapathBackend.probe() { return reason }
    if objectPath == nil { return "no BPF object: run scripts/build-bpf.sh" }
    return nil
  }()

  static var available: Bool {
    if let reason = unavailableReason { print("DatapathServiceTests: eBPF tests skipped: \(reason)") }
    return unavailableReason == nil
  }

  private static let counter = Atomic<Int>(0)

  /// A fresh backend on a unique pin directory under /sys/fs/bpf, removed
  /// (endpoints detached, everything unpinned) when `body` returns or throws.
  static func withBackend<R>(_ body: (BPFDatapathBackend, String) throws -> R) throws -> R {
    let n = counter.add(1, ordering: .relaxed).newValue
    let pin = "/sys/fs/bpf/tessera-test-\(getpid())-\(n)"
    defer { removePinDirectory(pin) }
    let backend = try BPFDatapathBackend(configuration: .init(objectPath: objectPath!, pinDirectory: pin))
    defer {
      if let endpoints = try? backend.restoreEndpoints() {
        for endpoint in endpoints { try? backend.removeEndpoint(endpoint) }
      }
    }
    return try body(backend, pin)
  }

  static func removePinDirectory(_ pin: String) {
    try? FileManager.default.removeItem(atPath: pin)
  }

  /// Runs `ip` with the arguments; true on success.
  @discardableResult
  static func ip(_ arguments: String...) -> Bool {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
  }

  /// Creates veth pairs (down, no addresses: no traffic ever goes through
  /// them) for `body` and deletes them afterwards, even when it throws.
  /// Returns the names of one side of each pair.
  static func withDummyDevices<R>(_ count: Int, _ body: ([String]) throws -> R) throws -> R {
    let n = counter.add(1, ordering: .relaxed).newValue
    let names = (0..<count).map { "tsd\(getpid() % 10000)x\(n)x\($0)" }.map { String($0.prefix(14)) }
    defer { for name in names { ip("link", "del", name) } }
    for name in names {
      guard ip("link", "add", name, "type", "veth", "peer", "name", name + "p") else {
        throw DatapathError(code: .precondition, message: "cannot create veth pair \(name)")
      }
    }
    return try body(names)
  }
}

/// Crafted Ethernet frames for BPF_PROG_TEST_RUN.
enum Packet {
  static let tcp: UInt8 = 6
  static let udp: UInt8 = 17
  static let sctp: UInt8 = 132
  static let icmp: UInt8 = 1

  static let syn: UInt8 = 0x02
  static let ack: UInt8 = 0x10
  static let synAck: UInt8 = 0x12

  static func ipv4(_ source: String, _ destination: String, proto: UInt8, sport: UInt16 = 40000, dport: UInt16 = 0, tcpFlags: UInt8 = syn) -> [UInt8] {
    var l4: [UInt8]
    switch proto {
    case tcp:
      l4 = [UInt8](repeating: 0, count: 20)
      l4[12] = 0x50
      l4[13] = tcpFlags
    case udp:
      l4 = [UInt8](repeating: 0, count: 8)
      l4[5] = 8
    case sctp:
      l4 = [UInt8](repeating: 0, count: 12)
    case icmp:
      // Echo request, identifier = sport.
      l4 = [8, 0, 0, 0, UInt8(sport >> 8), UInt8(sport & 0xff), 0, 1]
    default:
      l4 = [UInt8](repeating: 0, count: 8)
    }
    if proto == tcp || proto == udp || proto == sctp {
      l4[0] = UInt8(sport >> 8)
      l4[1] = UInt8(sport & 0xff)
      l4[2] = UInt8(dport >> 8)
      l4[3] = UInt8(dport & 0xff)
    }
    var ip: [UInt8] = [0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0]
    let total = 20 + l4.count
    ip[2] = UInt8(total >> 8)
    ip[3] = UInt8(total & 0xff)
    ip += address(source, 4) + address(destination, 4)
    return ethernet(type: 0x0800) + ip + l4
  }

  static func icmpEcho(_ source: String, _ destination: String, id: UInt16, reply: Bool) -> [UInt8] {
    var frame = ipv4(source, destination, proto: icmp, sport: id)
    if reply { frame[14 + 20] = 0 }
    return frame
  }

  static func ipv6TCP(_ source: String, _ destination: String, sport: UInt16, dport: UInt16, tcpFlags: UInt8 = syn) -> [UInt8] {
    var l4 = [UInt8](repeating: 0, count: 20)
    l4[0] = UInt8(sport >> 8)
    l4[1] = UInt8(sport & 0xff)
    l4[2] = UInt8(dport >> 8)
    l4[3] = UInt8(dport & 0xff)
    l4[12] = 0x50
    l4[13] = tcpFlags
    let header: [UInt8] = [0x60, 0, 0, 0, 0, UInt8(l4.count), tcp, 64]
    return ethernet(type: 0x86DD) + header + address(source, 16) + address(destination, 16) + l4
  }

  static func arp() -> [UInt8] {
    ethernet(type: 0x0806) + [0, 1, 8, 0, 6, 4, 0, 1] + [UInt8](repeating: 0, count: 20)
  }

  private static func ethernet(type: UInt16) -> [UInt8] {
    [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, UInt8(type >> 8), UInt8(type & 0xff)]
  }

  private static func address(_ text: String, _ size: Int) -> [UInt8] {
    guard let prefix = IPPrefix(text), prefix.bytes.count == size else { fatalError("bad test address \(text)") }
    return prefix.bytes
  }
}

extension BPFDatapathBackend {
  /// Whether the endpoint's program passes the frame.
  func passes(_ endpointID: UInt64, _ direction: TrafficDirection, _ packet: [UInt8]) throws -> Bool {
    try runProgram(endpointID: endpointID, direction: direction, packet: packet).passed
  }
}

/// A policy for endpoint tests.
func endpoint(
  id: UInt64, identity: UInt32 = 1000, ip: String = "10.0.0.5/32", device: String = "", revision: UInt64 = 1,
  ingressEnforced: Bool = false, egressEnforced: Bool = false, entries: [PolicyEntry]
) -> DatapathEndpoint {
  var unique: [PolicyEntry.Key: PolicyEntry] = [:]
  for entry in entries { unique[entry.key] = entry }
  return DatapathEndpoint(
    id: id, hostInterface: device, ips: [IPPrefix(ip)!], identity: NumericIdentity(identity),
    policy: EndpointPolicy(
      revision: revision, ingressEnforced: ingressEnforced, egressEnforced: egressEnforced,
      entries: unique.values.sorted()))
}
