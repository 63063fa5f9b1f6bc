import TesseraCore

extension EndpointManager {
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
        logger.error(
          "unreadable endpoint state set aside; those endpoints are not restored",
          metadata: ["files": "\(loaded.unreadable)"])
      }
    } catch {
      throw EndpointError(
        code: .invalidArgument, message: "cannot read endpoint state from \(store.directory)",
        cause: error)
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
      let result = try? registry.update(id: endpoint.id) {
        (e) throws(EndpointError) -> (EndpointAction, Endpoint) in
        let action = try e.stateMachine.handle(.restored(needsRegeneration: !inDatapath))
        if action == .regenerate { e.wantedGeneration += 1 }
        return (action, e)
      }
      if inDatapath {
        ordering.realized(
          endpointID: endpoint.id, identity: endpoint.identity,
          generation: endpoint.realizedGeneration)
      }
      if let (action, restored) = result { try await perform(action, on: restored) }
    }
    try await syncIdentityReferences()
    endpointsChanged.signal()
    await labelNamespaceNames()
    logger.info(
      "restored endpoints",
      metadata: ["restored": "\(saved.count - removed)", "removed": "\(removed)"])
    return (saved.count - removed, removed)
  }

  /// Re-labels the endpoints saved before pods carried their namespace's name label
  /// (``MetadataResolver/named(_:_:)``), namespace by namespace, so that a policy naming it
  /// sees every pod's namespace after an upgrade too.
  private func labelNamespaceNames() async {
    let key = Endpoint.namespaceLabelsPrefix + MetadataResolver.namespaceNameLabel
    let unnamed = Set(
      registry.all().filter { !$0.namespace.isEmpty && $0.labels[key] == nil }.map(\.namespace))
    for namespace in unnamed.sorted() { await namespaceChanged(namespace) }
  }

  /// Tells the identity service exactly which identities this node's endpoints
  /// hold. A crash between allocating an identity and recording the endpoint
  /// would otherwise leak that reference forever; restore runs before the
  /// node serves, so nothing is being created meanwhile.
  private func syncIdentityReferences() async throws(EndpointError) {
    var held: [NumericIdentity: Int] = [:]
    var resolved: [String: SecurityIdentity] = [:]
    for endpoint in registry.all()
    where endpoint.identity != .unknown && !endpoint.identity.isReserved {
      held[endpoint.identity, default: 0] += 1
      resolved[endpoint.labels.canonicalKey] = SecurityIdentity(
        id: endpoint.identity, labels: endpoint.identityLabels)
    }
    try await identities.syncReferences(held: held, resolved: resolved)
  }
}
