import TesseraCore

extension EndpointManager {
  /// docs/architecture.md §1 step 7: compute the desired policy and have the
  /// datapath realise it. One pass, run by the ``Regenerator``.
  func regenerate(endpointID: UInt64) async {
    let started: (Endpoint, UInt64)?
    do {
      started = try registry.update(id: endpointID) {
        (endpoint) throws(EndpointError) -> (Endpoint, UInt64) in
        // `.none`: the pass itself is the work.
        _ = try endpoint.stateMachine.handle(.regenerationStarted)
        return (endpoint, endpoint.wantedGeneration)
      }
    } catch {
      // Deleted, or waiting for an identity whose resolution triggers its own pass.
      started = nil
    }
    guard let (snapshot, generation) = started else { return }
    do {
      let subject = SecurityIdentity(id: snapshot.identity, labels: snapshot.identityLabels)
      // The endpoint's own policy does not depend on its peers catching up: compute it while
      // they do. A change after the computation triggers another pass (and a create waits
      // for its endpoint's own changes), so nothing older than the pass is left in force.
      async let computed = desiredPolicy(for: subject)
      if ordering.changesIdentity(endpointID: endpointID, to: snapshot.identity),
        !ordering.isRealized(snapshot.identity, byOtherThan: endpointID)
      {
        // Realising writes this endpoint's addresses → identity into the ipcache: peers first.
        let waitStart = ContinuousClock.now
        try await waitForPolicyOrdering(
          of: endpointID, identity: subject, deadline: waitStart + configuration.requestTimeout)
        logger.debug(
          "peers' policy reflects the identity",
          metadata: [
            "endpoint.id": "\(endpointID)", "identity": "\(snapshot.identity)",
            "waited": "\(ContinuousClock.now - waitStart)",
          ])
        // A delete or relabel during the wait: realising the old snapshot now would resurrect or misstate it.
        // The delete or the new identity's own pass takes over; nothing failed.
        guard let current = registry.endpoint(id: endpointID), current.state == .regenerating,
          current.identity == snapshot.identity
        else {
          logger.debug(
            "endpoint deleted or relabelled while its peers caught up; not realised",
            metadata: ["endpoint.id": "\(endpointID)"])
          return
        }
      }
      let computeStart = ContinuousClock.now
      let desired = try await computed.get()
      let resolved = desired.resolvingNamedPorts(own: snapshot.namedPorts ?? []) {
        namedPortsByIdentity()
      }
      let realizeStart = ContinuousClock.now
      let realized = try await datapath.realize(endpoint: snapshot, policy: resolved)
      // A delete while the policy was computed or realised may have removed the
      // endpoint from the datapath before this realisation put it back (programs,
      // maps, its addresses under an identity it no longer holds): take it out again.
      let state = registry.endpoint(id: endpointID)?.state
      if state == nil || state == .disconnecting || state == .disconnected {
        logger.debug(
          "endpoint deleted while it was realised; removing it from the datapath again",
          metadata: ["endpoint.id": "\(endpointID)"])
        try? await datapath.removeEndpoint(id: endpointID)
        return
      }
      logger.debug(
        "regenerated",
        metadata: [
          "endpoint.id": "\(endpointID)", "revision": "\(realized)",
          "entries": "\(resolved.entries.count)",
          "computeAwaited": "\(realizeStart - computeStart)",
          "realize": "\(ContinuousClock.now - realizeStart)",
        ])
      let (action, finished) = try registry.update(id: endpointID) {
        (endpoint) throws(EndpointError) -> (EndpointAction, Endpoint) in
        let action = try endpoint.stateMachine.handle(.regenerationFinished)
        if endpoint.identity == snapshot.identity {
          endpoint.policyRevision = realized
          endpoint.realizedGeneration = max(endpoint.realizedGeneration, generation)
        }
        return (action, endpoint)
      }
      ordering.realized(
        endpointID: endpointID, identity: snapshot.identity, generation: finished.realizedGeneration
      )
      regenerator.settled(endpointID)
      persist(endpointID)
      try await perform(action, on: finished)
      endpointsChanged.signal()
      EndpointMetrics.regenerations(result: "ok").increment()
    } catch {
      logger.warning(
        "regeneration failed", metadata: ["endpoint.id": "\(endpointID)", "error": "\(error)"])
      EndpointMetrics.regenerations(result: "error").increment()
      ordering.failed(endpointID: endpointID)
      let failed = try? registry.update(id: endpointID) {
        (endpoint) throws(EndpointError) -> (EndpointAction, Endpoint) in
        (try endpoint.stateMachine.handle(.regenerationFailed), endpoint)
      }
      guard let (action, endpoint) = failed else { return }
      try? await perform(action, on: endpoint, failure: error)
      regenerator.failed(endpointID, error: error)
    }
  }

  /// The policy of `subject`, cached or computed by the policy service.
  private func desiredPolicy(for subject: SecurityIdentity) async -> Result<
    EndpointPolicy, EndpointError
  > {
    do {
      return .success(
        try await policyCache.policy(for: subject) { (identity) async throws(EndpointError) in
          try await policy.computePolicy(for: identity)
        })
    } catch {
      return .failure(error)
    }
  }

  /// Waits until every change the policy service made before this call
  /// (identities entering its SelectorCache, rule changes) is realised in the
  /// policy maps of this node's endpoints (except `endpointID`'s own, and those
  /// ``PolicyOrdering`` does not wait for). Call it before an ipcache entry makes
  /// packets carry an identity the policy service has just learnt.
  ///
  /// With `identity`, first waits until the policy service holds it: a replica that
  /// follows the identity service's watch may learn a new identity after the
  /// allocation returned.
  ///
  /// - Throws: ``EndpointError`` `.deadlineExceeded` at the deadline, or the
  ///   policy service's error when its event sequence cannot be read.
  public func waitForPolicyOrdering(
    of endpointID: UInt64? = nil, identity: SecurityIdentity? = nil,
    deadline: ContinuousClock.Instant
  ) async throws(EndpointError) {
    let required: Set<NumericIdentity> = identity.map { [$0.id] } ?? []
    // An identity this node's watch saw enter the SelectorCache needs no question:
    // peers must have caught up through the events the watch has applied. A new
    // identity's arrival is already on its way.
    if let identity,
      let target = await ordering.awaitArrival(
        of: identity, within: min(configuration.requestTimeout / 10, .milliseconds(200))),
      try await ordering.waitForPeers(of: endpointID, through: target, deadline: deadline)
    {
      return
    }
    var attempt = 0
    while let (target, unknown) = try await policy.eventSequence(requiring: required) {
      if let identity, unknown.isEmpty { ordering.learnt(identity, heldAt: target) }
      if !unknown.isEmpty {
        guard ContinuousClock.now < deadline else {
          throw EndpointError(
            code: .deadlineExceeded,
            message:
              "the policy service did not learn identity \(unknown.map(\.rawValue).sorted()) before the deadline"
          )
        }
        try? await Task.sleep(for: .milliseconds(2))
        continue
      }
      if try await ordering.waitForPeers(of: endpointID, through: target, deadline: deadline) {
        return
      }
      // The watch follows another instance (a restart, another replica): ask again.
      try await PolicyOrdering.pauseBeforeAskingAgain(attempt: &attempt, deadline: deadline)
    }
  }

  /// Orders other nodes' ipcache entries behind this node's policy maps: waits
  /// until the policy service holds each of `identities` in its SelectorCache and
  /// every change it made so far is realised in this node's policy maps.
  ///
  /// Identities this node's watch saw enter the SelectorCache with the labels the
  /// entry names need no question, as for a local create.
  ///
  /// - Returns: those of `identities` the policy service does not hold yet; an
  ///   entry carrying one of them must wait (the identity service has not told it).
  /// - Throws: ``EndpointError`` `.deadlineExceeded` at the deadline, or the policy
  ///   service's error.
  public func waitForPolicyOrdering(
    admitting identities: Set<IdentityFingerprint>, deadline: ContinuousClock.Instant
  ) async throws(EndpointError) -> Set<IdentityFingerprint> {
    let (local, unknownHere) = ordering.localTarget(covering: identities)
    if unknownHere.isEmpty, let local,
      try await ordering.waitForPeers(of: nil, through: local, deadline: deadline)
    {
      return []
    }
    var attempt = 0
    while let (target, unknown) = try await policy.eventSequence(
      requiring: Set(identities.map(\.id)))
    {
      if try await ordering.waitForPeers(of: nil, through: target, deadline: deadline) {
        return identities.filter { unknown.contains($0.id) }
      }
      try await PolicyOrdering.pauseBeforeAskingAgain(attempt: &attempt, deadline: deadline)
    }
    return []
  }

  /// Queues a regeneration of each endpoint (coalesced).
  ///
  /// - Returns: the endpoints queued, each with the generation that will reflect the trigger.
  @discardableResult
  public func triggerRegeneration(endpointIDs: [UInt64]) async -> [(
    endpointID: UInt64, generation: UInt64
  )] {
    var queued: [(endpointID: UInt64, generation: UInt64)] = []
    for id in endpointIDs {
      let result = try? registry.update(id: id) {
        (endpoint) throws(EndpointError) -> (EndpointAction, Endpoint) in
        let action = try endpoint.stateMachine.handle(.regenerationTriggered)
        if action == .regenerate { endpoint.wantedGeneration += 1 }
        return (action, endpoint)
      }
      guard let (action, endpoint) = result else { continue }
      if action == .regenerate { queued.append((id, endpoint.wantedGeneration)) }
      try? await perform(action, on: endpoint)
    }
    return queued
  }

  /// An endpoint (of this node or, through the cluster ipcache, another) declaring ports
  /// under these names took an identity or went: regenerate the
  /// endpoints whose egress rows name one of them, as egress rows resolve through the ports
  /// of the peer identity's endpoints. An endpoint whose policy is not cached is regenerated
  /// too, as its rows are unknown.
  public func namedPortsChanged(_ names: Set<String>, except excluded: UInt64? = nil) async {
    let affected = registry.all().filter { endpoint in
      guard endpoint.id != excluded, endpoint.identity != .unknown else { return false }
      guard
        let policy = policyCache.cached(
          SecurityIdentity(id: endpoint.identity, labels: endpoint.identityLabels))
      else { return true }
      return policy.namedPortEntries.contains {
        $0.direction == .egress && names.contains($0.portName)
      }
    }
    guard !affected.isEmpty else { return }
    logger.debug(
      "named ports changed",
      metadata: ["names": "\(names.sorted())", "endpoints": "\(affected.count)"])
    await triggerRegeneration(endpointIDs: affected.map(\.id))
  }

  /// A rule or selection changed in the policy service: regenerate the endpoints it may affect.
  ///
  /// A resync (events may have been missed: a lagged or reconnected watch)
  /// drops every cached policy and regenerates every endpoint.
  public func policyChanged(_ change: PolicyChange) async {
    // A CIDR the change removed stops mapping its addresses before the maps lose its entries.
    await cidrIPCache?.removeBeforeRegenerating(change, ordering: ordering)
    // Before anything is regenerated, so no regeneration reuses a policy from before the change.
    policyCache.invalidate(change.resync ? nil : change.affectedIdentities)
    let affected = registry.ids { endpoint in
      guard endpoint.identity != .unknown else { return false }
      if change.resync { return true }
      // A blanket change at the revision the endpoint already realised changes nothing.
      return change.affectedIdentities.map { $0.contains(endpoint.identity) }
        ?? (change.revision != endpoint.policyRevision)
    }
    if !affected.isEmpty {
      logger.debug(
        "policy changed",
        metadata: [
          "revision": "\(change.revision)",
          "sequence": "\(change.sequence.map(String.init) ?? "-")", "resync": "\(change.resync)",
          "endpoints": "\(affected.count)",
        ])
    }
    let queued = affected.isEmpty ? [] : await triggerRegeneration(endpointIDs: affected)
    if let sequence = change.sequence {
      ordering.consumed(
        sequence: sequence, instanceID: change.instanceID, triggered: queued,
        resync: change.resync, added: change.addedIdentities, deleted: change.deletedIdentities,
        namesIdentityChanges: change.instanceID != nil ? change.namesIdentityChanges : nil)
      // A CIDR the change brought in maps its addresses once the maps hold its entries.
      if let cidrIPCache, let instanceID = ordering.instanceID {
        cidrIPCache.installAfterPeers(
          through: PolicyEventSequence(sequence: sequence, instanceID: instanceID),
          ordering: ordering)
      }
    }
  }

  /// Returns once this node's ipcache maps every CIDR the policy service's rules named when
  /// the policy watch (re)started (at once without a datapath that takes CIDR entries).
  public func waitUntilCIDRsMapped() async {
    await cidrIPCache?.waitUntilSynced()
  }

  /// Retries CIDR mappings an event left unfinished, every `interval`, and reads the
  /// datapath's entries again every 15th time, until cancelled.
  public func retryCIDRMappings(every interval: Duration = .seconds(2)) async {
    guard let cidrIPCache else { return }
    var round = 0
    while (try? await Task.sleep(for: interval)) != nil {
      round += 1
      await cidrIPCache.retry(ordering: ordering, rereading: round.isMultiple(of: 15))
    }
  }
}
