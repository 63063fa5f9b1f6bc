import Foundation
import Logging
import ServiceLifecycle
import TesseraRuntime

/// CNI DELs the plugin queued while this service was down: one JSON file per
/// attachment (`{"containerId", "interfaceName"}`) in the run directory's
/// `deletion-queue/`. Like Cilium's deletion queue, it lets DEL succeed with
/// the agent down (so the runtime releases the pod's addresses) and the
/// deletion happens before the service serves an ADD again.
public struct DeletionQueue: Sendable {
  struct Entry: Decodable {
    var containerId: String
    var interfaceName: String
  }

  public let directory: String

  public init(directory: String) { self.directory = directory }

  /// Deletes every queued endpoint (with `only`, that attachment's); a file goes once
  /// its deletion succeeded (or was malformed). Returns how many deletions are left
  /// for later.
  ///
  /// A create drains its own attachment's first: the runtime's DEL came before its
  /// ADD (a retry after a failed ADD reuses the container id), and a DEL queued in a
  /// timeout that the periodic drain ran later would delete the new endpoint.
  @discardableResult
  public func drain(
    _ manager: EndpointManager, only: EndpointRegistry.Attachment? = nil, logger: Logger
  ) async -> Int {
    let names =
      (try? FileManager.default.contentsOfDirectory(atPath: directory))?.filter {
        !$0.hasPrefix(".")  // the plugin's files being written
      }.sorted() ?? []
    let controller = Controller("cni-deletion-queue")
    var left = 0
    var lastError: (any Error)?
    defer {
      if let lastError { controller.failed(lastError) } else { controller.succeeded() }
    }
    for name in names {
      let path = "\(directory)/\(name)"
      guard let data = FileManager.default.contents(atPath: path),
        let entry = try? JSONDecoder().decode(Entry.self, from: data),
        !entry.containerId.isEmpty
      else {
        if only == nil {
          logger.warning(
            "dropping a malformed deletion-queue entry", metadata: ["file": "\(path)"])
          try? FileManager.default.removeItem(atPath: path)
        }
        continue
      }
      if let only,
        entry.containerId != only.containerID
          || (!entry.interfaceName.isEmpty && entry.interfaceName != only.interfaceName)
      {
        continue
      }
      do {
        let removed = try await manager.deleteEndpoints(
          containerID: entry.containerId,
          interfaceName: entry.interfaceName.isEmpty ? nil : entry.interfaceName)
        try? FileManager.default.removeItem(atPath: path)
        logger.info(
          "queued CNI DEL done",
          metadata: [
            "container.id": "\(entry.containerId)", "interface": "\(entry.interfaceName)",
            "endpoints.removed": "\(removed.count)",
          ])
      } catch {
        left += 1
        lastError = error
        logger.warning(
          "queued CNI DEL waits for the other services",
          metadata: ["container.id": "\(entry.containerId)", "error": "\(error)"])
      }
    }
    return left
  }
}

/// Drains the ``DeletionQueue`` every few seconds while the service runs, for
/// a DEL that was queued in the moment the service was starting.
public struct DeletionQueueDrainer: Service {
  let queue: DeletionQueue
  let manager: EndpointManager
  let interval: Duration
  /// False until the restarted node has restored its endpoints (it drains the queue
  /// itself then): a deletion run earlier would find its endpoint not restored yet,
  /// count it done, and the restore would bring the endpoint back.
  let isServing: @Sendable () -> Bool
  let logger: Logger

  public init(
    queue: DeletionQueue, manager: EndpointManager, interval: Duration = .seconds(5),
    isServing: @escaping @Sendable () -> Bool = { true }, logger: Logger
  ) {
    self.queue = queue
    self.manager = manager
    self.interval = interval
    self.isServing = isServing
    self.logger = logger
  }

  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown {
        while true {
          try await Task.sleep(for: interval)
          guard isServing() else { continue }
          await queue.drain(manager, logger: logger)
        }
      }
    } catch is CancellationError {
      // A graceful shutdown.
    }
  }
}
