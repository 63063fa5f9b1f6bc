import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The four Tessera daemons.
public enum TesseraService: String, CaseIterable, Sendable, Codable {
  case identity, policy, datapath, endpoint

  /// The executable's name.
  public var executableName: String { "tessera-\(rawValue)d" }

  /// Start order: each service only needs the ones before it.
  public static let startOrder: [TesseraService] = [.identity, .policy, .datapath, .endpoint]
}

/// The directory holding every daemon's socket, lock and pid file.
///
/// One node's four daemons share a run directory; two nodes on one machine
/// (tests) use two directories.
public struct RunDirectory: Sendable, Hashable, CustomStringConvertible {
  public var path: String

  public static let defaultPath = "/run/tessera"
  /// Overrides the default for the CLI and the daemons.
  public static let environmentVariable = "TESSERA_RUN_DIR"

  public init(path: String) { self.path = path }

  /// `$TESSERA_RUN_DIR`, else `/run/tessera`.
  public static var fromEnvironment: RunDirectory {
    RunDirectory(
      path: ProcessInfo.processInfo.environment[environmentVariable].flatMap {
        $0.isEmpty ? nil : $0
      } ?? defaultPath)
  }

  public func socketPath(for service: TesseraService) -> String {
    "\(path)/\(service.rawValue).sock"
  }
  public func lockPath(for service: TesseraService) -> String { "\(path)/\(service.rawValue).lock" }
  public func pidPath(for service: TesseraService) -> String { "\(path)/\(service.rawValue).pid" }
  public func logPath(for service: TesseraService) -> String { "\(path)/\(service.rawValue).log" }
  /// Where the CNI plugin queues the DELs the endpoint service could not take
  /// (next to the endpoint socket; `Sources/tessera-cni/deletion_queue.h`).
  public var deletionQueuePath: String { "\(path)/deletion-queue" }

  public var description: String { path }

  /// Creates the directory (mode 0750) if needed.
  public func create() throws {
    try FileManager.default.createDirectory(
      atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
  }
}

/// An exclusive `flock` on a service's lock file, held for the life of the daemon.
///
/// gRPC's NIO transport unlinks an existing socket file when it binds, so a
/// second daemon started by mistake would silently steal the first one's
/// socket. The lock makes the second one fail instead.
public final class RunDirectoryLock: Sendable {
  private let descriptor: Int32
  public let path: String

  /// - Throws: ``RuntimeSetupError`` when another process holds the lock.
  public init(path: String) throws(RuntimeSetupError) {
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
    guard fd >= 0 else {
      throw RuntimeSetupError("cannot open lock file \(path): \(String(cString: strerror(errno)))")
    }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
      close(fd)
      throw RuntimeSetupError("another daemon holds \(path); is it already running?")
    }
    self.descriptor = fd
    self.path = path
  }

  deinit {
    flock(descriptor, LOCK_UN)
    close(descriptor)
  }
}

/// A daemon could not start.
public struct RuntimeSetupError: Error, CustomStringConvertible, Sendable {
  public var message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}
