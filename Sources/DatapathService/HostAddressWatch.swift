import Foundation
import Logging
import ServiceLifecycle
import TesseraRuntime

/// Follows the node's address changes into the ipcache's `host` entries while
/// the daemon runs (an address added to or removed from any device, a pod's
/// veth deleted with its link-local address), on a thread of its own: reading
/// netlink blocks, which must not hold one of Swift concurrency's threads.
public struct HostAddressWatch: Service {
  let backend: BPFDatapathBackend
  let logger: Logger

  public init(backend: BPFDatapathBackend, logger: Logger) {
    self.backend = backend
    self.logger = logger
  }

  public func run() async throws {
    let stop = StopFlag()
    let stopped = AsyncStream<Void>.makeStream()
    let (backend, logger) = (backend, logger)
    let controller = Controller("host-addresses")
    let thread = Thread {
      defer { stopped.continuation.finish() }
      var failures = 0
      while !stop.isSet {
        do {
          // 100 ms: how long a stop may wait.
          switch try backend.hostAddressWatch.read(timeoutMilliseconds: 100) {
          case .changes(let changes):
            if !changes.isEmpty { try backend.applyHostAddressChanges(changes) }
          case .lost:
            logger.warning("address changes were lost; listing the node's addresses again")
            try backend.syncHostAddresses()
          }
          if failures > 0 {
            // What failed may have been a change: list everything once more.
            try backend.syncHostAddresses()
            controller.succeeded()
          }
          failures = 0
        } catch {
          failures += 1
          controller.failed(error)
          if failures == 1 || failures % 100 == 0 {
            logger.error("following the node's addresses failed", metadata: ["error": "\(error)"])
          }
          Thread.sleep(forTimeInterval: 0.2)
        }
      }
    }
    thread.name = "tessera-host-addresses"
    thread.start()
    await withGracefulShutdownHandler {
      for await _ in stopped.stream {}
    } onGracefulShutdown: {
      stop.set()
    }
    stop.set()
    for await _ in stopped.stream {}
  }
}
