import TesseraCore

/// The rules, their revision and the SelectorCache they use: the state the
/// ``PolicyEngine`` keeps behind its lock. Every method is a synchronous transition on
/// that state; none does I/O.
struct PolicyRepository {
  /// A peer with its cached selector resolved.
  enum ResolvedPeer {
    case all
    case cached(CachedSelector)
  }

  struct ResolvedRule {
    var id: UInt64
    /// The policy the rule came from, and its place among that policy's rules.
    var ref: PolicyRef
    var index: Int
    var rule: PolicyRule
    var subject: CachedSelector
    var sections: [(section: PolicySection, peers: [ResolvedPeer])]
  }

  struct Entry {
    var stored: StoredPolicy
    var ruleIDs: [UInt64]
  }

  private(set) var revision: UInt64
  let localhostIngress: LocalhostIngress
  private(set) var cache = SelectorCache()
  private var policies: [PolicyKey: Entry] = [:]
  private var rules: [UInt64: ResolvedRule] = [:]
  /// Cached selector id → rules using it as a peer.
  private var peerUsers: [UInt64: Set<UInt64>] = [:]
  /// Cached selector id → rules using it as their subject.
  private var subjectUsers: [UInt64: Set<UInt64>] = [:]
  private var nextRuleID: UInt64 = 1
  /// CIDRs the rules' peers name → how many rules name each.
  private var namedPrefixes: [IPPrefix: Int] = [:]
  /// The CIDR identities in the SelectorCache, by prefix.
  private(set) var cidrIdentities: [IPPrefix: NumericIdentity] = [:]
  /// Those of them no rule names any more, announced as retired (nodes unmap them); they
  /// leave the SelectorCache later (``removeRetiredCIDRIdentities(_:)``).
  private(set) var retiredCIDRs: Set<IPPrefix> = []
  /// CIDR identities added or removed since the last ``takeIdentityChanges()``.
  private var identityChanges = IdentityChanges.none

  /// An empty repository at `revision`, with the reserved identities in its SelectorCache.
  init(revision: UInt64, localhostIngress: LocalhostIngress = .always) {
    self.revision = revision
    self.localhostIngress = localhostIngress
    _ = cache.updateIdentities(
      added: ReservedIdentity.allCases.map { SecurityIdentity(id: $0.identity, labels: $0.labels) },
      deleted: [])
  }

  // MARK: Policies

  func policy(_ key: PolicyKey) -> StoredPolicy? { policies[key]?.stored }

  /// Every policy, sorted by namespace and name.
  func storedPolicies() -> [StoredPolicy] {
    policies.sorted { $0.key < $1.key }.map(\.value.stored)
  }

  var ruleCount: Int { rules.count }

  /// Adds or replaces `parsed` (by namespace and name) and moves to `revision`.
  ///
  /// - Returns: the identities selected by the subject of any old or new rule.
  mutating func replace(_ parsed: [ParsedPolicy], revision: UInt64) -> AffectedIdentities {
    var affected = Set<NumericIdentity>()
    var everything = false
    for policy in parsed {
      let key = PolicyKey(policy.ref)
      let old = policies[key]
      // Add before removing, so selectors the old and new rules share stay cached.
      var ruleIDs: [UInt64] = []
      for (index, rule) in policy.rules.enumerated() {
        let resolved = addRule(rule, from: policy.ref, index: index)
        ruleIDs.append(resolved.id)
        collect(resolved, into: &affected, everything: &everything)
      }
      for ruleID in old?.ruleIDs ?? [] {
        if let resolved = rules[ruleID] {
          collect(resolved, into: &affected, everything: &everything)
        }
        removeRule(ruleID)
      }
      let stored = StoredPolicy(
        ref: policy.ref, revision: revision, sourceJSON: policy.sourceJSON,
        ruleCount: policy.rules.count)
      policies[key] = Entry(stored: stored, ruleIDs: ruleIDs)
    }
    self.revision = revision
    var result: AffectedIdentities = everything ? .all : .some(affected)
    result.formUnion(syncCIDRIdentities())
    return result
  }

  /// Puts back a policy read from the database, at the revision it was imported at,
  /// without changing the repository revision.
  mutating func restore(_ policy: ParsedPolicy, importedAt policyRevision: UInt64) {
    let ruleIDs = policy.rules.enumerated().map {
      addRule($0.element, from: policy.ref, index: $0.offset).id
    }
    let stored = StoredPolicy(
      ref: policy.ref, revision: policyRevision, sourceJSON: policy.sourceJSON,
      ruleCount: policy.rules.count)
    policies[PolicyKey(policy.ref)] = Entry(stored: stored, ruleIDs: ruleIDs)
    _ = syncCIDRIdentities()
  }

  /// Moves to `revision` without a change of its own (a cluster store's read).
  mutating func advance(to revision: UInt64) { self.revision = max(self.revision, revision) }

  /// The keys of every policy.
  var keys: [PolicyKey] { Array(policies.keys) }

  /// Removes a policy and moves to `revision`.
  ///
  /// - Returns: the identities its rules' subjects selected, or nil (and no change) when
  ///   there is no such policy.
  /// Removes every policy `deletion` selects in one revision, written to `database`
  /// first (nothing changes when that fails). Nothing selected: the current revision, no
  /// policies, no identities.
  mutating func delete(selectedBy deletion: PolicyDeletion, database: PolicyDatabase?)
    throws(PolicyError) -> (UInt64, [PolicyRef], AffectedIdentities)
  {
    var doomed: [PolicyRef] = []
    for stored in storedPolicies() where deletion.selects(stored) { doomed.append(stored.ref) }
    guard !doomed.isEmpty else { return (revision, [], .none) }
    let next = revision + 1
    try database?.commit(revision: next, upserting: [], deleting: doomed.map(PolicyKey.init))
    var affected = AffectedIdentities.none
    for ref in doomed {
      if let removed = remove(PolicyKey(ref), revision: next) { affected.formUnion(removed) }
    }
    return (next, doomed, affected)
  }

  mutating func remove(_ key: PolicyKey, revision: UInt64) -> AffectedIdentities? {
    guard let entry = policies.removeValue(forKey: key) else { return nil }
    var affected = Set<NumericIdentity>()
    var everything = false
    for ruleID in entry.ruleIDs {
      if let resolved = rules[ruleID] {
        collect(resolved, into: &affected, everything: &everything)
      }
      removeRule(ruleID)
    }
    self.revision = revision
    var result: AffectedIdentities = everything ? .all : .some(affected)
    result.formUnion(syncCIDRIdentities())
    return result
  }

  private func collect(
    _ rule: ResolvedRule, into affected: inout Set<NumericIdentity>, everything: inout Bool
  ) {
    if rule.rule.subject.isWildcard {
      everything = true
    } else {
      affected.formUnion(cache.selections(of: rule.subject))
    }
  }

  private mutating func addRule(_ rule: PolicyRule, from ref: PolicyRef, index: Int)
    -> ResolvedRule
  {
    let id = nextRuleID
    nextRuleID += 1
    let user = SelectorUser(id)
    let subject = cache.addSelector(rule.subject, user: user)
    subjectUsers[subject.id, default: []].insert(id)
    var sections: [(section: PolicySection, peers: [ResolvedPeer])] = []
    for section in rule.sections {
      var peers: [ResolvedPeer] = []
      for peer in section.peers {
        switch peer {
        case .all:
          peers.append(.all)
        case .selector(let selector):
          let cached = cache.addSelector(selector, user: user)
          peerUsers[cached.id, default: []].insert(id)
          peers.append(.cached(cached))
        }
      }
      sections.append((section, peers))
    }
    let resolved = ResolvedRule(
      id: id, ref: ref, index: index, rule: rule, subject: subject, sections: sections)
    rules[id] = resolved
    for prefix in rule.namedPrefixes { namedPrefixes[prefix, default: 0] += 1 }
    return resolved
  }

  private mutating func removeRule(_ id: UInt64) {
    guard let resolved = rules.removeValue(forKey: id) else { return }
    for prefix in resolved.rule.namedPrefixes {
      namedPrefixes[prefix, default: 1] -= 1
      if namedPrefixes[prefix] == 0 { namedPrefixes[prefix] = nil }
    }
    let user = SelectorUser(id)
    cache.removeSelector(resolved.subject, user: user)
    Self.remove(id, from: &subjectUsers, at: resolved.subject.id)
    for (_, peers) in resolved.sections {
      for case .cached(let cached) in peers {
        cache.removeSelector(cached, user: user)
        Self.remove(id, from: &peerUsers, at: cached.id)
      }
    }
  }

  private static func remove(
    _ ruleID: UInt64, from users: inout [UInt64: Set<UInt64>], at selectorID: UInt64
  ) {
    users[selectorID]?.remove(ruleID)
    if users[selectorID]?.isEmpty == true { users[selectorID] = nil }
  }

  // MARK: CIDR identities

  /// Adds the identities of CIDRs the rules now name, after the rules themselves changed (so
  /// the new rules' selectors see them arrive); a retired one named again arrives again
  /// (nodes had unmapped it). The identities of CIDRs no rule names any more stay until
  /// ``retireUnnamedCIDRIdentities()``: in the change that stops naming a prefix, its
  /// addresses must keep the identity the nodes' maps still judge by.
  ///
  /// - Returns: the subjects whose policy the identities' arrival changes.
  private mutating func syncCIDRIdentities() -> AffectedIdentities {
    var taken = Dictionary(uniqueKeysWithValues: cidrIdentities.map { ($0.value, $0.key) })
    var added: [SecurityIdentity] = []
    var returning: [SecurityIdentity] = []
    for prefix in namedPrefixes.keys.sorted() {
      if cidrIdentities[prefix] != nil {
        if retiredCIDRs.remove(prefix) != nil {
          returning.append(CIDRIdentity.identity(for: prefix))
        }
        continue
      }
      let identity = CIDRIdentity.identity(for: prefix)
      // Imports refuse a prefix whose number another one holds (cidrCollision); this only
      // keeps the other's identity intact should a store hold such rules anyway.
      guard taken[identity.id] == nil else { continue }
      taken[identity.id] = prefix
      cidrIdentities[prefix] = identity.id
      added.append(identity)
    }
    guard !added.isEmpty || !returning.isEmpty else { return .none }
    identityChanges.append(IdentityChanges(added: added + returning))
    return added.isEmpty ? .none : applyIdentityChanges(added: added, deleted: []).affected
  }

  /// Whether some CIDR identity no rule names is not retired yet.
  var hasUnnamedCIDRIdentities: Bool {
    cidrIdentities.keys.contains { namedPrefixes[$0] == nil && !retiredCIDRs.contains($0) }
  }

  /// Retires the identities of CIDRs no rule names any more, as a change of its own (its
  /// event comes after the one that stopped naming them): nodes unmap their prefixes. Such
  /// an identity is selected by exactly the selectors that select the next enclosing named
  /// prefix's (or its family's world), since no selector names the prefix, so unmapping it
  /// changes no verdict; it stays in the SelectorCache, so policies computed meanwhile
  /// still hold its entries.
  ///
  /// - Returns: the identities retired.
  mutating func retireUnnamedCIDRIdentities() -> [NumericIdentity] {
    let unnamed = cidrIdentities.filter {
      namedPrefixes[$0.key] == nil && !retiredCIDRs.contains($0.key)
    }
    retiredCIDRs.formUnion(unnamed.keys)
    return unnamed.values.sorted()
  }

  /// Removes from the SelectorCache those of `identities` still retired (a rule may have
  /// named one again meanwhile), long after their retirement: by then every node unmapped them.
  ///
  /// - Returns: the subjects whose policy the removal changes.
  mutating func removeRetiredCIDRIdentities(_ identities: Set<NumericIdentity>)
    -> AffectedIdentities
  {
    let gone = cidrIdentities.filter {
      identities.contains($0.value) && retiredCIDRs.contains($0.key)
    }.keys.sorted()
    guard !gone.isEmpty else { return .none }
    let deleted = gone.map { cidrIdentities.removeValue(forKey: $0)! }
    retiredCIDRs.subtract(gone)
    identityChanges.append(IdentityChanges(deleted: deleted))
    return applyIdentityChanges(added: [], deleted: deleted).affected
  }

  /// The CIDR identities added or removed since the last call, for the change's event.
  mutating func takeIdentityChanges() -> IdentityChanges {
    defer { identityChanges = .none }
    return identityChanges
  }

  /// A prefix among `prefixes` whose identity number another prefix holds or would hold
  /// (one named already, or another of `prefixes`), with that other prefix.
  func cidrCollision(naming prefixes: Set<IPPrefix>) -> (IPPrefix, IPPrefix)? {
    var holders = Dictionary(uniqueKeysWithValues: cidrIdentities.map { ($0.value, $0.key) })
    for prefix in prefixes.sorted() where cidrIdentities[prefix] == nil {
      let number = CIDRIdentity.number(for: prefix)
      if let holder = holders[number] { return (prefix, holder) }
      holders[number] = prefix
    }
    return nil
  }

  // MARK: Identities

  /// Applies identity additions and deletions to the SelectorCache. Deleting a reserved
  /// identity is ignored: they always exist.
  ///
  /// - Returns: how many selectors' selections changed, and the subject identities whose
  ///   policy may have changed.
  mutating func updateIdentities(added: [SecurityIdentity], deleted: [NumericIdentity]) -> (
    selectorsChanged: Int, affected: AffectedIdentities
  ) {
    // The identity service allocates neither reserved nor CIDR identities (the rules own
    // those): an update naming one changes nothing of it.
    applyIdentityChanges(
      added: added.filter { !CIDRIdentity.isCIDR($0.id) },
      deleted: deleted.filter { !CIDRIdentity.isCIDR($0) })
  }

  private mutating func applyIdentityChanges(
    added: [SecurityIdentity], deleted: [NumericIdentity]
  ) -> (selectorsChanged: Int, affected: AffectedIdentities) {
    let deletable = deleted.filter { ReservedIdentity(rawValue: $0.rawValue) == nil }
    let changes = cache.updateIdentities(added: added, deleted: deletable)
    var affected = Set<NumericIdentity>()
    var everything = false
    for change in changes {
      identitySelectionUpdated(
        selector: change.selector, added: change.added, deleted: change.deleted,
        affected: &affected, everything: &everything)
    }
    return (changes.count, everything ? .all : .some(affected))
  }

  /// The SelectorCache user callback: a selector's selection changed. Rules using it as a
  /// peer change the policy of their subjects; rules using it as their subject now apply to
  /// the added identities and no longer to the deleted ones.
  private func identitySelectionUpdated(
    selector: CachedSelector, added: [NumericIdentity], deleted: [NumericIdentity],
    affected: inout Set<NumericIdentity>, everything: inout Bool
  ) {
    for ruleID in peerUsers[selector.id] ?? [] {
      if let rule = rules[ruleID] { collect(rule, into: &affected, everything: &everything) }
    }
    if subjectUsers[selector.id] != nil {
      affected.formUnion(added)
      // A deleted identity that still exists changed labels; one that is gone has no endpoints.
      affected.formUnion(deleted.filter { cache.labels(of: $0) != nil })
    }
  }

  // MARK: Policy computation

  /// The node reaching its own pods, on any protocol and port.
  static let nodeIngress = PolicyEntry(
    peer: .host, direction: .ingress, proto: .any, ports: .any
  ).key

  /// Whether ``nodeIngress`` is admitted in `direction` of an endpoint whose rules enforce
  /// it or not (``LocalhostIngress``).
  private func admitsNode(_ direction: TrafficDirection, enforced: Bool) -> Bool {
    direction == .ingress && enforced && localhostIngress == .always
  }

  /// How one direction of one flow is decided for `subject`, rule by rule: the
  /// sections that match `peer` on `proto`/`port` and the rules that enforce the
  /// direction. The same rules as ``computePolicy(for:)``, kept with where they came from.
  ///
  /// Named ports resolve on the destination, as the node resolves them: a named section
  /// matches when `destinationPorts` (the destination pod's) has the name on `port`; the
  /// subject is the destination for ingress and the source for egress.
  func trace(
    subject: SecurityIdentity, direction: TrafficDirection, peer: NumericIdentity,
    proto: L4Protocol, port: UInt16, destinationPorts: [NamedPort] = []
  ) -> PolicyTrace.Direction {
    var trace = PolicyTrace.Direction(direction: direction, subject: subject.id)
    for resolved in rules.values.sorted(by: { ($0.ref, $0.index) < ($1.ref, $1.index) })
    where resolved.rule.subject.matches(subject.labels) {
      if resolved.rule.enforces(direction) {
        trace.enforcedBy.append(.init(policy: resolved.ref, rule: resolved.index))
      }
      for (number, (section, peers)) in resolved.sections.enumerated()
      where section.direction == direction {
        let peerMatches = peers.contains { resolvedPeer in
          switch resolvedPeer {
          case .all: true
          case .cached(let cached): cache.selections(of: cached).contains(peer)
          }
        }
        let portMatches = section.ports.contains { sectionPort in
          if let name = sectionPort.name {
            return destinationPorts.contains {
              $0.name == name && $0.proto == proto && $0.port == port
                && (sectionPort.proto == .any || sectionPort.proto == proto)
            }
          }
          return PolicyEntry(
            peer: .unknown, direction: direction, proto: sectionPort.proto,
            ports: sectionPort.ports
          ).matches(peer: peer, direction: direction, proto: proto, port: port)
        }
        guard peerMatches && portMatches else { continue }
        trace.matches.append(
          .init(
            policy: resolved.ref, rule: resolved.index, section: number, verdict: section.verdict))
      }
    }
    trace.nodeAdmitted = peer == .host && admitsNode(direction, enforced: !trace.enforcedBy.isEmpty)
    // What the node realises: the rows resolved through the destination's ports.
    let ports = Set(destinationPorts)
    trace.computed = computePolicy(for: subject).resolvingNamedPorts(
      own: direction == .ingress ? destinationPorts : []
    ) { direction == .egress ? [peer: ports] : [:] }
    .verdict(peer: peer, direction: direction, proto: proto, port: port)
    return trace
  }

  /// The policy of an endpoint with `subject`'s identity and labels, at the current revision.
  ///
  /// Every rule whose subject selector matches the labels contributes: a rule with an
  /// ingress (egress) section makes the direction default-deny (unless it opts out with
  /// `enableDefaultDeny`); each section adds an entry per peer identity and port. A key that
  /// is both allowed and denied keeps only the deny, and an allow entirely covered by a deny
  /// (same or wildcard peer, same or any protocol, enclosing ports) is dropped, since the
  /// deny decides those packets anyway. A section's named port becomes a ``NamedPortEntry``
  /// (a row both allowed and denied keeps the deny), which the node resolves.
  ///
  /// With ``LocalhostIngress/always`` an endpoint whose ingress is enforced also admits the
  /// node (``nodeIngress``); a deny naming `host` still wins.
  func computePolicy(for subject: SecurityIdentity) -> EndpointPolicy {
    var ingressEnforced = false
    var egressEnforced = false
    var verdicts: [PolicyEntry.Key: PolicyVerdict] = [:]
    var namedVerdicts: [NamedRow: PolicyVerdict] = [:]
    // The rules whose subject selects these labels, through the SelectorCache's label
    // index (every subject is a cached selector) instead of matching every rule.
    var ruleIDs: Set<UInt64> = []
    for selector in cache.selectors(selecting: subject.labels) {
      ruleIDs.formUnion(subjectUsers[selector.id] ?? [])
    }
    for id in ruleIDs {
      guard let resolved = rules[id] else { continue }
      ingressEnforced = ingressEnforced || resolved.rule.enforcesIngress
      egressEnforced = egressEnforced || resolved.rule.enforcesEgress
      for (section, peers) in resolved.sections {
        for peer in peers {
          let identities: [NumericIdentity]
          switch peer {
          case .all: identities = [.unknown]
          case .cached(let cached): identities = cache.selections(of: cached)
          }
          for identity in identities {
            for port in section.ports {
              if let name = port.name {
                let row = NamedRow(
                  peer: identity, direction: section.direction, proto: port.proto, name: name)
                namedVerdicts.record(section.verdict, for: row)
                continue
              }
              let key = PolicyEntry(
                peer: identity, direction: section.direction, proto: port.proto, ports: port.ports
              ).key
              verdicts.record(section.verdict, for: key)
            }
          }
        }
      }
    }

    if admitsNode(.ingress, enforced: ingressEnforced) {
      verdicts.record(.allow, for: Self.nodeIngress)
    }

    var denies: [DenyScope: [PolicyEntry.Key]] = [:]
    for (key, verdict) in verdicts where verdict == .deny {
      denies[DenyScope(direction: key.direction, peer: key.peer), default: []].append(key)
    }
    var entries: [PolicyEntry] = []
    entries.reserveCapacity(verdicts.count)
    for (key, verdict) in verdicts {
      if verdict == .allow && Self.isCovered(key, by: denies) { continue }
      entries.append(
        PolicyEntry(
          peer: key.peer, direction: key.direction, proto: key.proto, ports: key.ports,
          verdict: verdict))
    }
    entries.sort()
    let namedPortEntries = namedVerdicts.map { row, verdict in
      NamedPortEntry(
        peer: row.peer, direction: row.direction, proto: row.proto, portName: row.name,
        verdict: verdict)
    }
    return EndpointPolicy(
      revision: revision, ingressEnforced: ingressEnforced, egressEnforced: egressEnforced,
      entries: entries, namedPortEntries: namedPortEntries.sorted())
  }

  /// A named-port row without its verdict: what an allow and a deny can share.
  private struct NamedRow: Hashable {
    var peer: NumericIdentity
    var direction: TrafficDirection
    var proto: L4Protocol
    var name: String
  }

  private struct DenyScope: Hashable {
    var direction: TrafficDirection
    var peer: NumericIdentity
  }

  private static func isCovered(_ allow: PolicyEntry.Key, by denies: [DenyScope: [PolicyEntry.Key]])
    -> Bool
  {
    let scopes = [
      DenyScope(direction: allow.direction, peer: allow.peer),
      DenyScope(direction: allow.direction, peer: .unknown),
    ]
    for scope in scopes {
      for deny in denies[scope] ?? [] {
        // An any-protocol deny sees ICMP as portless (PolicyEntry.matches).
        let covered =
          deny.proto == .any && allow.proto.isICMP
          ? deny.ports.first == 0
          : (deny.proto == .any || deny.proto == allow.proto)
            && deny.ports.first <= allow.ports.first && deny.ports.last >= allow.ports.last
        if covered {
          return true
        }
      }
    }
    return false
  }

  /// Every selector with its selection and users.
  func selectors() -> [SelectorSnapshot] { cache.snapshots() }
}
