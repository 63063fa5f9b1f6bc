import GRPCCore
import Synchronization
import TesseraProto

/// `grpc.health.v1.Health`, as every Tessera daemon serves it.
///
/// The overall status (service name "") starts NOT_SERVING and flips to
/// SERVING when the daemon has finished starting; `Watch` streams changes.
public final class HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol, Sendable {
  public typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

  private struct State {
    var statuses: [String: Status]
    var watchers: [Int: AsyncStream<Status>.Continuation] = [:]
    var nextWatcher = 0
  }

  private let state: Mutex<State>

  /// - Parameter serviceNames: fully qualified service names served by the daemon.
  public init(serviceNames: [String]) {
    var statuses: [String: Status] = ["": .notServing]
    for name in serviceNames { statuses[name] = .notServing }
    self.state = Mutex(State(statuses: statuses))
  }

  /// Sets every registered service's status.
  public func setServing(_ serving: Bool) {
    let status: Status = serving ? .serving : .notServing
    let watchers = state.withLock { state in
      for key in state.statuses.keys { state.statuses[key] = status }
      return Array(state.watchers.values)
    }
    for watcher in watchers { watcher.yield(status) }
  }

  public var isServing: Bool { state.withLock { $0.statuses[""] == .serving } }

  public func check(request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext) async throws -> Grpc_Health_V1_HealthCheckResponse {
    guard let status = state.withLock({ $0.statuses[request.service] }) else {
      throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
    }
    return .with { $0.status = status }
  }

  public func watch(request: Grpc_Health_V1_HealthCheckRequest, response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>, context: ServerContext) async throws {
    let (stream, continuation) = AsyncStream<Status>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let (id, current) = state.withLock { state in
      let id = state.nextWatcher
      state.nextWatcher += 1
      state.watchers[id] = continuation
      return (id, state.statuses[request.service] ?? .serviceUnknown)
    }
    defer { _ = state.withLock { $0.watchers.removeValue(forKey: id) } }
    try await response.write(.with { $0.status = current })
    var last = current
    for await status in stream where status != last {
      last = status
      guard state.withLock({ $0.statuses[request.service] }) != nil else { continue }
      try await response.write(.with { $0.status = status })
    }
  }
}
