import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import TesseraRuntime

/// Moves events from the datapath into the ``FlowLog``, on a thread of its
/// own: reading the ring buffer blocks (epoll), which must not hold one of
/// the few threads Swift concurrency runs on.
public struct FlowEventPump: Service {
  let reader: any DatapathEventReader
  let log: FlowLog
  let logger: Logger

  public init(reader: any DatapathEventReader, log: FlowLog, logger: Logger) {
    self.reader = reader
    self.log = log
    self.logger = logger
  }

  public func run() async throws {
    let stop = StopFlag()
    let stopped = AsyncStream<Void>.makeStream()
    let (reader, log, logger) = (reader, log, logger)
    log.markSupported()
    let controller = Controller("datapath-events")
    let thread = Thread {
      defer { stopped.continuation.finish() }
      var failures = 0
      while !stop.isSet {
        do {
          // 100 ms: how long an event may wait (the programs wake the reader only for a
          // batch) and how long a stop may wait.
          log.record(try reader.read(timeoutMilliseconds: 100))
          if failures > 0 { controller.succeeded() }
          failures = 0
        } catch {
          failures += 1
          controller.failed(error)
          if failures == 1 || failures % 100 == 0 {
            logger.error("reading datapath events failed", metadata: ["error": "\(error)"])
          }
          Thread.sleep(forTimeInterval: 0.2)
        }
      }
    }
    thread.name = "tessera-flow-events"
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

/// Tells a background thread (the pump's, the host address watch's) to end.
final class StopFlag: Sendable {
  private let value = Atomic<Bool>(false)
  var isSet: Bool { value.load(ordering: .relaxed) }
  func set() { value.store(true, ordering: .relaxed) }
}
