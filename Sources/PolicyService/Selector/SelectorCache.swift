public import TesseraCore

/// A selector held by the ``SelectorCache``; the handle rules keep to read its selection.
///
/// Two handles are equal when they name the same cache entry.
public struct CachedSelector: Hashable, Sendable, Comparable, CustomStringConvertible {
  public let id: UInt64
  public let selector: EndpointSelector

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.id == rhs.id }
  public func hash(into hasher: inout Hasher) { hasher.combine(id) }
  public static func < (lhs: Self, rhs: Self) -> Bool { lhs.id < rhs.id }
  public var description: String { selector.description }
}

/// Who holds a reference to a cached selector (in Tessera, one rule of the repository).
public struct SelectorUser: Hashable, Sendable {
  public var rawValue: UInt64
  public init(_ rawValue: UInt64) { self.rawValue = rawValue }
}

/// The change of one selector's selection, delivered to its users as
/// `identitySelectionUpdated(selector:added:deleted:)`.
///
/// `added` and `deleted` are disjoint and sorted (Cilium's contract: sorted "makes testing
/// easier").
public struct SelectionChange: Sendable, Hashable {
  public var selector: CachedSelector
  public var added: [NumericIdentity]
  public var deleted: [NumericIdentity]
}

/// Maps each distinct selector to the sorted set of identities it selects
/// (Cilium's `pkg/policy/selectorcache.go`).
///
/// Adding or removing an identity touches only the selectors that could select it: each
/// selector is indexed under one label it requires (a `key=value` of an `In` requirement, or
/// the key of an `Exists` requirement), so an identity is matched only against the selectors
/// indexed under its own labels plus the few that require no label at all. Adding a selector
/// likewise matches only the identities carrying its indexed label.
///
/// Label strings are interned, and each identity and requirement is compiled to integers, so
/// a match is a few integer comparisons.
///
/// The cache is a value: the policy engine keeps it inside its lock and passes it `inout`.
public struct SelectorCache: Sendable {
  struct Atom: Hashable, Sendable {
    var key: Int32
    var source: Int32
    var value: Int32
  }

  struct CompiledIdentity: Sendable {
    var labels: LabelSet
    /// Sorted by key; one atom per key.
    var atoms: [Atom]
  }

  struct CompiledRequirement: Sendable {
    var key: Int32
    /// ``SelectorCache/anySource`` matches every source.
    var source: Int32
    var op: LabelRequirement.Operator
    var values: [Int32]

    func matches(_ identity: CompiledIdentity) -> Bool {
      // Plain loops: this is the hot path of every selection computation.
      var value: Int32 = -1
      for atom in identity.atoms where atom.key == key {
        if source == SelectorCache.anySource || atom.source == source { value = atom.value }
        break
      }
      switch op {
      case .exists: return value >= 0
      case .doesNotExist: return value < 0
      case .in, .notIn:
        var found = false
        if value >= 0 {
          for candidate in values where candidate == value {
            found = true
            break
          }
        }
        return op == .in ? found : !found
      }
    }
  }

  enum IndexSlot: Sendable {
    case keyValues(key: Int32, values: [Int32])
    case key(Int32)
    case unindexed
  }

  struct Entry: Sendable {
    var cached: CachedSelector
    var requirements: [CompiledRequirement]
    var index: IndexSlot
    /// Sorted.
    var selection: [NumericIdentity]
    var users: [SelectorUser: Int]

    func matches(_ identity: CompiledIdentity) -> Bool {
      for requirement in requirements where !requirement.matches(identity) { return false }
      return true
    }
  }

  static let anySource: Int32 = 0

  private var strings: [String: Int32] = [Label.Source.any: SelectorCache.anySource]
  private var entries: [UInt64: Entry] = [:]
  private var idBySelector: [EndpointSelector: UInt64] = [:]
  private var selectorsByKeyValue: [UInt64: [UInt64]] = [:]
  private var selectorsByKey: [Int32: [UInt64]] = [:]
  private var unindexedSelectors: Set<UInt64> = []
  private var compiledIdentities: [NumericIdentity: CompiledIdentity] = [:]
  private var identitiesByKeyValue: [UInt64: Set<NumericIdentity>] = [:]
  private var identitiesByKey: [Int32: Set<NumericIdentity>] = [:]
  private var nextID: UInt64 = 1

  public init() {}

  // MARK: Selectors

  /// Adds a reference from `user` to `selector`, computing its selection if it is new.
  /// - Returns: the handle; the same selector always gets the same handle while it has users.
  @discardableResult
  public mutating func addSelector(_ selector: EndpointSelector, user: SelectorUser)
    -> CachedSelector
  {
    if let id = idBySelector[selector] {
      entries[id]!.users[user, default: 0] += 1
      return entries[id]!.cached
    }
    let id = nextID
    nextID += 1
    let cached = CachedSelector(id: id, selector: selector)
    let requirements = selector.requirements.map { compile($0) }
    let index = Self.chooseIndex(for: selector.requirements, compiled: requirements)
    var entry = Entry(
      cached: cached, requirements: requirements, index: index, selection: [], users: [user: 1])
    entry.selection = candidateIdentities(for: index).filter {
      entry.matches(compiledIdentities[$0]!)
    }.sorted()
    entries[id] = entry
    idBySelector[selector] = id
    switch index {
    case .keyValues(let key, let values):
      for value in values { selectorsByKeyValue[Self.pair(key, value), default: []].append(id) }
    case .key(let key): selectorsByKey[key, default: []].append(id)
    case .unindexed: unindexedSelectors.insert(id)
    }
    return cached
  }

  /// Drops one reference from `user`; the selector leaves the cache with its last reference.
  public mutating func removeSelector(_ cached: CachedSelector, user: SelectorUser) {
    guard var entry = entries[cached.id], let count = entry.users[user] else { return }
    entry.users[user] = count > 1 ? count - 1 : nil
    guard entry.users.isEmpty else {
      entries[cached.id] = entry
      return
    }
    entries[cached.id] = nil
    idBySelector[cached.selector] = nil
    switch entry.index {
    case .keyValues(let key, let values):
      for value in values {
        let pair = Self.pair(key, value)
        selectorsByKeyValue[pair]?.removeAll { $0 == cached.id }
        if selectorsByKeyValue[pair]?.isEmpty == true { selectorsByKeyValue[pair] = nil }
      }
    case .key(let key):
      selectorsByKey[key]?.removeAll { $0 == cached.id }
      if selectorsByKey[key]?.isEmpty == true { selectorsByKey[key] = nil }
    case .unindexed: unindexedSelectors.remove(cached.id)
    }
  }

  /// The identities `cached` selects, sorted; empty for a selector no longer cached.
  public func selections(of cached: CachedSelector) -> [NumericIdentity] {
    entries[cached.id]?.selection ?? []
  }

  /// The number of references held on `cached`.
  public func users(of cached: CachedSelector) -> Int {
    entries[cached.id]?.users.values.reduce(0, +) ?? 0
  }

  /// The handle of `selector` if it is cached.
  public func lookup(_ selector: EndpointSelector) -> CachedSelector? {
    idBySelector[selector].flatMap { entries[$0]?.cached }
  }

  /// Every cached selector, oldest first.
  public var selectors: [CachedSelector] { entries.values.map(\.cached).sorted() }

  public var selectorCount: Int { entries.count }

  /// Every cached selector with its selection and users, sorted by selector text.
  public func snapshots() -> [SelectorSnapshot] {
    entries.values
      .map {
        SelectorSnapshot(
          selector: $0.cached.description, identities: $0.selection,
          users: $0.users.values.reduce(0, +))
      }
      .sorted { ($0.selector, $0.users) < ($1.selector, $1.users) }
  }

  // MARK: Identities

  /// The cached selectors that select an identity labelled `labels`, whether or not the
  /// cache holds one: found through the label index, as for an added identity.
  public func selectors(selecting labels: LabelSet) -> [CachedSelector] {
    matchingSelectors(compiledWithoutInterning(labels)).map { entries[$0]!.cached }
  }

  /// The labels of a known identity.
  public func labels(of identity: NumericIdentity) -> LabelSet? {
    compiledIdentities[identity]?.labels
  }

  /// The identity whose labels are exactly `labels` (a linear search: for `policy trace`).
  public func identity(labeled labels: LabelSet) -> NumericIdentity? {
    compiledIdentities.first { $0.value.labels == labels }?.key
  }

  public var identityCount: Int { compiledIdentities.count }

  /// Every known identity.
  public var identities: [NumericIdentity] { compiledIdentities.keys.sorted() }

  /// Applies identity additions and deletions, and returns the selections that changed.
  ///
  /// Deletions apply first, then additions, and the result is the net change per selector:
  /// deleting and re-adding an identity with the same labels in one call changes nothing.
  /// Adding a known identity with the same labels is a no-op; with other labels it moves
  /// the identity between selections. Deleting an unknown identity is a no-op.
  ///
  /// - Returns: one change per selector whose selection changed, ordered by selector id;
  ///   `added` and `deleted` are disjoint and sorted.
  public mutating func updateIdentities(added: [SecurityIdentity], deleted: [NumericIdentity])
    -> [SelectionChange]
  {
    var before: [NumericIdentity: CompiledIdentity?] = [:]
    var after: [NumericIdentity: CompiledIdentity?] = [:]
    for id in deleted where compiledIdentities[id] != nil {
      if before[id] == nil { before[id] = .some(compiledIdentities[id]) }
      after[id] = .some(nil)
    }
    for identity in added {
      if before[identity.id] == nil { before[identity.id] = .some(compiledIdentities[identity.id]) }
      after[identity.id] = .some(compile(identity.labels))
    }

    var addedBySelector: [UInt64: [NumericIdentity]] = [:]
    var deletedBySelector: [UInt64: [NumericIdentity]] = [:]
    for (id, newIdentity) in after {
      let oldIdentity = before[id] ?? nil
      if oldIdentity?.labels == newIdentity?.labels { continue }
      let oldMatches = oldIdentity.map(matchingSelectors) ?? []
      let newMatches = newIdentity.map(matchingSelectors) ?? []
      for selector in oldMatches.subtracting(newMatches) {
        deletedBySelector[selector, default: []].append(id)
      }
      for selector in newMatches.subtracting(oldMatches) {
        addedBySelector[selector, default: []].append(id)
      }
      if let oldIdentity { unindex(id, oldIdentity) }
      compiledIdentities[id] = newIdentity
      if let newIdentity { index(id, newIdentity) }
    }

    var changes: [SelectionChange] = []
    for selectorID in Set(addedBySelector.keys).union(deletedBySelector.keys).sorted() {
      let addedIDs = (addedBySelector[selectorID] ?? []).sorted()
      let deletedIDs = (deletedBySelector[selectorID] ?? []).sorted()
      entries[selectorID]!.selection = Self.apply(
        added: addedIDs, deleted: deletedIDs, to: entries[selectorID]!.selection)
      changes.append(
        SelectionChange(selector: entries[selectorID]!.cached, added: addedIDs, deleted: deletedIDs)
      )
    }
    return changes
  }

  /// Every selection computed from scratch: every selector matched against every identity,
  /// without the indexes. Tests use it to prove the incremental path gives the same answer
  /// (and to measure what the indexes save).
  public func fullRecompute() -> [CachedSelector: [NumericIdentity]] {
    let all = compiledIdentities.sorted { $0.key < $1.key }
    var result: [CachedSelector: [NumericIdentity]] = [:]
    all.withUnsafeBufferPointer { identities in
      for entry in entries.values {
        var selection: [NumericIdentity] = []
        for index in identities.indices where entry.matches(identities[index].value) {
          selection.append(identities[index].key)
        }
        result[entry.cached] = selection
      }
    }
    return result
  }

  /// Every selection as the cache holds it.
  public func currentSelections() -> [CachedSelector: [NumericIdentity]] {
    Dictionary(uniqueKeysWithValues: entries.values.map { ($0.cached, $0.selection) })
  }

  // MARK: Internals

  private static func pair(_ key: Int32, _ value: Int32) -> UInt64 {
    UInt64(UInt32(bitPattern: key)) << 32 | UInt64(UInt32(bitPattern: value))
  }

  private mutating func intern(_ string: String) -> Int32 {
    if let id = strings[string] { return id }
    let id = Int32(strings.count)
    strings[string] = id
    return id
  }

  private mutating func compile(_ labels: LabelSet) -> CompiledIdentity {
    let atoms = labels.labels.map {
      Atom(key: intern($0.key), source: intern($0.source), value: intern($0.value))
    }
    return CompiledIdentity(labels: labels, atoms: atoms.sorted { $0.key < $1.key })
  }

  /// A string no requirement names: equal to no requirement's key, source or value, and
  /// never taken for a missing label (which is negative).
  private static let unseen = Int32.max

  /// `labels` compiled for matching only: a string the cache never interned gets
  /// ``unseen``, so the cache stays as it is.
  private func compiledWithoutInterning(_ labels: LabelSet) -> CompiledIdentity {
    let atoms = labels.labels.map {
      Atom(
        key: strings[$0.key] ?? Self.unseen, source: strings[$0.source] ?? Self.unseen,
        value: strings[$0.value] ?? Self.unseen)
    }
    return CompiledIdentity(labels: labels, atoms: atoms.sorted { $0.key < $1.key })
  }

  private mutating func compile(_ requirement: LabelRequirement) -> CompiledRequirement {
    CompiledRequirement(
      key: intern(requirement.key.key), source: intern(requirement.key.source), op: requirement.op,
      values: requirement.values.map { intern($0) }.sorted())
  }

  /// Prefers an `In` on a key other than the pod namespace (most selective), then any `In`,
  /// then an `Exists`; selectors with neither are matched against every identity.
  private static func chooseIndex(
    for requirements: [LabelRequirement], compiled: [CompiledRequirement]
  ) -> IndexSlot {
    let namespaceKey = PolicyLabels.podNamespace
    var best: (rank: Int, slot: IndexSlot)?
    for (requirement, compiledRequirement) in zip(requirements, compiled) {
      let rank: Int
      let slot: IndexSlot
      switch requirement.op {
      case .in:
        rank = requirement.key.key == namespaceKey ? 2 : 1
        slot = .keyValues(key: compiledRequirement.key, values: compiledRequirement.values)
      case .exists:
        rank = requirement.key.key == namespaceKey ? 4 : 3
        slot = .key(compiledRequirement.key)
      case .notIn, .doesNotExist:
        continue
      }
      if best == nil || rank < best!.rank { best = (rank, slot) }
    }
    return best?.slot ?? .unindexed
  }

  private func candidateIdentities(for index: IndexSlot) -> [NumericIdentity] {
    switch index {
    case .keyValues(let key, let values):
      return values.flatMap { identitiesByKeyValue[Self.pair(key, $0)] ?? [] }
    case .key(let key):
      return Array(identitiesByKey[key] ?? [])
    case .unindexed:
      return Array(compiledIdentities.keys)
    }
  }

  private func matchingSelectors(_ identity: CompiledIdentity) -> Set<UInt64> {
    var result: Set<UInt64> = []
    func consider(_ id: UInt64) {
      if entries[id]!.matches(identity) { result.insert(id) }
    }
    for atom in identity.atoms {
      for id in selectorsByKeyValue[Self.pair(atom.key, atom.value)] ?? [] { consider(id) }
      for id in selectorsByKey[atom.key] ?? [] { consider(id) }
    }
    for id in unindexedSelectors { consider(id) }
    return result
  }

  private mutating func index(_ id: NumericIdentity, _ identity: CompiledIdentity) {
    for atom in identity.atoms {
      identitiesByKeyValue[Self.pair(atom.key, atom.value), default: []].insert(id)
      identitiesByKey[atom.key, default: []].insert(id)
    }
  }

  private mutating func unindex(_ id: NumericIdentity, _ identity: CompiledIdentity) {
    for atom in identity.atoms {
      let pair = Self.pair(atom.key, atom.value)
      identitiesByKeyValue[pair]?.remove(id)
      if identitiesByKeyValue[pair]?.isEmpty == true { identitiesByKeyValue[pair] = nil }
      identitiesByKey[atom.key]?.remove(id)
      if identitiesByKey[atom.key]?.isEmpty == true { identitiesByKey[atom.key] = nil }
    }
  }

  /// Merges sorted, disjoint deltas into a sorted selection.
  private static func apply(
    added: [NumericIdentity], deleted: [NumericIdentity], to selection: [NumericIdentity]
  ) -> [NumericIdentity] {
    var result = selection
    if added.count + deleted.count <= 8 {
      for id in deleted {
        let position = lowerBound(id, in: result)
        if position < result.count && result[position] == id { result.remove(at: position) }
      }
      for id in added {
        let position = lowerBound(id, in: result)
        if position == result.count || result[position] != id { result.insert(id, at: position) }
      }
      return result
    }
    let removed = Set(deleted)
    result = selection.filter { !removed.contains($0) }
    var merged: [NumericIdentity] = []
    merged.reserveCapacity(result.count + added.count)
    var i = 0
    var j = 0
    while i < result.count || j < added.count {
      if j == added.count || (i < result.count && result[i] < added[j]) {
        merged.append(result[i])
        i += 1
      } else if i == result.count || added[j] < result[i] {
        merged.append(added[j])
        j += 1
      } else {
        merged.append(result[i])
        i += 1
        j += 1
      }
    }
    return merged
  }

  private static func lowerBound(_ id: NumericIdentity, in array: [NumericIdentity]) -> Int {
    var low = 0
    var high = array.count
    while low < high {
      let mid = (low + high) / 2
      if array[mid] < id { low = mid + 1 } else { high = mid }
    }
    return low
  }
}
