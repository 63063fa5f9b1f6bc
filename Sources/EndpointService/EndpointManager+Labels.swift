import TesseraCore

extension EndpointManager {
  /// docs/architecture.md §1 step 3: apply labels (a new identity revision); the
  /// state machine then asks for the identity (``resolveIdentity(of:)``).
  func applyLabels(endpointID: UInt64, labels: LabelSet, requestLabels: LabelSet?)
    async throws(EndpointError)
  {
    let (action, endpoint) = try registry.update(id: endpointID) {
      (endpoint) throws(EndpointError) -> (EndpointAction, Endpoint) in
      let action = try endpoint.stateMachine.handle(.labelsChanged)
      endpoint.labels = labels
      if let requestLabels { endpoint.requestLabels = requestLabels }
      endpoint.identityRevision += 1
      return (action, endpoint)
    }
    try await perform(action, on: endpoint)
  }

  /// docs/architecture.md §1 steps 4–5: resolve the identity of the endpoint's
  /// labels, set it unless a newer revision overtook this one, release the
  /// previous identity; the state machine then asks for a regeneration.
  func resolveIdentity(of endpoint: Endpoint) async throws(EndpointError) {
    let endpointID = endpoint.id
    let revision = endpoint.identityRevision
    let allocationStart = ContinuousClock.now
    let (identity, isNew) = try await identities.allocateIdentity(labels: endpoint.labels)
    let allocationTime = ContinuousClock.now - allocationStart
    if isNew { ordering.expectArrival(of: identity) }

    enum Outcome {
      case applied(previous: NumericIdentity, action: EndpointAction, endpoint: Endpoint)
      case stale, gone
    }
    let outcome: Outcome
    do {
      outcome = try registry.update(id: endpointID) { (endpoint) throws(EndpointError) -> Outcome in
        guard endpoint.state != .disconnecting, endpoint.state != .disconnected else {
          return .gone
        }
        guard endpoint.identityRevision == revision else { return .stale }
        let action = try endpoint.stateMachine.handle(.identityResolved)
        let previous = endpoint.identity
        endpoint.identity = identity.id
        endpoint.identityLabels = identity.labels
        endpoint.wantedGeneration += 1
        return .applied(previous: previous, action: action, endpoint: endpoint)
      }
    } catch {
      outcome = .gone
    }
    switch outcome {
    case .stale, .gone:
      // The reference this allocation took belongs to nobody: give it back.
      try? await identities.releaseIdentity(identity.id)
      if case .stale = outcome {
        throw EndpointError(
          code: .staleRevision,
          message: "labels of endpoint \(endpointID) changed again while its identity was resolved")
      }
      throw EndpointError(
        code: .notFound,
        message: "endpoint \(endpointID) was deleted while its identity was resolved")
    case .applied(let previous, let action, let resolved):
      logger.debug(
        "identity resolved",
        metadata: [
          "endpoint.id": "\(endpointID)", "identity": "\(identity.id)", "isNew": "\(isNew)",
          "previous": "\(previous)",
          "allocation": "\(allocationTime)",
        ])
      persist(endpointID)
      if previous != identity.id, let ports = resolved.namedPorts, !ports.isEmpty {
        // Its ports now open egress rows towards its new identity, no longer the old one.
        await namedPortsChanged(Set(ports.map(\.name)), except: endpointID)
      }
      if previous != .unknown {
        // Allocation took a reference even when the identity did not change; drop the old one.
        do { try await identities.releaseIdentity(previous) } catch {
          logger.warning(
            "could not release previous identity",
            metadata: ["identity": "\(previous)", "error": "\(error)"])
        }
      }
      try await perform(action, on: resolved)
    }
  }

  /// Replaces the caller-given labels and re-resolves the identity without
  /// recreating the endpoint. With `sync`, waits for the resulting regeneration.
  public func updateLabels(endpointID: UInt64, requestLabels: LabelSet, sync: Bool)
    async throws(EndpointError) -> Endpoint
  {
    guard let endpoint = registry.endpoint(id: endpointID) else {
      throw EndpointError(code: .notFound, message: "no endpoint \(endpointID)")
    }
    let probe = EndpointSpec(
      containerID: endpoint.containerID, interfaceName: endpoint.interfaceName, ips: [],
      namespace: endpoint.namespace, labels: requestLabels)
    try probe.validate()
    let deadline = ContinuousClock.now + configuration.requestTimeout
    let workload = try await metadata.resolve(
      namespace: endpoint.namespace, podName: endpoint.podName, deadline: .now)
    let labels = Endpoint.labels(
      request: requestLabels, workload: workload, namespace: endpoint.namespace)
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

  /// Re-resolves every endpoint of a namespace whose labels changed.
  public func namespaceChanged(_ namespace: String) async {
    for endpoint in registry.all() where endpoint.namespace == namespace {
      do {
        _ = try await updateLabels(
          endpointID: endpoint.id, requestLabels: endpoint.requestLabels, sync: false)
      } catch {
        logger.warning(
          "relabel after namespace change failed",
          metadata: ["endpoint.id": "\(endpoint.id)", "error": "\(error)"])
      }
    }
  }

  /// Re-resolves every endpoint of a workload whose registry labels changed.
  public func workloadChanged(namespace: String, podName: String) async {
    for endpoint in registry.all()
    where endpoint.namespace == namespace && endpoint.podName == podName {
      do {
        _ = try await updateLabels(
          endpointID: endpoint.id, requestLabels: endpoint.requestLabels, sync: false)
      } catch {
        logger.warning(
          "relabel after workload change failed",
          metadata: ["endpoint.id": "\(endpoint.id)", "error": "\(error)"])
      }
    }
  }
}
