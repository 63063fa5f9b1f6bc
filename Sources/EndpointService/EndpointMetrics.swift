import Metrics

/// The endpoint service's Prometheus metrics (served with `--metrics-address`).
enum EndpointMetrics {
  /// Request to ready (or to failure) of a synchronous create.
  static func createDuration(result: String) -> Timer {
    Timer(
      label: "tessera_endpoint_create_duration_seconds", dimensions: [("result", result)],
      preferredDisplayUnit: .seconds)
  }

  static func regenerations(result: String) -> Counter {
    Counter(label: "tessera_endpoint_regenerations_total", dimensions: [("result", result)])
  }

  static let endpoints = Gauge(label: "tessera_endpoints")
}
