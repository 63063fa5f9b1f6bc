import Testing
import TesseraCore
@testable import DatapathService

@Suite(.enabled(if: BPFTestEnvironment.available))
struct ZZProfile {
  @Test func profile() throws {
    try BPFTestEnvironment.withBackend { backend, _ in
      let entries = (0..<1000).map { PolicyEntry(peer: NumericIdentity(UInt32(10_000 + $0)), direction: .ingress, proto: .tcp, ports: PortRange(single: 80)) }
      let a = endpoint(id: 1, ingressEnforced: true, entries: entries)
      var t = LibBPF.monotonicNanoseconds
      try backend.apply(EndpointChange(endpoint: a, isNew: true, interfaceChanged: true, upserts: a.policy.entries, deletes: []))
      print("PROFILE apply new 1000: \(Double(LibBPF.monotonicNanoseconds - t) / 1e6) ms")
      let b = endpoint(id: 1, revision: 2, ingressEnforced: true, entries: entries + [PolicyEntry(peer: NumericIdentity(5), direction: .ingress)])
      t = LibBPF.monotonicNanoseconds
      let change = Datapath.difference(from: a, to: b)
      print("PROFILE difference: \(Double(LibBPF.monotonicNanoseconds - t) / 1e6) ms")
      t = LibBPF.monotonicNanoseconds
      try backend.apply(change)
      print("PROFILE apply +1: \(Double(LibBPF.monotonicNanoseconds - t) / 1e6) ms")
      t = LibBPF.monotonicNanoseconds
      _ = Set(b.policy.entries.map(PolicyGroup.init))
      print("PROFILE groups: \(Double(LibBPF.monotonicNanoseconds - t) / 1e6) ms")
      t = LibBPF.monotonicNanoseconds
      _ = try backend.policyEntries(endpointID: 1)
      print("PROFILE readback: \(Double(LibBPF.monotonicNanoseconds - t) / 1e6) ms")
    }
  }
}
