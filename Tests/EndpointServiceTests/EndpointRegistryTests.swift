import TesseraCore
import Testing

@testable import EndpointService

@Suite("Endpoint registry")
struct EndpointRegistryTests {
  @Test("ids(where:) gives the ids of the endpoints a test accepts, ascending, as all() would")
  func idsWhere() throws {
    let registry = EndpointRegistry()
    for i in 0..<20 {
      _ = try registry.register(
        EndpointSpec(containerID: "c\(i)", ips: [IPPrefix("10.9.0.\(i + 1)")!]))
    }
    for endpoint in registry.all() where endpoint.id.isMultiple(of: 3) {
      try registry.update(id: endpoint.id) { $0.identity = NumericIdentity(1000) }
    }
    let selected = registry.ids { $0.identity == NumericIdentity(1000) }
    #expect(selected == registry.all().filter { $0.identity == NumericIdentity(1000) }.map(\.id))
    #expect(selected == [3, 6, 9, 12, 15, 18])
    #expect(registry.ids { _ in false }.isEmpty)
  }
}
