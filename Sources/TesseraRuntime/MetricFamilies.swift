import CoreMetrics
import GRPCCore
import Metrics
import Prometheus

/// Every metric family Tessera records, with its `# HELP` text: one place to
/// read what is exported (README, "Metrics").
public enum MetricFamilies {
  public static let help: [String: String] = [
    "tessera_build_info": "Always 1; the labels say which service and version is running.",
    "tessera_controllers_failing":
      "Controllers (watches, leases, garbage collection, regenerations) whose last run failed.",
    "tessera_grpc_server_requests_total": "gRPC requests handled, by method and status code.",
    "tessera_grpc_server_request_duration_seconds":
      "Time to handle a gRPC request (until the response starts), by method.",
    "tessera_endpoint_create_duration_seconds":
      "Request to ready (or failure) of a synchronous CreateEndpoint.",
    "tessera_endpoint_regenerations_total": "Endpoint regenerations, by result (ok or failed).",
    "tessera_endpoints": "Live endpoints on this node.",
    "tessera_endpoint_ipcache_rejected_total":
      "Other nodes' ipcache entries refused (bad prefix, reserved identity, or this node's address).",
    "tessera_identity_allocations_total": "Identity allocations, new identities or existing ones.",
    "tessera_identities": "Identities known, reserved ones included.",
    "tessera_policy_revision": "Revision of the rule repository.",
    "tessera_policies": "Policies in the rule repository.",
    "tessera_selectorcache_selectors": "Selectors in the SelectorCache.",
    "tessera_datapath_endpoints": "Endpoints realised in the datapath.",
    "tessera_datapath_packets_total":
      "Packets the datapath forwarded or dropped, by direction, verdict and reason; never decreases (kept when an endpoint goes).",
    "tessera_datapath_policy_map_writes_total": "Policy-map entries written or deleted.",
    "tessera_datapath_ipcache_writes_total": "ipcache entries written or deleted.",
    "tessera_datapath_events_lost_total":
      "Verdict events the kernel's ring buffer lost because it was full (packets are never lost).",
  ]

  static func helpText(_ name: String) -> String { help[name] ?? "" }
}

/// swift-metrics into the Prometheus registry, with each family's `# HELP`
/// (swift-prometheus's own factory passes none).
struct HelpfulPrometheusFactory: MetricsFactory {
  let base: PrometheusMetricsFactory

  private var registry: PrometheusCollectorRegistry { base.registry }

  private func descriptor(_ label: String) -> MetricNameDescriptor {
    MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricFamilies.helpText(label))
  }

  func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
    registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
  }

  func makeFloatingPointCounter(label: String, dimensions: [(String, String)])
    -> any FloatingPointCounterHandler
  {
    registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
  }

  func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool)
    -> any RecorderHandler
  {
    guard aggregate else {
      return registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }
    return registry.makeValueHistogram(
      descriptor: descriptor(label), labels: dimensions,
      buckets: base.valueHistogramBuckets[label] ?? base.defaultValueHistogramBuckets)
  }

  func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
    registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
  }

  func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
    registry.makeDurationHistogram(
      descriptor: descriptor(label), labels: dimensions,
      buckets: base.durationHistogramBuckets[label] ?? base.defaultDurationHistogramBuckets)
  }

  func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }
  func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
    base.destroyFloatingPointCounter(handler)
  }
  func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }
  func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }
  func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}

/// Counts every request a daemon's gRPC server handles and how long it took,
/// by method (`/tessera.endpoint.v1.EndpointService/CreateEndpoint`) and code.
struct ServerMetricsInterceptor: ServerInterceptor {
  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>, context: ServerContext,
    next:
      @Sendable (StreamingServerRequest<Input>, ServerContext) async throws ->
      StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let method = context.descriptor.fullyQualifiedMethod
    let started = ContinuousClock.now
    func record(_ code: String) {
      Counter(
        label: "tessera_grpc_server_requests_total",
        dimensions: [("method", method), ("code", code)]
      ).increment()
      Timer(
        label: "tessera_grpc_server_request_duration_seconds", dimensions: [("method", method)],
        preferredDisplayUnit: .seconds
      ).recordInterval(since: started)
    }
    do {
      let response = try await next(request, context)
      switch response.accepted {
      case .success: record("ok")
      case .failure(let error): record(String(describing: error.code))
      }
      return response
    } catch let error as RPCError {
      record(String(describing: error.code))
      throw error
    } catch {
      record("unknown")
      throw error
    }
  }
}

extension Timer {
  fileprivate func recordInterval(since start: ContinuousClock.Instant) {
    let elapsed = ContinuousClock.now - start
    recordNanoseconds(
      elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
  }
}
