import Foundation
import Metrics
import Synchronization

/// A named piece of background work that keeps something in step (Cilium's controllers):
/// a watch, a lease, a garbage collector, an endpoint's regeneration. Each run succeeds or
/// fails; `tessera status` shows how many of a daemon's controllers are failing, and the
/// last error of each.
public struct Controller: Sendable {
  public let name: String
  private let registry: ControllerRegistry

  public init(_ name: String, registry: ControllerRegistry = .shared) {
    self.name = name
    self.registry = registry
    registry.register(name)
  }

  /// A run succeeded: the controller is healthy again.
  public func succeeded() { registry.record(name, error: nil) }

  /// A run failed with `error`; the controller stays failing until a run succeeds.
  public func failed(_ error: any Error) { registry.record(name, error: "\(error)") }

  /// A run failed for a reason that is not an `Error`.
  public func failed(_ reason: String) { registry.record(name, error: reason) }

  /// The controller's work is over (its endpoint was deleted): it is no longer listed.
  public func remove() { registry.remove(name) }
}

/// Every controller of this process and how its runs went.
public final class ControllerRegistry: Sendable {
  /// The process's controllers (one registry per daemon process).
  public static let shared = ControllerRegistry()

  /// One controller as `tessera status` shows it.
  public struct Status: Sendable, Hashable {
    public var name: String
    public var successes: Int
    public var failures: Int
    /// Failures since the last success; the controller is failing while it is not 0.
    public var consecutiveFailures: Int
    public var lastError: String
    public var lastSuccess: Date?
    public var lastFailure: Date?

    public var isFailing: Bool { consecutiveFailures > 0 }
  }

  private let controllers = Mutex<(byName: [String: Status], failing: Int)>(([:], 0))
  private let failingGauge = Gauge(label: "tessera_controllers_failing")

  public init() {}

  /// Every controller, sorted by name.
  public func statuses() -> [Status] {
    controllers.withLock { $0.byName.values.sorted { $0.name < $1.name } }
  }

  /// How many controllers are failing now.
  public var failingCount: Int { controllers.withLock { $0.failing } }

  func register(_ name: String) {
    controllers.withLock { controllers in
      if controllers.byName[name] == nil {
        controllers.byName[name] = Status(
          name: name, successes: 0, failures: 0, consecutiveFailures: 0, lastError: "")
      }
    }
  }

  func record(_ name: String, error: String?) {
    let failing = controllers.withLock { controllers -> Int in
      var status =
        controllers.byName[name]
        ?? Status(name: name, successes: 0, failures: 0, consecutiveFailures: 0, lastError: "")
      let wasFailing = status.isFailing
      if let error {
        status.failures += 1
        status.consecutiveFailures += 1
        status.lastError = error
        status.lastFailure = Date()
      } else {
        status.successes += 1
        status.consecutiveFailures = 0
        status.lastSuccess = Date()
      }
      controllers.byName[name] = status
      controllers.failing += (status.isFailing ? 1 : 0) - (wasFailing ? 1 : 0)
      return controllers.failing
    }
    failingGauge.record(failing)
  }

  func remove(_ name: String) {
    let failing = controllers.withLock { controllers -> Int in
      if controllers.byName.removeValue(forKey: name)?.isFailing == true {
        controllers.failing -= 1
      }
      return controllers.failing
    }
    failingGauge.record(failing)
  }
}
