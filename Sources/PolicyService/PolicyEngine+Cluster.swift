import TesseraCore

/// The repository as a cluster store feeds it (``ClusterPolicyRepository``):
/// whole reads and watched batches, each at the store's revision.
extension PolicyEngine {
  /// Makes the repository hold exactly `policies` at `revision`.
  ///
  /// - Returns: every identity (a reload may change anything), and the CIDR identities
  ///   the reload brought in or removed.
  func replaceAll(with policies: [(policy: ParsedPolicy, importedAt: UInt64)], revision: UInt64)
    -> (affected: AffectedIdentities, identities: IdentityChanges)
  {
    state.withLock { repository in
      let wanted = Set(policies.map { PolicyKey($0.policy.ref) })
      for key in repository.keys where !wanted.contains(key) {
        _ = repository.remove(key, revision: repository.revision)
      }
      for (policy, importedAt) in policies {
        _ = repository.replace([policy], revision: importedAt)
      }
      repository.advance(to: revision)
      return (.all, repository.takeIdentityChanges())
    }
  }

  /// Applies one committed batch: policies added or replaced, policies deleted.
  ///
  /// - Returns: the identities whose policy may have changed, and the CIDR identities the
  ///   batch brought in or removed.
  func apply(upserting: [ParsedPolicy], deleting: [PolicyKey], revision: UInt64)
    -> (affected: AffectedIdentities, identities: IdentityChanges)
  {
    state.withLock { repository in
      var affected = Set<NumericIdentity>()
      var everything = false
      func note(_ change: AffectedIdentities) {
        switch change {
        case .all: everything = true
        case .some(let identities): affected.formUnion(identities)
        }
      }
      if !upserting.isEmpty { note(repository.replace(upserting, revision: revision)) }
      for key in deleting { repository.remove(key, revision: revision).map(note) }
      repository.advance(to: revision)
      return (everything ? .all : .some(affected), repository.takeIdentityChanges())
    }
  }
}
