import Foundation
import LocalEtcd
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

@Suite("Prometheus metrics", .serialized, .enabled(if: TesseraNode.skipReason == nil))
struct MetricsIntegrationTests {
  func scrape(_ port: Int) async throws -> String {
    let (data, response) = try await URLSession.shared.data(
      from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
    #expect((response as? HTTPURLResponse)?.statusCode == 200)
    return String(decoding: data, as: UTF8.self)
  }

  /// The value of the first sample line starting with `prefix`.
  func value(_ text: String, _ prefix: String) -> Double? {
    text.split(separator: "\n").first { $0.hasPrefix(prefix + " ") }.flatMap {
      Double($0.split(separator: " ").last!)
    }
  }

  @Test(
    "each daemon serves /metrics: create durations, regenerations, endpoints, identities, policy revision, datapath counters"
  )
  func metrics() async throws {
    let node = try TesseraNode()
    defer { node.down() }
    // node up takes one base port for four consecutive ones: find a free run of four.
    let start = try #require(
      stride(from: 20_000, to: 60_000, by: 97).first {
        (try? LocalEtcdCluster.bindable($0..<($0 + 4))) == true
      })
    try node.up(["--metrics-base-port", String(start)])
    try node.cli([
      "endpoint", "create", "--container-id", "m1", "--ip", "10.90.0.1", "--label", "app=m",
    ])

    let endpoint = try await scrape(start + 3)
    #expect(value(endpoint, #"tessera_endpoint_create_duration_seconds_count{result="ok"}"#) == 1)
    #expect(value(endpoint, #"tessera_endpoint_regenerations_total{result="ok"}"#) ?? 0 >= 1)
    #expect(value(endpoint, "tessera_endpoints") == 1)
    let identity = try await scrape(start)
    #expect(value(identity, #"tessera_identity_allocations_total{new="true"}"#) == 1)
    #expect(identity.contains("tessera_identities "))
    let policy = try await scrape(start + 1)
    #expect(value(policy, "tessera_policy_revision") == 1)
    let datapath = try await scrape(start + 2)
    #expect(datapath.contains("tessera_datapath_endpoints "))  // sampled every 5 s
    // Conventions: every family has its # HELP; build info; gRPC requests by method and code.
    for text in [endpoint, identity, policy, datapath] {
      let families = Set(
        text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map {
          $0.split(separator: " ")[2]
        })
      let helped = Set(
        text.split(separator: "\n").filter { $0.hasPrefix("# HELP ") }.map {
          $0.split(separator: " ")[2]
        })
      #expect(
        !families.isEmpty && families == helped,
        "families without # HELP: \(families.subtracting(helped))")
    }
    #expect(value(endpoint, #"tessera_build_info{service="endpoint",version="0.1.0"}"#) == 1)
    #expect(
      value(
        endpoint,
        #"tessera_grpc_server_requests_total{method="tessera.endpoint.v1.EndpointService/CreateEndpoint",code="ok"}"#
      ) == 1, "\(endpoint)")
    #expect(
      endpoint.contains(
        #"tessera_grpc_server_request_duration_seconds_count{method="tessera.endpoint.v1.EndpointService/CreateEndpoint"}"#
      ))
  }
}
