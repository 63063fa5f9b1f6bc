import Foundation
import Logging
import TesseraCore
import Testing

@testable import DatapathService

/// The node's addresses in the ipcache as `host`, against real devices of this
/// network namespace; needs root, bpffs and the object.
@Suite("node addresses", .serialized, .enabled(if: BPFTestEnvironment.available))
struct BPFHostAddressTests {
  private let shared = IPPrefix("203.0.113.77/32")!
  private let other = IPPrefix("203.0.113.78/32")!
  private let v6 = IPPrefix("2001:db8:77::1/128")!

  private func hostEntries(_ backend: BPFDatapathBackend) throws -> Set<IPPrefix> {
    Set(try backend.ipcacheEntries().filter { $0.identity == .host }.map(\.prefix))
  }

  /// Polls `condition` for up to two seconds (the watch's thread applies changes).
  private func eventually(_ condition: () throws -> Bool) async throws -> Bool {
    for _ in 0..<100 {
      if try condition() { return true }
      try await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
  }

  @Test("an attached device's own addresses are listed, not another device's")
  func attachedDeviceOnly() throws {
    try BPFTestEnvironment.withBackend { backend, _ in
      try BPFTestEnvironment.withDummyDevices(2) { devices in
        #expect(BPFTestEnvironment.ip("addr", "add", "\(shared)", "dev", devices[0]))
        #expect(BPFTestEnvironment.ip("addr", "add", "\(other)", "dev", devices[1]))
        try backend.addHostAddresses(ofDevice: try BPFDatapathBackend.ifindex(of: devices[0]))
        // Listed at once, with no watch running: the promise holds when ADD returns.
        #expect(try hostEntries(backend).contains(shared))
        #expect(!backend.hostAddresses.contains(other))
      }
    }
  }

  @Test("the watch adds new addresses and removes them with the last device holding them")
  func followsChanges() async throws {
    let n = UInt32.random(in: 0..<10_000)
    let a = "tsha\(n)a"
    let b = "tsha\(n)b"
    defer {
      BPFTestEnvironment.ip("link", "del", a)
      BPFTestEnvironment.ip("link", "del", b)
    }
    let pin = "/sys/fs/bpf/tessera-test-hostaddr-\(getpid())"
    defer { BPFTestEnvironment.removePinDirectory(pin) }
    let backend = try BPFDatapathBackend(
      configuration: .init(objectPath: BPFTestEnvironment.objectPath!, pinDirectory: pin))
    let watch = Task {
      try await HostAddressWatch(backend: backend, logger: Logger(label: "test")).run()
    }
    defer { watch.cancel() }

    // veth pairs, down (no traffic), as pods' host sides are veths; deleting one
    // side deletes its peer.
    #expect(BPFTestEnvironment.ip("link", "add", a, "type", "veth", "peer", "name", a + "p"))
    #expect(BPFTestEnvironment.ip("link", "add", b, "type", "veth", "peer", "name", b + "p"))
    // ptp gives every host-side veth the same gateway address.
    #expect(BPFTestEnvironment.ip("addr", "add", "\(shared)", "dev", a))
    #expect(BPFTestEnvironment.ip("addr", "add", "\(shared)", "dev", b))
    #expect(BPFTestEnvironment.ip("-6", "addr", "add", "\(v6)", "dev", a, "nodad"))
    #expect(try await eventually { try hostEntries(backend).isSuperset(of: [shared, v6]) })

    // One device loses the address: the other still holds it.
    #expect(BPFTestEnvironment.ip("addr", "del", "\(shared)", "dev", a))
    try await Task.sleep(for: .milliseconds(300))
    #expect(try hostEntries(backend).contains(shared))

    // The device goes (a pod's veth deleted): its addresses leave the ipcache.
    #expect(BPFTestEnvironment.ip("link", "del", a))
    #expect(try await eventually { try !hostEntries(backend).contains(v6) })
    #expect(BPFTestEnvironment.ip("link", "del", b))
    #expect(try await eventually { try !hostEntries(backend).contains(shared) })
    #expect(!backend.hostAddresses.contains(shared))
    // What the node still has stays.
    #expect(try hostEntries(backend).contains(IPPrefix("127.0.0.1/32")!))
  }

  @Test("an address someone else's entry holds is not removed with the device")
  func onlyHostEntriesRemoved() async throws {
    try BPFTestEnvironment.withBackend { backend, _ in
      try BPFTestEnvironment.withDummyDevices(1) { devices in
        #expect(BPFTestEnvironment.ip("addr", "add", "\(other)", "dev", devices[0]))
        let ifindex = try BPFDatapathBackend.ifindex(of: devices[0])
        try backend.addHostAddresses(ofDevice: ifindex)
        // A pod's entry written over it (an operator's mistake): not the node's to remove.
        try backend.upsertIPCache([IPCacheEntry(prefix: other, identity: NumericIdentity(4242))])
        try backend.applyHostAddressChanges([.init(prefix: other, ifindex: ifindex, present: false)]
        )
        #expect(
          try backend.ipcacheEntries().contains(
            IPCacheEntry(prefix: other, identity: NumericIdentity(4242))))
        try backend.deleteIPCache([other])
      }
    }
  }
}
