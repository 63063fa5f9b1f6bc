import TesseraCore
import Testing

@testable import PolicyService

@Suite("SelectorCache")
struct SelectorCacheTests {
  let user = SelectorUser(1)

  @Test("a new selector selects the known identities, sorted")
  func initialSelection() {
    var cache = SelectorCache()
    _ = cache.updateIdentities(
      added: [pod(300, "app=web"), pod(257, "app=web"), pod(400, "app=db")], deleted: [])
    let web = cache.addSelector(EndpointSelector(matchLabels: [.k8s("app"): "web"]), user: user)
    #expect(cache.selections(of: web) == [NumericIdentity(257), NumericIdentity(300)])
    #expect(cache.users(of: web) == 1)
  }

  @Test("identity deltas reach exactly the selectors whose selection changes")
  func exactDeltas() {
    var cache = SelectorCache()
    let web = cache.addSelector(EndpointSelector(matchLabels: [.k8s("app"): "web"]), user: user)
    let defaultNamespace = cache.addSelector(
      EndpointSelector(matchLabels: [PolicyLabels.podNamespaceK8s: "default"]), user: user)
    let notWeb = cache.addSelector(
      EndpointSelector([LabelRequirement(key: .any("app"), op: .notIn, values: ["web"])]),
      user: user)
    let db = cache.addSelector(EndpointSelector(matchLabels: [.k8s("app"): "db"]), user: user)

    let first = cache.updateIdentities(
      added: [pod(300, "app=web"), pod(301, namespace: "prod", "app=web")], deleted: [])
    #expect(
      first == [
        SelectionChange(
          selector: web, added: [NumericIdentity(300), NumericIdentity(301)], deleted: []),
        SelectionChange(selector: defaultNamespace, added: [NumericIdentity(300)], deleted: []),
      ])
    #expect(cache.selections(of: db).isEmpty)

    // Relabel 300 to app=db: leaves web, joins notWeb and db, stays in default.
    let second = cache.updateIdentities(added: [pod(300, "app=db")], deleted: [])
    #expect(
      second == [
        SelectionChange(selector: web, added: [], deleted: [NumericIdentity(300)]),
        SelectionChange(selector: notWeb, added: [NumericIdentity(300)], deleted: []),
        SelectionChange(selector: db, added: [NumericIdentity(300)], deleted: []),
      ])

    let third = cache.updateIdentities(
      added: [], deleted: [NumericIdentity(300), NumericIdentity(999)])
    #expect(
      third == [
        SelectionChange(selector: defaultNamespace, added: [], deleted: [NumericIdentity(300)]),
        SelectionChange(selector: notWeb, added: [], deleted: [NumericIdentity(300)]),
        SelectionChange(selector: db, added: [], deleted: [NumericIdentity(300)]),
      ])
  }

  @Test("updates are idempotent and net out within one call")
  func idempotent() {
    var cache = SelectorCache()
    _ = cache.addSelector(EndpointSelector(matchLabels: [.k8s("app"): "web"]), user: user)
    #expect(cache.updateIdentities(added: [pod(300, "app=web")], deleted: []).count == 1)
    #expect(cache.updateIdentities(added: [pod(300, "app=web")], deleted: []).isEmpty)
    #expect(
      cache.updateIdentities(added: [pod(300, "app=web")], deleted: [NumericIdentity(300)]).isEmpty)
    #expect(cache.updateIdentities(added: [], deleted: [NumericIdentity(300)]).count == 1)
    #expect(cache.updateIdentities(added: [], deleted: [NumericIdentity(300)]).isEmpty)
  }

  @Test("a selector is shared by its users and leaves with the last one")
  func users() {
    var cache = SelectorCache()
    let selector = EndpointSelector(matchLabels: [.k8s("app"): "web"])
    let a = cache.addSelector(selector, user: SelectorUser(1))
    let b = cache.addSelector(selector, user: SelectorUser(2))
    #expect(a == b)
    #expect(cache.users(of: a) == 2)
    cache.removeSelector(a, user: SelectorUser(1))
    #expect(cache.lookup(selector) == a)
    cache.removeSelector(a, user: SelectorUser(2))
    #expect(cache.lookup(selector) == nil)
    #expect(cache.selectorCount == 0)
  }

  @Test(
    "incremental selections equal a full recompute over random identities and selectors",
    arguments: [1, 2, 3, 42] as [UInt64])
  func incrementalEqualsFull(seed: UInt64) {
    var rng = SplitMix64(seed: seed)
    let keys = ["app", "tier", "env", "team", PolicyLabels.podNamespace]
    let values = ["a", "b", "c", "d"]
    let sources = ["k8s", "container"]
    func randomLabels() -> LabelSet {
      var set: [Label] = []
      for key in keys where Bool.random(using: &rng) {
        set.append(
          Label(
            source: sources.randomElement(using: &rng)!, key: key,
            value: values.randomElement(using: &rng)!))
      }
      return LabelSet(validated: set)
    }
    func randomSelector() -> EndpointSelector {
      var requirements: [LabelRequirement] = []
      for _ in 0..<Int.random(in: 0...3, using: &rng) {
        let key = SelectorKey(
          source: ["any", "k8s", "container"].randomElement(using: &rng)!,
          key: keys.randomElement(using: &rng)!)
        let op = LabelRequirement.Operator.allCases.randomElement(using: &rng)!
        let chosen =
          (op == .in || op == .notIn)
          ? Array(values.shuffled(using: &rng).prefix(Int.random(in: 1...2, using: &rng))) : []
        requirements.append(LabelRequirement(key: key, op: op, values: chosen))
      }
      return EndpointSelector(requirements)
    }

    var cache = SelectorCache()
    var held: [(CachedSelector, SelectorUser)] = []
    var expected = cache.currentSelections()
    for step in 0..<600 {
      switch Int.random(in: 0..<10, using: &rng) {
      case 0..<2:
        let user = SelectorUser(UInt64(step))
        held.append((cache.addSelector(randomSelector(), user: user), user))
      case 2 where !held.isEmpty:
        let (selector, user) = held.remove(at: Int.random(in: 0..<held.count, using: &rng))
        cache.removeSelector(selector, user: user)
      default:
        let added = (0..<Int.random(in: 0...4, using: &rng)).map { _ in
          SecurityIdentity(
            id: NumericIdentity(UInt32.random(in: 256..<356, using: &rng)), labels: randomLabels())
        }
        let deleted = (0..<Int.random(in: 0...2, using: &rng)).map { _ in
          NumericIdentity(UInt32.random(in: 256..<356, using: &rng))
        }
        // Replaying the deltas on the previous selections must give the new ones.
        expected = cache.currentSelections()
        let changes = cache.updateIdentities(added: added, deleted: deleted)
        for change in changes {
          #expect(Set(change.added).isDisjoint(with: change.deleted))
          #expect(
            change.added == change.added.sorted() && change.deleted == change.deleted.sorted())
          var selection = Set(expected[change.selector] ?? [])
          #expect(selection.isDisjoint(with: change.added))
          #expect(selection.isSuperset(of: change.deleted))
          selection.formUnion(change.added)
          selection.subtract(change.deleted)
          expected[change.selector] = selection.sorted()
        }
        #expect(expected == cache.currentSelections())
      }
      #expect(cache.currentSelections() == cache.fullRecompute())
    }
    // And against the plain label-set matcher, which shares no code with the compiled one.
    for (selector, selection) in cache.currentSelections() {
      let oracle = cache.identities.filter { selector.selector.matches(cache.labels(of: $0)!) }
      #expect(selection == oracle)
    }
    // Label sets the cache holds no identity for, some with strings it never saw: the
    // selectors that select each, as the plain matcher finds them.
    for _ in 0..<200 {
      var labels = randomLabels().labels
      if Bool.random(using: &rng) {
        labels.append(Label(source: "k8s", key: "unseen", value: "x"))
      }
      if let first = labels.first, Bool.random(using: &rng) {
        labels[0] = Label(source: first.source, key: first.key, value: "never-interned")
      }
      let set = LabelSet(validated: labels)
      let oracle = Set(cache.selectors.filter { $0.selector.matches(set) })
      #expect(Set(cache.selectors(selecting: set)) == oracle)
    }
  }

  @Test(
    "adding one identity to 10,000 identities × 1,000 selectors does not recompute every selection")
  func incrementalIsFast() {
    var rng = SplitMix64(seed: 7)
    var cache = SelectorCache()
    let namespaces = (0..<20).map { "ns\($0)" }
    var identities: [SecurityIdentity] = []
    for id in 0..<10_000 {
      identities.append(
        pod(
          UInt32(256 + id), namespace: namespaces.randomElement(using: &rng)!,
          "app=app\(Int.random(in: 0..<500, using: &rng))",
          "tier=\(["web", "api", "db"].randomElement(using: &rng)!)"))
    }
    _ = cache.updateIdentities(added: identities, deleted: [])
    // Namespaced app selectors, some with a NotIn, and a few broad ones.
    for index in 0..<1_000 {
      var requirements = [
        LabelRequirement(key: .k8s("app"), op: .in, values: ["app\(index % 500)"])
      ]
      if index >= 500 {
        requirements.append(
          LabelRequirement(
            key: PolicyLabels.podNamespaceK8s, op: .in, values: [namespaces[index % 20]]))
      }
      if index % 5 == 0 {
        requirements.append(LabelRequirement(key: .any("tier"), op: .notIn, values: ["db"]))
      }
      if index % 100 == 0 {
        requirements = [
          LabelRequirement(key: .any("tier"), op: .exists),
          LabelRequirement(key: .k8s("app"), op: .notIn, values: ["app\(index)"]),
        ]
      }
      cache.addSelector(EndpointSelector(requirements), user: SelectorUser(UInt64(index)))
    }
    #expect(cache.selectorCount == 1_000)

    // Timings here only tell incremental from full work (a factor of thousands);
    // the speed itself is measured by tessera-bench. The fastest of five adds is
    // used so that one preemption on a busy machine cannot decide the outcome.
    let clock = ContinuousClock()
    var incremental = Duration.seconds(1)
    for attempt in 0..<5 {
      var changes: [SelectionChange] = []
      let took = clock.measure {
        changes = cache.updateIdentities(
          added: [pod(UInt32(20_000 + attempt), namespace: "ns3", "app=app3", "tier=web")],
          deleted: [])
      }
      #expect(!changes.isEmpty)
      incremental = min(incremental, took)
    }
    var full: [CachedSelector: [NumericIdentity]] = [:]
    let recompute = clock.measure { full = cache.fullRecompute() }
    #expect(full == cache.currentSelections())
    #expect(incremental * 100 < recompute, "incremental \(incremental) vs full \(recompute)")
  }
}
