import Foundation
import GRPCCore
import TesseraProto

/// The version every binary reports.
public enum TesseraVersion {
  public static let current = "0.1.0"
}

/// `tessera.runtime.v1.DaemonService`: who this daemon is, for `tessera status`.
public struct DaemonInfoService: Tessera_Runtime_V1_DaemonService.SimpleServiceProtocol {
  private let service: TesseraService
  private let runDirectory: RunDirectory
  private let startedAt = Date()
  private let backend: @Sendable () -> String
  private let details: @Sendable () -> [String: String]

  public init(
    service: TesseraService,
    runDirectory: RunDirectory,
    backend: @escaping @Sendable () -> String,
    details: @escaping @Sendable () -> [String: String] = { [:] }
  ) {
    self.service = service
    self.runDirectory = runDirectory
    self.backend = backend
    self.details = details
  }

  public func getDaemonInfo(
    request: Tessera_Runtime_V1_GetDaemonInfoRequest, context: ServerContext
  ) async throws -> Tessera_Runtime_V1_DaemonInfo {
    .with {
      $0.service = service.rawValue
      $0.version = TesseraVersion.current
      $0.pid = ProcessInfo.processInfo.processIdentifier
      $0.backend = backend()
      $0.runDir = runDirectory.path
      $0.startedAtUnixMs = Int64(startedAt.timeIntervalSince1970 * 1000)
      $0.details = details()
      $0.controllers = ControllerRegistry.shared.statuses().map { status in
        .with {
          $0.name = status.name
          $0.successes = UInt64(status.successes)
          $0.failures = UInt64(status.failures)
          $0.consecutiveFailures = UInt64(status.consecutiveFailures)
          $0.lastError = status.lastError
          $0.lastSuccessUnixMs =
            status.lastSuccess.map { Int64($0.timeIntervalSince1970 * 1000) } ?? 0
          $0.lastFailureUnixMs =
            status.lastFailure.map { Int64($0.timeIntervalSince1970 * 1000) } ?? 0
        }
      }
    }
  }
}
