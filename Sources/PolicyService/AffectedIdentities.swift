public import TesseraCore

/// The subject identities whose computed policy may have changed.
public enum AffectedIdentities: Sendable, Equatable {
  /// Every identity may be affected.
  case all
  /// Only these identities may be affected (possibly none).
  case some(Set<NumericIdentity>)

  public static let none = AffectedIdentities.some([])

  /// Both: every identity either may affect.
  public mutating func formUnion(_ other: AffectedIdentities) {
    switch (self, other) {
    case (.some(let mine), .some(let theirs)): self = .some(mine.union(theirs))
    default: self = .all
    }
  }

  /// Whether an endpoint with `identity` must recompute its policy.
  public func contains(_ identity: NumericIdentity) -> Bool {
    switch self {
    case .all: true
    case .some(let set): set.contains(identity)
    }
  }
}

/// Identities a change of the rules brought into the SelectorCache or removed from it: those
/// of the CIDRs the rules name (``CIDRIdentity``). Published in the change's own event, so a
/// node installs a CIDR's ipcache entry only after realising what that event triggered.
public struct IdentityChanges: Sendable, Equatable {
  public var added: [SecurityIdentity]
  public var deleted: [NumericIdentity]

  public init(added: [SecurityIdentity] = [], deleted: [NumericIdentity] = []) {
    self.added = added
    self.deleted = deleted
  }

  public static let none = IdentityChanges()

  /// This change, then `later`: an identity added and removed again in between is neither.
  public mutating func append(_ later: IdentityChanges) {
    let removedLater = Set(later.deleted)
    let addedHere = Set(added.map(\.id))
    added = added.filter { !removedLater.contains($0.id) } + later.added
    deleted += later.deleted.filter { !addedHere.contains($0) }
  }
}
