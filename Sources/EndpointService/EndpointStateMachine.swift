/// An endpoint's lifecycle state; the names are Cilium's (pkg/endpoint/state.go).
public enum EndpointState: String, Sendable, Codable, CaseIterable {
  case waitingForIdentity = "waiting-for-identity"
  case waitingToRegenerate = "waiting-to-regenerate"
  case regenerating
  case ready
  case disconnecting
  case disconnected
  case restoring
}

/// What happens to an endpoint.
public enum EndpointEvent: Sendable, Equatable {
  /// Labels changed: a new identity must be resolved.
  case labelsChanged
  /// The identity for the current label revision is set.
  case identityResolved
  /// Something the policy depends on changed (rules, selections, identity).
  case regenerationTriggered
  case regenerationStarted
  case regenerationFinished
  case regenerationFailed
  case deleteRequested
  case deleteFinished
  /// Loaded from the state directory after a restart.
  case restored(needsRegeneration: Bool)
}

/// What the owner of the state machine must do after a transition. Actions
/// run after the lock is released.
public enum EndpointAction: Sendable, Equatable {
  case none
  case allocateIdentity
  case regenerate
  case resumeWaiters
  case failWaiters
  case cleanUp
}

/// The endpoint state machine: `(state, event) -> (state, action)`, with every
/// illegal transition rejected rather than ignored. `EndpointManager.perform`
/// runs each action; a CreateEndpoint walks it from `waiting-for-identity` to
/// `ready`, its first pass run by the ``Regenerator``.
///
/// ```
/// waiting-for-identity ─identityResolved→ waiting-to-regenerate ─regenerationStarted→ regenerating
///        ↑                                         ↑                                      │
///   labelsChanged ← ready ←─regenerationFinished───┴──────── regenerationFailed ←─────────┘
/// any ─deleteRequested→ disconnecting ─deleteFinished→ disconnected
/// ```
public struct EndpointStateMachine: Sendable, Hashable, Codable {
  public private(set) var state: EndpointState

  public init(state: EndpointState = .waitingForIdentity) { self.state = state }

  /// Applies `event`, returning the action to run.
  ///
  /// - Throws: ``EndpointError`` `.illegalTransition`, leaving the state unchanged.
  public mutating func handle(_ event: EndpointEvent) throws(EndpointError) -> EndpointAction {
    switch (state, event) {
    case (.disconnecting, .deleteFinished):
      state = .disconnected
      return .cleanUp
    case (.disconnected, _), (.disconnecting, _):
      break
    case (_, .deleteRequested):
      state = .disconnecting
      return .failWaiters

    case (.waitingForIdentity, .labelsChanged), (.waitingToRegenerate, .labelsChanged),
      (.regenerating, .labelsChanged), (.ready, .labelsChanged), (.restoring, .labelsChanged):
      state = .waitingForIdentity
      return .allocateIdentity
    case (.waitingForIdentity, .identityResolved):
      state = .waitingToRegenerate
      return .regenerate

    case (.waitingToRegenerate, .regenerationTriggered), (.ready, .regenerationTriggered),
      (.regenerating, .regenerationTriggered), (.restoring, .regenerationTriggered):
      // While regenerating, the queue runs one more pass afterwards.
      if state != .regenerating { state = .waitingToRegenerate }
      return .regenerate
    case (.waitingForIdentity, .regenerationTriggered):
      // The identity resolution that is under way ends in a regeneration anyway.
      return .none
    case (.waitingToRegenerate, .regenerationStarted), (.ready, .regenerationStarted),
      (.restoring, .regenerationStarted):
      state = .regenerating
      return .none
    case (.regenerating, .regenerationFinished):
      state = .ready
      return .resumeWaiters
    case (.regenerating, .regenerationFailed):
      state = .waitingToRegenerate
      return .failWaiters
    case (.waitingForIdentity, .regenerationFinished):
      // A label change overtook the pass; the new identity brings its own regeneration.
      // What the pass realised stands: waiters up to it may go on.
      return .resumeWaiters
    case (.waitingForIdentity, .regenerationFailed):
      return .failWaiters

    case (.restoring, .restored(let needsRegeneration)):
      state = needsRegeneration ? .waitingToRegenerate : .ready
      return needsRegeneration ? .regenerate : .resumeWaiters
    default:
      break
    }
    throw EndpointError(
      code: .illegalTransition,
      message: "endpoint in state \(state.rawValue) cannot handle \(event)")
  }
}
