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
