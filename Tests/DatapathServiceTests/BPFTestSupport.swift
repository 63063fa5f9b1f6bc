import Foundation
import Synchronization
import TesseraCore
import Testing

@testable import DatapathService

/// Whether the eBPF tests can run here, and how to reach the object.
enum BPFTestEnvironment {
  /// The object: `TESSERA_BPF_OBJECT`, next to the test binary, or `<repo>/.build-bpf`.
  static let objectPath: String? = {
    if let located = BPFDatapathBackend.locateObject() { return located }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .deletingLastPathComponent().deletingLastPathComponent()
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
    if let reason = unavailableReason {
      print("DatapathServiceTests: eBPF tests skipped: \(reason)")
    }
    return unavailableReason == nil
  }

  private static let counter = Atomic<Int>(0)

  /// A fresh backend on a unique pin directory under /sys/fs/bpf, removed
  /// (endpoints detached, everything unpinned) when `body` returns or throws.
  static func withBackend<R>(_ body: (BPFDatapathBackend, String) throws -> R) throws -> R {
    let n = counter.add(1, ordering: .relaxed).newValue
    let pin = "/sys/fs/bpf/tessera-test-\(getpid())-\(n)"
    defer { removePinDirectory(pin) }
    let backend = try BPFDatapathBackend(
      configuration: .init(objectPath: objectPath!, pinDirectory: pin))
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
    let names = (0..<count).map { "tsd\(getpid() % 10000)x\(n)x\($0)" }.map {
      String($0.prefix(14))
    }
    defer { for name in names { ip("link", "del", name) } }
    for name in names {
      guard ip("link", "add", name, "type", "veth", "peer", "name", name + "p") else {
        throw DatapathError(code: .precondition, message: "cannot create veth pair \(name)")
      }
    }
    return try body(names)
  }
}

extension BPFDatapathBackend {
  /// Whether the endpoint's program passes the frame.
  func passes(_ endpointID: UInt64, _ direction: TrafficDirection, _ packet: [UInt8]) throws -> Bool
  {
    try runProgram(endpointID: endpointID, direction: direction, packet: packet).passed
  }
}

/// A policy for endpoint tests.
func endpoint(
  id: UInt64, identity: UInt32 = 1000, ip: String = "10.0.0.5/32", device: String = "",
  revision: UInt64 = 1,
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
