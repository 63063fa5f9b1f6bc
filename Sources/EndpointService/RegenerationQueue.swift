import Synchronization

/// Runs regenerations, at most one at a time per endpoint, coalescing
/// triggers: any number of triggers while a pass runs cause exactly one more pass.
public final class RegenerationQueue: Sendable {
  private enum Entry { case running(pendingAnotherPass: Bool) }

  private let entries = Mutex<[UInt64: Entry]>([:])
  private let work: @Sendable (UInt64) async -> Void

  /// - Parameter work: one regeneration pass for an endpoint.
  public init(work: @escaping @Sendable (UInt64) async -> Void) { self.work = work }

  public func trigger(_ endpointID: UInt64) {
    let start = entries.withLock { entries -> Bool in
      if entries[endpointID] != nil {
        entries[endpointID] = .running(pendingAnotherPass: true)
        return false
      }
      entries[endpointID] = .running(pendingAnotherPass: false)
      return true
    }
    if start {
      Task { await self.drain(endpointID) }
    }
  }

  /// Number of endpoints with a pass running or pending (for tests and status).
  public var activeCount: Int { entries.withLock { $0.count } }

  private func drain(_ endpointID: UInt64) async {
    while true {
      await work(endpointID)
      let again = entries.withLock { entries -> Bool in
        if case .running(true) = entries[endpointID] {
          entries[endpointID] = .running(pendingAnotherPass: false)
          return true
        }
        entries[endpointID] = nil
        return false
      }
      if !again { return }
    }
  }
}
