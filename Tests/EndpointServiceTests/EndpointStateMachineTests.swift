import Synchronization
import Testing

@testable import EndpointService

@Suite("Endpoint state machine")
struct EndpointStateMachineTests {
  @Test(
    "legal transitions return their state and action",
    arguments: [
      (
        EndpointState.waitingForIdentity, EndpointEvent.identityResolved,
        EndpointState.waitingToRegenerate, EndpointAction.regenerate
      ),
      (.waitingToRegenerate, .regenerationStarted, .regenerating, .none),
      (.regenerating, .regenerationFinished, .ready, .resumeWaiters),
      (.regenerating, .regenerationFailed, .waitingToRegenerate, .failWaiters),
      (.ready, .labelsChanged, .waitingForIdentity, .allocateIdentity),
      (.ready, .regenerationTriggered, .waitingToRegenerate, .regenerate),
      (.regenerating, .regenerationTriggered, .regenerating, .regenerate),
      (.waitingForIdentity, .regenerationTriggered, .waitingForIdentity, .none),
      (.waitingForIdentity, .regenerationFinished, .waitingForIdentity, .resumeWaiters),
      (.waitingForIdentity, .regenerationFailed, .waitingForIdentity, .failWaiters),
      (.ready, .deleteRequested, .disconnecting, .failWaiters),
      (.waitingForIdentity, .deleteRequested, .disconnecting, .failWaiters),
      (.disconnecting, .deleteFinished, .disconnected, .cleanUp),
      (.restoring, .restored(needsRegeneration: false), .ready, .resumeWaiters),
      (.restoring, .restored(needsRegeneration: true), .waitingToRegenerate, .regenerate),
    ])
  func legal(from: EndpointState, event: EndpointEvent, to: EndpointState, action: EndpointAction)
    throws
  {
    var machine = EndpointStateMachine(state: from)
    #expect(try machine.handle(event) == action)
    #expect(machine.state == to)
  }

  @Test(
    "illegal transitions are rejected and change nothing",
    arguments: [
      (EndpointState.waitingForIdentity, EndpointEvent.regenerationStarted),
      (.ready, .identityResolved),
      (.ready, .regenerationFinished),
      (.disconnected, .labelsChanged),
      (.disconnecting, .regenerationStarted),
      (.disconnecting, .deleteRequested),
      (.ready, .restored(needsRegeneration: false)),
      (.waitingToRegenerate, .deleteFinished),
    ])
  func illegal(from: EndpointState, event: EndpointEvent) {
    var machine = EndpointStateMachine(state: from)
    #expect(throws: EndpointError.self) { try machine.handle(event) }
    #expect(machine.state == from)
  }
}

@Suite("Regeneration queue")
struct RegenerationQueueTests {
  @Test("triggers during a pass coalesce into exactly one more pass")
  func coalesces() async throws {
    let (started, startedContinuation) = AsyncStream<Int>.makeStream()
    let (release, releaseContinuation) = AsyncStream<Void>.makeStream()
    let passes = Counter()
    let queue = RegenerationQueue { _ in
      let n = passes.increment()
      startedContinuation.yield(n)
      if n == 1 { for await _ in release { break } }
    }
    queue.trigger(7)
    var iterator = started.makeAsyncIterator()
    #expect(await iterator.next() == 1)
    for _ in 0..<50 { queue.trigger(7) }
    releaseContinuation.yield()
    #expect(await iterator.next() == 2)
    while queue.activeCount > 0 { await Task.yield() }
    #expect(passes.value == 2)
  }
}

final class Counter: Sendable {
  private let count = Mutex(0)
  func increment() -> Int {
    count.withLock {
      $0 += 1
      return $0
    }
  }
  var value: Int { count.withLock { $0 } }
}
