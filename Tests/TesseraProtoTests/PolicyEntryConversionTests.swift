import TesseraCore
import TesseraProto
import Testing

/// Policy entries survive the wire between the services unchanged.
@Suite("Policy entries on the wire")
struct PolicyEntryConversionTests {
  @Test(
    "ports and ICMP types round-trip; ICMP type 0 (echo reply) stays type 0, never every type",
    arguments: [
      PolicyEntry(peer: NumericIdentity(300), direction: .ingress, proto: .tcp, ports: .any),
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .tcp,
        ports: PortRange(single: 8080)),
      PolicyEntry(
        peer: .unknown, direction: .egress, proto: .udp, ports: PortRange(1000, 2000),
        verdict: .deny),
      PolicyEntry(peer: .unknown, direction: .egress, proto: .any, ports: .any),
      PolicyEntry(
        peer: NumericIdentity(300), direction: .egress, proto: .icmp, ports: PortRange(single: 0)),
      PolicyEntry(
        peer: NumericIdentity(300), direction: .egress, proto: .icmp, ports: PortRange(single: 8)),
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .icmpv6,
        ports: PortRange(single: 128), verdict: .deny),
    ])
  func roundTrip(_ entry: PolicyEntry) throws {
    let decoded = try PolicyEntry(proto: Tessera_Common_V1_PolicyEntry(entry))
    #expect(decoded == entry)
  }

  @Test("an ICMP entry for every type travels as types 0-255, which match every type")
  func icmpEveryType() throws {
    let entry = PolicyEntry(peer: .unknown, direction: .ingress, proto: .icmp, ports: .any)
    let decoded = try PolicyEntry(proto: Tessera_Common_V1_PolicyEntry(entry))
    #expect(decoded.ports == PortRange(0, 255))
    for type in UInt16(0)...255 {
      #expect(decoded.matches(peer: .unknown, direction: .ingress, proto: .icmp, port: type))
    }
  }
}
