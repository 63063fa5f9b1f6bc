public import Logging
import Synchronization
public import TesseraCore

/// The policy service's domain: the rule repository with its revision, the SelectorCache,
/// and per-identity policy computation.
///
/// All state sits behind one lock. Manifests are parsed before the lock is taken; under the
/// lock each call is a short synchronous transition (plus, with a database, one SQLite
/// transaction, so the stored and in-memory revisions never disagree). Nothing awaits under
/// the lock.
///
/// ```
///  importPolicies ─┐                      ┌─▶ affected identities (rule subjects)
///  deletePolicy   ─┼─▶ PolicyRepository ──┤
///  updateIdentities┘   └─ SelectorCache ──┴─▶ affected identities (peer selections)
///  computePolicy ────▶ EndpointPolicy (entries + revision)
/// ```
public final class PolicyEngine: Sendable {
  let state: Mutex<PolicyRepository>
  private let database: PolicyDatabase?
  private let logger: Logger

  /// Opens the repository.
  ///
  /// - Parameters:
  ///   - database: where policies and the revision persist; nil keeps everything in memory.
  ///     Stored policies are reloaded and the stored revision resumes (1 for a new database).
  ///   - localhostIngress: whether the node reaches its pods whatever their ingress rules.
  ///   - logger: where the engine logs.
  /// - Throws: ``PolicyError`` (`storage`) when the database cannot be read or holds a
  ///   policy that no longer parses.
  public init(
    database: PolicyDatabase?, localhostIngress: LocalhostIngress = .always,
    logger: Logger = Logger(label: "tessera.policy")
  ) throws(PolicyError) {
    self.database = database
    self.logger = logger
    guard let database else {
      self.state = Mutex(PolicyRepository(revision: 1, localhostIngress: localhostIngress))
      return
    }
    let (revision, records) = try database.load()
    var repository = PolicyRepository(revision: revision, localhostIngress: localhostIngress)
    for record in records {
      do {
        let parsed = try PolicyManifest.parseStored(record.sourceJSON)
        repository.restore(parsed, importedAt: UInt64(record.revision))
      } catch {
        throw PolicyError(
          code: .storage,
          message:
            "stored policy \(record.namespace.isEmpty ? "" : record.namespace + "/")\(record.name) cannot be read: "
            + (error.path.isEmpty ? error.problem : "\(error.path): \(error.problem)"))
      }
    }
    _ = repository.takeIdentityChanges()
    self.state = Mutex(repository)
    logger.info(
      "policy repository loaded",
      metadata: ["policy.revision": "\(revision)", "policy.count": "\(records.count)"])
  }

  /// The current repository revision (1 before the first import).
  public var revision: UInt64 { state.withLock { $0.revision } }

  /// Imports every policy in a manifest, all or nothing.
  ///
  /// Policies replace existing ones with the same namespace and name. The revision goes up
  /// by one for the whole import.
  ///
  /// - Parameters:
  ///   - sourceName: the file name used in error messages.
  ///   - content: YAML or JSON, one or more documents.
  /// - Returns: the new revision, the imported policies in document order, and the identities
  ///   whose policy may have changed (those selected by an old or new rule's subject).
  /// - Throws: ``PolicyError`` (`invalidManifest`) naming file, document and field; nothing
  ///   is imported. `storage` when the database write fails; nothing changes.
  public func importPolicies(sourceName: String, content: [UInt8]) throws(PolicyError) -> (
    revision: UInt64, policies: [PolicyRef], affected: AffectedIdentities,
    identities: IdentityChanges
  ) {
    let parsed = try PolicyManifest.parse(sourceName: sourceName, content: content)
    let database = self.database
    let result = try state.withLock {
      (repository) throws(PolicyError) -> (UInt64, AffectedIdentities, IdentityChanges) in
      try Self.checkCIDRs(of: parsed, against: repository, sourceName: sourceName)
      let next = repository.revision + 1
      try database?.commit(
        revision: next,
        upserting: parsed.map {
          PolicyRecord(
            namespace: $0.ref.namespace, name: $0.ref.name, kind: $0.ref.kind,
            revision: Int64(next),
            sourceJSON: $0.sourceJSON, ruleCount: $0.rules.count)
        },
        deleting: [])
      let affected = repository.replace(parsed, revision: next)
      return (next, affected, repository.takeIdentityChanges())
    }
    logger.info(
      "policies imported",
      metadata: [
        "policy.revision": "\(result.0)", "policy.source": "\(sourceName)",
        "policy.names": "\(parsed.map(\.ref.description).joined(separator: ","))",
      ])
    return (result.0, parsed.map(\.ref), result.1, result.2)
  }

  /// Refuses a manifest naming a CIDR whose identity number another named CIDR holds
  /// (``CIDRIdentity``: numbers come from the prefix alone).
  static func checkCIDRs(
    of parsed: [ParsedPolicy], against repository: PolicyRepository, sourceName: String
  ) throws(PolicyError) {
    let named = Set(parsed.flatMap(\.rules).flatMap(\.namedPrefixes))
    guard let (prefix, holder) = repository.cidrCollision(naming: named) else { return }
    throw PolicyError(
      code: .invalidManifest,
      message:
        "\(sourceName): CIDR \(prefix) cannot be used: its identity (\(CIDRIdentity.number(for: prefix))) is that of \(holder), which a policy already names; name a prefix one bit shorter or longer, or write the addresses as two prefixes"
    )
  }

  /// Refuses a manifest naming a CIDR whose identity number another named CIDR holds.
  func checkCIDRs(of parsed: [ParsedPolicy], sourceName: String) throws(PolicyError) {
    try state.withLock { (repository) throws(PolicyError) in
      try Self.checkCIDRs(of: parsed, against: repository, sourceName: sourceName)
    }
  }

  /// Deletes one policy; the revision goes up by one.
  ///
  /// - Parameter namespace: empty for a cluster-wide policy.
  /// - Returns: the new revision and the identities the policy's rules applied to.
  /// - Throws: ``PolicyError`` (`notFound`) when there is no such policy, `storage` when the
  ///   database write fails.
  public func deletePolicy(namespace: String, name: String) throws(PolicyError) -> (
    revision: UInt64, affected: AffectedIdentities
  ) {
    let result = try deletePolicies(.named(namespace: namespace, name: name))
    return (result.revision, result.affected)
  }

  /// Deletes every policy `deletion` selects, all or nothing, in one revision.
  ///
  /// - Returns: the new revision (the current one when nothing matched), the deleted
  ///   policies, and the identities their rules applied to.
  /// - Throws: ``PolicyError`` (`notFound`) when a named policy does not exist, `storage`
  ///   when the database write fails (nothing is deleted).
  public func deletePolicies(_ deletion: PolicyDeletion) throws(PolicyError) -> (
    revision: UInt64, deleted: [PolicyRef], affected: AffectedIdentities,
    identities: IdentityChanges
  ) {
    let database = self.database
    let result = try state.withLock {
      (repository) throws(PolicyError) -> (UInt64, [PolicyRef], AffectedIdentities, IdentityChanges)
      in
      let (revision, deleted, affected) = try repository.delete(
        selectedBy: deletion, database: database)
      return (revision, deleted, affected, repository.takeIdentityChanges())
    }
    guard !result.1.isEmpty else {
      if case .named(let namespace, let name) = deletion {
        let shown = namespace.isEmpty ? name : "\(namespace)/\(name)"
        throw PolicyError(code: .notFound, message: "policy \(shown) not found")
      }
      return result
    }
    logger.info(
      "policies deleted",
      metadata: [
        "policy.revision": "\(result.0)",
        "policy.names": "\(result.1.map(\.description).joined(separator: ","))",
      ])
    return result
  }

  /// The policies `deletion` would delete now.
  public func policies(selectedBy deletion: PolicyDeletion) -> [PolicyRef] {
    state.withLock { repository in
      repository.storedPolicies().filter { deletion.selects($0) }.map(\.ref)
    }
  }

  /// One policy by namespace (empty for cluster-wide) and name.
  public func policy(namespace: String, name: String) -> StoredPolicy? {
    state.withLock { $0.policy(PolicyKey(namespace: namespace, name: name)) }
  }

  /// Every policy, sorted by namespace and name.
  public func policies() -> [StoredPolicy] {
    state.withLock { $0.storedPolicies() }
  }

  /// Pushes identity additions and deletions into the SelectorCache. Idempotent; the
  /// reserved identities are always present and cannot be deleted.
  ///
  /// - Returns: how many selectors' selections changed, and the identities whose policy may
  ///   have changed: subjects of rules whose peer selections changed, plus added identities
  ///   that some rule applies to.
  public func updateIdentities(added: [SecurityIdentity], deleted: [NumericIdentity]) -> (
    selectorsChanged: Int, affected: AffectedIdentities
  ) {
    state.withLock { $0.updateIdentities(added: added, deleted: deleted) }
  }

  /// Whether some CIDR identity no rule names any more is not retired yet.
  public var hasUnnamedCIDRIdentities: Bool { state.withLock { $0.hasUnnamedCIDRIdentities } }

  /// Retires the identities of CIDRs no rule names any more (``CIDRIdentityCollector``
  /// announces them in an event of their own; nodes unmap their prefixes).
  public func retireUnnamedCIDRIdentities() -> [NumericIdentity] {
    state.withLock { $0.retireUnnamedCIDRIdentities() }
  }

  /// Removes from the SelectorCache those of `identities` still retired.
  ///
  /// - Returns: the subjects whose policy the removal changes, and the identities removed.
  public func removeRetiredCIDRIdentities(_ identities: Set<NumericIdentity>) -> (
    affected: AffectedIdentities, identities: IdentityChanges
  ) {
    state.withLock { repository in
      let affected = repository.removeRetiredCIDRIdentities(identities)
      return (affected, repository.takeIdentityChanges())
    }
  }

  /// The identities of the CIDRs the rules name (``CIDRIdentity``), sorted by prefix: those a
  /// node maps (not the retired ones).
  public func cidrIdentities() -> [SecurityIdentity] {
    state.withLock { repository in
      repository.cidrIdentities.keys.filter { !repository.retiredCIDRs.contains($0) }.sorted()
        .map(CIDRIdentity.identity(for:))
    }
  }

  /// Every identity the SelectorCache holds that the identity service allocated (not
  /// reserved, not a CIDR's: the rules own those).
  public func allocatedIdentities() -> Set<NumericIdentity> {
    state.withLock {
      Set($0.cache.identities.filter(\.isAllocated))
    }
  }

  /// Those of `identities` the SelectorCache does not hold (never a reserved identity).
  public func unknownIdentities(among identities: some Sequence<NumericIdentity>) -> Set<
    NumericIdentity
  > {
    state.withLock { repository in Set(identities.filter { repository.cache.labels(of: $0) == nil })
    }
  }

  /// The desired policy of an endpoint with this identity and labels, at the current
  /// repository revision. The subject need not be in the SelectorCache; its peers must be.
  public func computePolicy(for subject: SecurityIdentity) -> EndpointPolicy {
    state.withLock { $0.computePolicy(for: subject) }
  }

  /// Every cached selector with the identities it selects and its number of users, sorted
  /// by selector text.
  public func selectors() -> [SelectorSnapshot] {
    state.withLock { $0.selectors() }
  }
}
