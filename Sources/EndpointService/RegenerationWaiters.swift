import Synchronization

/// Parks callers until an endpoint's realised regeneration generation reaches
/// a value, the way Cilium's `WaitForPolicyRevision` waits on state, not time.
///
/// Waiters are resumed by ``resume(endpointID:realizedGeneration:)`` (push),
/// failed by ``fail(endpointID:error:)``, or time out at their deadline.
public final class RegenerationWaiters: Sendable {
  private struct Waiter {
    var minimumGeneration: UInt64
    var continuation: CheckedContinuation<Void, any Error>
  }

  private struct State {
    var realized: [UInt64: UInt64] = [:]
    /// The last failure of an endpoint whose regeneration has not succeeded since;
    /// a waiter arriving after the failure fails at once instead of at its deadline.
    var failures: [UInt64: EndpointError] = [:]
    var waiters: [UInt64: [Int: Waiter]] = [:]
    var nextToken = 0
  }

  private let state = Mutex(State())

  public init() {}

  /// Records a realised generation and resumes the waiters it satisfies.
  public func resume(endpointID: UInt64, realizedGeneration: UInt64) {
    let ready: [CheckedContinuation<Void, any Error>] = state.withLock { state in
      state.realized[endpointID] = max(state.realized[endpointID] ?? 0, realizedGeneration)
      state.failures[endpointID] = nil
      guard var waiting = state.waiters[endpointID] else { return [] }
      let done = waiting.filter { $0.value.minimumGeneration <= realizedGeneration }
      for token in done.keys { waiting[token] = nil }
      state.waiters[endpointID] = waiting.isEmpty ? nil : waiting
      return done.values.map(\.continuation)
    }
    for continuation in ready { continuation.resume() }
  }

  /// Fails every current waiter of the endpoint.
  public func fail(endpointID: UInt64, error: EndpointError) {
    let failed = state.withLock { state in
      state.failures[endpointID] = error
      return state.waiters.removeValue(forKey: endpointID) ?? [:]
    }
    for waiter in failed.values { waiter.continuation.resume(throwing: error) }
  }

  /// Forgets a deleted endpoint, failing its waiters.
  public func forget(endpointID: UInt64) {
    fail(
      endpointID: endpointID,
      error: EndpointError(code: .notFound, message: "endpoint \(endpointID) was deleted"))
    state.withLock { state in
      state.realized[endpointID] = nil
      state.failures[endpointID] = nil
    }
  }

  /// Returns once the endpoint's realised generation is at least `minimumGeneration`.
  ///
  /// - Throws: ``EndpointError`` `.deadlineExceeded` at the deadline or on
  ///   cancellation, or the error of a failed regeneration.
  public func wait(endpointID: UInt64, minimumGeneration: UInt64, deadline: ContinuousClock.Instant)
    async throws(EndpointError)
  {
    let registration: Result<Int?, EndpointError> = state.withLock { state in
      if (state.realized[endpointID] ?? 0) >= minimumGeneration { return .success(nil) }
      if let failure = state.failures[endpointID] { return .failure(failure) }
      state.nextToken += 1
      return .success(state.nextToken)
    }
    guard let token = try registration.get() else { return }
    let expire: @Sendable () -> Void = { [self] in
      let waiter = state.withLock { $0.waiters[endpointID]?.removeValue(forKey: token) }
      waiter?.continuation.resume(
        throwing: EndpointError(
          code: .deadlineExceeded,
          message: "endpoint \(endpointID) was not realised before the deadline"))
    }
    do {
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation {
              (continuation: CheckedContinuation<Void, any Error>) in
              // Checked again: a regeneration may have finished or failed since the registration.
              let outcome = self.state.withLock { state -> Result<Bool, EndpointError> in
                if (state.realized[endpointID] ?? 0) >= minimumGeneration { return .success(true) }
                if let failure = state.failures[endpointID] { return .failure(failure) }
                state.waiters[endpointID, default: [:]][token] = Waiter(
                  minimumGeneration: minimumGeneration, continuation: continuation)
                return .success(false)
              }
              switch outcome {
              case .success(true): continuation.resume()
              case .success(false): break
              case .failure(let failure): continuation.resume(throwing: failure)
              }
            }
          } onCancel: {
            expire()
          }
        }
        group.addTask {
          // Throws on cancellation (the waiter finished first), else expires the waiter and fails.
          try await Task.sleep(until: deadline, clock: .continuous)
          expire()
          throw EndpointError(
            code: .deadlineExceeded,
            message: "endpoint \(endpointID) was not realised before the deadline")
        }
        try await group.next()
        group.cancelAll()
      }
    } catch let error as EndpointError {
      throw error
    } catch {
      throw EndpointError(
        code: .deadlineExceeded, message: "waiting for endpoint \(endpointID) was cancelled")
    }
  }
}
