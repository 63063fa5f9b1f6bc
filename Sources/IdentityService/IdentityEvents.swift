import TesseraCore
import TesseraRuntime

/// A change to the set of identities, as watchers see it.
public enum IdentityEvent: Sendable, Equatable {
  case added([SecurityIdentity])
  case deleted([SecurityIdentity])
}

/// Fans identity changes out to `WatchIdentities` streams.
public typealias IdentityEvents = EventBroadcaster<IdentityEvent>
