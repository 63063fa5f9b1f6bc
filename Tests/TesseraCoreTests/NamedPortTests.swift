import Foundation
import Testing

@testable import TesseraCore

@Suite("Named port validation")
struct NamedPortTests {
  @Test(
    "IANA service names as Kubernetes validates them",
    arguments: ["http", "h", "web-8080", "a1", "x-y-z", "abcdefghijklmno", "1a"])
  func validNames(name: String) {
    #expect(NamedPort.problem(withName: name) == nil)
  }

  @Test(
    "names Kubernetes refuses",
    arguments: [
      "", "HTTP", "8080", "-http", "http-", "we--b", "abcdefghijklmnop", "http_x", "ht tp", "é",
    ])
  func invalidNames(name: String) {
    #expect(NamedPort.problem(withName: name)?.contains("must be an IANA service name") == true)
  }

  @Test("a workload's list: names once, ports 1-65535, TCP, UDP or SCTP")
  func lists() {
    #expect(
      NamedPort.problem(with: [
        NamedPort(name: "http", port: 80), NamedPort(name: "dns", proto: .udp, port: 53),
      ]) == nil)
    #expect(
      NamedPort.problem(with: [
        NamedPort(name: "http", port: 80), NamedPort(name: "http", port: 81),
      ])
        == #"port name "http" is declared twice"#)
    #expect(NamedPort.problem(with: [NamedPort(name: "http", port: 0)]) != nil)
    #expect(NamedPort.problem(with: [NamedPort(name: "ping", proto: .icmp, port: 8)]) != nil)
    #expect(NamedPort.problem(with: [NamedPort(name: "any", proto: .any, port: 8)]) != nil)
  }

  @Test("policies stored before named ports decode with none")
  func decodesOldPolicy() throws {
    let json = #"{"revision":3,"ingressEnforced":true,"egressEnforced":false,"entries":[]}"#
    let policy = try JSONDecoder().decode(EndpointPolicy.self, from: Data(json.utf8))
    #expect(policy.namedPortEntries.isEmpty && policy.revision == 3)
  }
}
