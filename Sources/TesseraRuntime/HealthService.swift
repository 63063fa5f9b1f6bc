import GRPCCore
import Synchronization
import TesseraProto

/// `grpc.health.v1.Health`, as every Tessera daemon serves it.
///
/// The overall status (service name "") starts NOT_SERVING and flips to
/// SERVING when the daemon has finished starting; `Watch` streams changes.
public final class HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol, Sendable {
  public typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

  private let statuses: Mutex<[String: Status]>
  private let changes = EventBroadcaster<Status>(bufferingPolicy: .bufferingNewest(1))

  /// - Parameter serviceNames: fully qualified service names served by the daemon.
  public init(serviceNames: [String]) {
    var statuses: [String: Status] = ["": .notServing]
    for name in serviceNames { statuses[name] = .notServing }
    self.statuses = Mutex(statuses)
  }

  /// Sets every registered service's status.
  public func setServing(_ serving: Bool) {
    let status: Status = serving ? .serving : .notServing
    statuses.withLock { statuses in
      for key in statuses.keys { statuses[key] = status }
    }
    changes.publish(status)
  }

  public var isServing: Bool { statuses.withLock { $0[""] == .serving } }

  public func check(request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext) async throws
    -> Grpc_Health_V1_HealthCheckResponse
  {
    guard let status = statuses.withLock({ $0[request.service] }) else {
      throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
    }
    return .with { $0.status = status }
  }

  public func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>, context: ServerContext
  ) async throws {
    // Subscribe before reading the current status so no change falls in between.
    try await changes.withSubscriptionForRPC { stream in
      let current = statuses.withLock { $0[request.service] } ?? .serviceUnknown
      try await response.write(.with { $0.status = current })
      if current == .serviceUnknown {
        // The service set is fixed: an unknown service stays unknown until the client leaves.
        for await _ in stream {}
        return
      }
      var last = current
      for await status in stream where status != last {
        last = status
        try await response.write(.with { $0.status = status })
      }
    }
  }
}
