import Logging
import TesseraRuntime
import TesseraCore

/// Orchestrates endpoints: the blocking create → identity → first
/// regeneration flow (docs/architecture.md §1), label changes, policy changes, deletes and
/// restore after a restart.
///
/// Every state change goes through ``EndpointRegistry`` (one lock, the state
/// machine inside); calls to other services happen outside the lock.
public final class EndpointManager: Sendable {
  public struct Configuration: Sendable {
    /// Upper bound for a synchronous create or label update.
    public var requestTimeout: Duration
    /// Wait before retrying a failed background regeneration.
    public var regenerationRetryDelay: Duration

    public init(requestTimeout: Duration = .seconds(30), regenerationRetryDelay: Duration = .seconds(1)) {
      self.requestTimeout = requestTimeout
      self.regenerationRetryDelay = regenerationRetryDelay
    }

    public static let defaults = Configuration()
  }

  public let registry = EndpointRegistry()
  public let waiters = RegenerationWaiters()
  /// Signalled whenever an endpoint's realised identity or addresses may have changed.
  public let endpointsChanged = Wakeup()
  private let configuration: Configuration
  private let metadata: MetadataResolver
  private let identities: any IdentityAllocating
  private let policy: any PolicyComputing
  private let datapath: any DatapathRealizing
  private let store: EndpointStateStore?
  private let logger: Logger
  private let queueBox = QueueBox()
  private let policyCache = PolicyCache()
  /// Holds back a realisation that makes addresses carry a new identity until peers' policy reflects it.
  let ordering = PolicyOrdering()

  /// Lets the queue call back into the manager without a retain cycle at init.
  private final class QueueBox: Sendable {
    let queue = Mutex<RegenerationQueue?>(nil)
  }

  public init(
    configuration: Configuration = .defaults, metadata: MetadataResolver, identities: any IdentityAllocating,
    policy: any PolicyComputing, datapath: any DatapathRealizing, store: EndpointStateStore?,
    logger: Logger = Logger(label: "tessera.endpoint")
  ) {
    self.configuration = configuration
    self.metadata = metadata
    self.identities = identities
    self.policy = policy
    self.datapath = datapath
    self.store = store
    self.logger = logger
    queueBox.queue.withLock { $0 = RegenerationQueue { [weak self] id in await self?.regenerate(endpointID: id) } }
  }

  private var queue: RegenerationQueue { queueBox.queue.withLock { $0! } }

  // MARK: - Create

  /// Registers the endpoint, resolves its labels and identity and regenerates
  /// it. With `sync`, returns only once its policy is in force in the datapath.
  ///
  /// On failure nothing is left behind: the identity reference is released,
  /// datapath state removed and the endpoint forgotten.
  public func createEndpoint(_ spec: EndpointSpec, sync: Bool) async throws(EndpointError) -> Endpoint {
    try spec.validate()
    let started = ContinuousClock.now
    let deadline = started + configuration.requestTimeout
    let endpoint = try registry.register(spec)
    var logger = self.logger
    logger[metadataKey: "endpoint.id"] = "\(endpoint.id)"
    logger[metadataKey: "container.id"] = "\(spec.containerID)"
    logger.debug("endpoint registered", metadata: ["state": "\(endpoint.state.rawValue)"])

    let flow: @Sendable () async throws(EndpointError) -> Void = { [self] () async throws(EndpointError) in
      let workloadLabels = try await metadata.resolve(namespace: spec.namespace, podName: spec.podName, deadline: deadline)
      let labels = Self.endpointLabels(request: spec.labels, workload: workloadLabels, namespace: spec.namespace)
      try await applyLabels(endpointID: endpoint.id, labels: labels, requestLabels: nil)
    }
    guard sync else {
      Task {
        do { try await flow() } catch {
          logger.warning("asynchronous endpoint creation failed", metadata: ["error": "\(error)"])
          _ = try? await self.deleteEndpoint(id: endpoint.id, abandoningDatapathState: true)
        }
      }
      return endpoint
    }
    do {
      try await flow()
      try await waiters.wait(endpointID: endpoint.id, minimumGeneration: 1, deadline: deadline)
      // Policy events that arrived while the first pass ran are in force too when the create returns.
      try await ordering.waitForOwnChanges(of: endpoint.id, deadline: deadline)
    } catch {
      logger.info("endpoint creation failed; cleaning up", metadata: ["error": "\(error)"])
      _ = try? await deleteEndpoint(id: endpoint.id, abandoningDatapathState: true)
      EndpointMetrics.createDuration(result: "error").record(duration: ContinuousClock.now - started)
      throw error
    }
    guard let ready = registry.endpoint(id: endpoint.id) else {
      throw EndpointError(code: .notFound, message: "endpoint \(endpoint.id) was deleted while it was being created")
    }
    EndpointMetrics.createDuration(result: "ok").record(duration: ContinuousClock.now - started)
    EndpointMetrics.endpoints.record(registry.count)
    logger.info("endpoint ready", metadata: [
      "identity": "\(ready.identity)", "policyRevision": "\(ready.policyRevision)", "took": "\(ContinuousClock.now - started)",
    ])
    return ready
  }

  /// Request labels, workload labels (which win on a shared key) and the namespace label.
  static func endpointLabels(request: LabelSet, workload: LabelSet, namespace: String) -> LabelSet {
    let namespaceLabel = LabelSet(validated: [Label(source: Label.Source.kubernetes, key: Endpoint.namespaceLabelKey, value: namespace)])
    return request.merging(workload).merging(namespaceLabel)
  }

  // MARK: - Labels and identity

  /// docs/architecture.md §1 steps 3–5: apply labels (new identity revision), resolve the
  /// identity, set it unless a newer revision overtook this one, release the
  /// previous identity, and trigger regeneration.
  private func applyLabels(endpointID: UInt64, labels: LabelSet, requestLabels: LabelSet?) async throws(EndpointError) {
    let revision = try registry.update(id: endpointID) { (endpoint) throws(EndpointError) -> UInt64 in
      _ = try endpoint.stateMachine.handle(.labelsChanged)
      endpoint.labels = labels
      if let requestLabels { endpoint.requestLabels = requestLabels }
      endpoint.identityRevision += 1
      return endpoint.identityRevision
    }
    let allocationStart = ContinuousClock.now
    let (identity, isNew) = try await identities.allocateIdentity(labels: labels)
    let allocationTime = ContinuousClock.now - allocationStart

    enum Outcome { case applied(previous: NumericIdentity), stale, gone }
    let outcome: Outcome
    do {
      outcome = try registry.update(id: endpointID) { (endpoint) throws(EndpointError) -> Outcome in
        guard endpoint.state != .disconnecting, endpoint.state != .disconnected else { return .gone }
        guard endpoint.identityRevision == revision else { return .stale }
        _ = try endpoint.stateMachine.handle(.identityResolved)
        let previous = endpoint.identity
        endpoint.identity = identity.id
        endpoint.identityLabels = identity.labels
        endpoint.wantedGeneration += 1
        return .applied(previous: previous)
      }
    } catch {
      outcome = .gone
    }
    switch outcome {
    case .stale, .gone:
      // The reference this allocation took belongs to nobody: give it back.
      try? await identities.releaseIdentity(identity.id)
      if case .stale = outcome {
        throw EndpointError(code: .staleRevision, message: "labels of endpoint \(endpointID) changed again while its identity was resolved")
      }
      throw EndpointError(code: .notFound, message: "endpoint \(endpointID) was deleted while its identity was resolved")
    case .applied(let previous):
      logger.debug("identity resolved", metadata: [
        "endpoint.id": "\(endpointID)", "identity": "\(identity.id)", "isNew": "\(isNew)", "previous": "\(previous)",
        "allocation": "\(allocationTime)",
      ])
      persist(endpointID)
      if previous != .unknown {
        // Allocation took a reference even when the identity did not change; drop the old one.
        do { try await identities.releaseIdentity(previous) } catch {
          logger.warning("could not release previous identity", metadata: ["identity": "\(previous)", "error": "\(error)"])
        }
      }
      queue.trigger(endpointID)
    }
  }

  /// Replaces the caller-given labels and re-resolves the identity without
  /// recreating the endpoint. With `sync`, waits for the resulting regeneration.
  public func updateLabels(endpointID: UInt64, requestLabels: LabelSet, sync: Bool) async throws(EndpointError) -> Endpoint {
    guard let endpoint = registry.endpoint(id: endpointID) else {
      throw EndpointError(code: .notFound, message: "no endpoint \(endpointID)")
    }
    let probe = EndpointSpec(containerID: endpoint.containerID, interfaceName: endpoint.interfaceName, ips: [], namespace: endpoint.namespace, labels: requestLabels)
    try probe.validate()
    let deadline = ContinuousClock.now + configuration.requestTimeout
    let workload = try await metadata.resolve(namespace: endpoint.namespace, podName: endpoint.podName, deadline: .now)
    let labels = Self.endpointLabels(request: requestLabels, workload: workload, namespace: endpoint.namespace)
    try await applyLabels(endpointID: endpointID, labels: labels, requestLabels: requestLabels)
    if sync, let wanted = registry.endpoint(id: endpointID)?.wantedGeneration {
      try await waiters.wait(endpointID: endpointID, minimumGeneration: wanted, deadline: deadline)
      try await ordering.waitForOwnChanges(of: endpointID, deadline: deadline)
    }
    guard let updated = registry.endpoint(id: endpointID) else {
      throw EndpointError(code: .notFound, message: "endpoint \(endpointID) was deleted")
    }
    return updated
  }

  /// Re-resolves every endpoint of a workload whose registry labels changed.
  public func workloadChanged(namespace: String, podName: String) async {
    for endpoint in registry.all() where endpoint.namespace == namespace && endpoint.podName == podName {
      do {
        _ = try await updateLabels(endpointID: endpoint.id, requestLabels: endpoint.requestLabels, sync: false)
      } catch {
        logger.warning("relabel after workload change failed", metadata: ["endpoint.id": "\(endpoint.id)", "error": "\(error)"])
      }
    }
  }

  // MARK: - Regeneration

  /// docs/architecture.md §1 step 7: compute the desired policy and have the datapath realise it.
  func regenerate(endpointID: UInt64) async {
    let started: (Endpoint, UInt64)?
    do {
      started = try registry.update(id: endpointID) { (endpoint) throws(EndpointError) -> (Endpoint, UInt64) in
        _ = try endpoint.stateMachine.handle(.regenerationStarted)
        return (endpoint, endpoint.wantedGeneration)
      }
    } catch {
      // Deleted, or waiting for an identity whose resolution triggers its own pass.
      started = nil
    }
    guard let (snapshot, generation) = started else { return }
    do {
      if ordering.changesIdentity(endpointID: endpointID, to: snapshot.identity) {
        // Realising writes this endpoint's addresses → identity into the ipcache: peers first.
        let waitStart = ContinuousClock.now
        try await waitForPolicyOrdering(of: endpointID, deadline: waitStart + configuration.requestTimeout)
        logger.debug("peers' policy reflects the identity", metadata: [
          "endpoint.id": "\(endpointID)", "identity": "\(snapshot.identity)", "waited": "\(ContinuousClock.now - waitStart)",
        ])
        // A delete or relabel during the wait: realising the old snapshot now would resurrect or misstate it.
        // The delete or the new identity's own pass takes over; nothing failed.
        guard let current = registry.endpoint(id: endpointID), current.state == .regenerating, current.identity == snapshot.identity else {
          logger.debug("endpoint deleted or relabelled while its peers caught up; not realised", metadata: ["endpoint.id": "\(endpointID)"])
          return
        }
      }
      let computeStart = ContinuousClock.now
      let desired = try await policyCache.policy(for: SecurityIdentity(id: snapshot.identity, labels: snapshot.identityLabels)) {
        (identity) async throws(EndpointError) in try await policy.computePolicy(for: identity)
      }
      let realizeStart = ContinuousClock.now
      let realized = try await datapath.realize(endpoint: snapshot, policy: desired)
      logger.debug("regenerated", metadata: [
        "endpoint.id": "\(endpointID)", "revision": "\(realized)", "entries": "\(desired.entries.count)",
        "compute": "\(realizeStart - computeStart)", "realize": "\(ContinuousClock.now - realizeStart)",
      ])
      let finished = try registry.update(id: endpointID) { (endpoint) throws(EndpointError) -> UInt64 in
        _ = try endpoint.stateMachine.handle(.regenerationFinished)
        if endpoint.identity == snapshot.identity {
          endpoint.policyRevision = realized
          endpoint.realizedGeneration = max(endpoint.realizedGeneration, generation)
        }
        return endpoint.realizedGeneration
      }
      ordering.realized(endpointID: endpointID, identity: snapshot.identity, generation: finished)
      persist(endpointID)
      waiters.resume(endpointID: endpointID, realizedGeneration: finished)
      endpointsChanged.signal()
      EndpointMetrics.regenerations(result: "ok").increment()
    } catch {
      logger.warning("regeneration failed", metadata: ["endpoint.id": "\(endpointID)", "error": "\(error)"])
      EndpointMetrics.regenerations(result: "error").increment()
      ordering.failed(endpointID: endpointID)
      let stillThere = (try? registry.update(id: endpointID) { (endpoint) throws(EndpointError) -> Bool in
        _ = try endpoint.stateMachine.handle(.regenerationFailed)
        return true
      }) ?? false
      waiters.fail(endpointID: endpointID, error: error)
      if stillThere {
        let delay = configuration.regenerationRetryDelay
        Task {
          try? await Task.sleep(for: delay)
          self.triggerRegeneration(endpointIDs: [endpointID])
        }
      }
    }
  }

  /// Waits until every change the policy service made before this call
  /// (identities entering its SelectorCache, rule changes) is realised in the
  /// policy maps of this node's endpoints (except `endpointID`'s own, and those
  /// ``PolicyOrdering`` does not wait for). Call it before an ipcache entry makes
  /// packets carry an identity the policy service has just learnt.
  ///
  /// - Throws: ``EndpointError`` `.deadlineExceeded` at the deadline, or the
  ///   policy service's error when its event sequence cannot be read.
  public func waitForPolicyOrdering(of endpointID: UInt64? = nil, deadline: ContinuousClock.Instant) async throws(EndpointError) {
    while let target = try await policy.eventSequence() {
      if try await ordering.waitForPeers(of: endpointID, through: target, deadline: deadline) { return }
      // The policy service restarted while we waited: wait for its new log instead.
    }
  }

  /// Orders other nodes' ipcache entries behind this node's policy maps: waits
  /// until the policy service holds each of `identities` in its SelectorCache and
  /// every change it made so far is realised in this node's policy maps.
  ///
  /// - Returns: those of `identities` the policy service does not hold yet; an
  ///   entry carrying one of them must wait (the identity service has not told it).
  /// - Throws: ``EndpointError`` `.deadlineExceeded` at the deadline, or the policy
  ///   service's error.
  public func waitForPolicyOrdering(
    admitting identities: Set<NumericIdentity>, deadline: ContinuousClock.Instant
  ) async throws(EndpointError) -> Set<NumericIdentity> {
    while let (target, unknown) = try await policy.eventSequence(requiring: identities) {
      if try await ordering.waitForPeers(of: nil, through: target, deadline: deadline) { return unknown }
    }
    return []
  }

  /// Queues a regeneration of each endpoint (coalesced).
  ///
  /// - Returns: the endpoints queued, each with the generation that will reflect the trigger.
  @discardableResult
  public func triggerRegeneration(endpointIDs: [UInt64]) -> [(endpointID: UInt64, generation: UInt64)] {
    var queued: [(endpointID: UInt64, generation: UInt64)] = []
    for id in endpointIDs {
      let result = try? registry.update(id: id) { (endpoint) throws(EndpointError) -> (EndpointAction, UInt64) in
        let action = try endpoint.stateMachine.handle(.regenerationTriggered)
        if action == .regenerate { endpoint.wantedGeneration += 1 }
        return (action, endpoint.wantedGeneration)
      }
      if let (action, generation) = result, action == .regenerate {
        queued.append((id, generation))
        queue.trigger(id)
      }
    }
    return queued
  }

  /// A rule or selection changed in the policy service: regenerate the endpoints it may affect.
  ///
  /// A resync (events may have been missed: a lagged or reconnected watch)
  /// drops every cached policy and regenerates every endpoint.
  public func policyChanged(_ change: PolicyChange) {
    // Before anything is regenerated, so no regeneration reuses a policy from before the change.
    policyCache.invalidate(change.resync ? nil : change.affectedIdentities)
    let affected = registry.all().filter { endpoint in
      guard endpoint.identity != .unknown else { return false }
      if change.resync { return true }
      // A blanket change at the revision the endpoint already realised changes nothing.
      return change.affectedIdentities.map { $0.contains(endpoint.identity) } ?? (change.revision != endpoint.policyRevision)
    }
    if !affected.isEmpty {
      logger.debug("policy changed", metadata: [
        "revision": "\(change.revision)", "sequence": "\(change.sequence.map(String.init) ?? "-")", "resync": "\(change.resync)",
        "endpoints": "\(affected.count)",
      ])
    }
    let queued = affected.isEmpty ? [] : triggerRegeneration(endpointIDs: affected.map(\.id))
    if let sequence = change.sequence {
      ordering.consumed(sequence: sequence, instanceID: change.instanceID, triggered: queued)
    }
  }

  // MARK: - Delete

  /// Removes every endpoint the selector matches. Idempotent: an unknown
  /// endpoint is not an error. Returns the endpoints removed.
  ///
  /// - Throws: ``EndpointError`` `.upstreamUnavailable` when the datapath or
  ///   identity service cannot be reached; the endpoint stays `disconnecting`
  ///   and the next delete finishes the job.
  @discardableResult
  public func deleteEndpoints(containerID: String, interfaceName: String?) async throws(EndpointError) -> [Endpoint] {
    var removed: [Endpoint] = []
    for endpoint in registry.endpoints(containerID: containerID, interfaceName: interfaceName) {
      if let gone = try await deleteEndpoint(id: endpoint.id) { removed.append(gone) }
    }
    return removed
  }

  /// - Parameter abandoningDatapathState: for a create that failed: when the
  ///   datapath cannot be reached, forget the endpoint anyway and keep retrying
  ///   the datapath removal in the background, so a failed create leaves no
  ///   endpoint and no identity reference behind.
  @discardableResult
  public func deleteEndpoint(id: UInt64, abandoningDatapathState: Bool = false) async throws(EndpointError) -> Endpoint? {
    let snapshot: Endpoint
    do {
      snapshot = try registry.update(id: id) { (endpoint) throws(EndpointError) -> Endpoint in
        if endpoint.state != .disconnecting { _ = try endpoint.stateMachine.handle(.deleteRequested) }
        return endpoint
      }
    } catch {
      return nil
    }
    waiters.fail(endpointID: id, error: EndpointError(code: .notFound, message: "endpoint \(id) is being deleted"))
    do {
      try await datapath.removeEndpoint(id: id)
    } catch where abandoningDatapathState {
      removeFromDatapathEventually(id)
    }
    // Take the identity out under the lock so concurrent deletes release it once.
    let identity = try? registry.update(id: id) { (endpoint) throws(EndpointError) -> NumericIdentity in
      defer { endpoint.identity = .unknown }
      return endpoint.identity
    }
    if let identity, identity != .unknown {
      do {
        try await identities.releaseIdentity(identity)
      } catch {
        _ = try? registry.update(id: id) { (endpoint) throws(EndpointError) in endpoint.identity = identity }
        throw error
      }
    }
    _ = try? registry.update(id: id) { (endpoint) throws(EndpointError) in _ = try endpoint.stateMachine.handle(.deleteFinished) }
    registry.remove(id: id)
    waiters.forget(endpointID: id)
    ordering.forget(endpointID: id)
    store?.delete(id: id)
    endpointsChanged.signal()
    EndpointMetrics.endpoints.record(registry.count)
    logger.info("endpoint deleted", metadata: ["endpoint.id": "\(id)", "container.id": "\(snapshot.containerID)"])
    return snapshot
  }

  /// Retries a datapath removal that failed, with backoff, for up to ten minutes.
  private func removeFromDatapathEventually(_ id: UInt64) {
    logger.warning("datapath unreachable; its state for the endpoint will be removed when it is back", metadata: ["endpoint.id": "\(id)"])
    Task {
      var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
      let deadline = ContinuousClock.now + .seconds(600)
      while ContinuousClock.now < deadline {
        try? await backoff.sleep()
        if (try? await datapath.removeEndpoint(id: id)) != nil { return }
      }
    }
  }

  /// CNI GC: deletes endpoints whose container/interface is not listed.
  public func garbageCollect(valid: Set<EndpointRegistry.Attachment>) async throws(EndpointError) -> [Endpoint] {
    var removed: [Endpoint] = []
    for endpoint in registry.all() where !valid.contains(.init(containerID: endpoint.containerID, interfaceName: endpoint.interfaceName)) {
      if let gone = try await deleteEndpoint(id: endpoint.id) { removed.append(gone) }
    }
    return removed
  }

  /// Addresses of endpoints whose identity is in force in the datapath, for other nodes' ipcaches.
  public func realizedAddresses() -> [IPPrefix: NumericIdentity] {
    var addresses: [IPPrefix: NumericIdentity] = [:]
    for endpoint in registry.all() where endpoint.identity != .unknown && endpoint.policyRevision > 0 && endpoint.state != .disconnecting {
      for ip in endpoint.ips { addresses[ip] = endpoint.identity }
    }
    return addresses
  }

  // MARK: - Restore

  /// Loads endpoints from the state directory (same IDs, same identities).
  /// Endpoints the datapath still holds with their identity are ready at once;
  /// others are regenerated; endpoints that never became ready are removed.
  public func restore() async throws(EndpointError) -> (restored: Int, removed: Int) {
    guard let store else { return (0, 0) }
    let saved: [Endpoint]
    do {
      let loaded = try store.loadAll()
      saved = loaded.endpoints
      if !loaded.unreadable.isEmpty {
        logger.error("unreadable endpoint state set aside; those endpoints are not restored", metadata: ["files": "\(loaded.unreadable)"])
      }
    } catch {
      throw EndpointError(code: .invalidArgument, message: "cannot read endpoint state from \(store.directory)", cause: error)
    }
    guard !saved.isEmpty else {
      try await syncIdentityReferences()
      return (0, 0)
    }
    registry.restore(saved)
    let realized = try await datapath.realizedEndpoints()
    var removed = 0
    for endpoint in saved {
      if endpoint.policyRevision == 0 || endpoint.identity == .unknown {
        // Its create never returned success; the runtime will retry it.
        _ = try? await deleteEndpoint(id: endpoint.id)
        removed += 1
        continue
      }
      let inDatapath = realized[endpoint.id].map { $0.identity == endpoint.identity } ?? false
      let action = try? registry.update(id: endpoint.id) { (e) throws(EndpointError) -> EndpointAction in
        let action = try e.stateMachine.handle(.restored(needsRegeneration: !inDatapath))
        if action == .regenerate { e.wantedGeneration += 1 }
        return action
      }
      if inDatapath {
        ordering.realized(endpointID: endpoint.id, identity: endpoint.identity, generation: endpoint.realizedGeneration)
      }
      if action == .regenerate {
        queue.trigger(endpoint.id)
      } else {
        waiters.resume(endpointID: endpoint.id, realizedGeneration: endpoint.realizedGeneration)
      }
    }
    try await syncIdentityReferences()
    endpointsChanged.signal()
    logger.info("restored endpoints", metadata: ["restored": "\(saved.count - removed)", "removed": "\(removed)"])
    return (saved.count - removed, removed)
  }

  /// Tells the identity service exactly which identities this node's endpoints
  /// hold. A crash between allocating an identity and recording the endpoint
  /// would otherwise leak that reference forever; restore runs before the
  /// node serves, so nothing is being created meanwhile.
  private func syncIdentityReferences() async throws(EndpointError) {
    var held: [NumericIdentity: Int] = [:]
    for endpoint in registry.all() where endpoint.identity != .unknown && !endpoint.identity.isReserved {
      held[endpoint.identity, default: 0] += 1
    }
    try await identities.syncReferences(held: held)
  }

  /// Saves the endpoint once it holds an identity reference (so a restart can
  /// release or keep it) and after each realised regeneration. Labels alone are
  /// not saved: until their identity is set, the saved labels and identity agree.
  private func persist(_ id: UInt64) {
    guard let store, let endpoint = registry.endpoint(id: id) else { return }
    do { try store.save(endpoint) } catch {
      logger.error("cannot persist endpoint state", metadata: ["endpoint.id": "\(id)", "error": "\(error)"])
    }
  }
}

import Synchronization
