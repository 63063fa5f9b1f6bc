import TesseraCore
import TesseraRuntime

extension EndpointManager {
  /// Removes every endpoint the selector matches. Idempotent: an unknown
  /// endpoint is not an error. Returns the endpoints removed.
  ///
  /// - Throws: ``EndpointError`` `.upstreamUnavailable` when the datapath or
  ///   identity service cannot be reached; the endpoint stays `disconnecting`
  ///   and the next delete finishes the job.
  @discardableResult
  public func deleteEndpoints(containerID: String, interfaceName: String?)
    async throws(EndpointError) -> [Endpoint]
  {
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
  public func deleteEndpoint(id: UInt64, abandoningDatapathState: Bool = false)
    async throws(EndpointError) -> Endpoint?
  {
    let requested: (action: EndpointAction, endpoint: Endpoint)
    do {
      requested = try registry.update(id: id) {
        (endpoint) throws(EndpointError) -> (EndpointAction, Endpoint) in
        // A delete that could not finish left it disconnecting: this one tells any new waiter too.
        let action =
          endpoint.state == .disconnecting
          ? .failWaiters : try endpoint.stateMachine.handle(.deleteRequested)
        return (action, endpoint)
      }
    } catch {
      return nil
    }
    try await perform(requested.action, on: requested.endpoint)
    do {
      try await datapath.removeEndpoint(id: id)
    } catch  where abandoningDatapathState {
      removeFromDatapathEventually(id)
    }
    // Take the identity out under the lock so concurrent deletes release it once.
    let identity = try? registry.update(id: id) {
      (endpoint) throws(EndpointError) -> NumericIdentity in
      defer { endpoint.identity = .unknown }
      return endpoint.identity
    }
    if let identity, identity != .unknown {
      do {
        try await identities.releaseIdentity(identity)
      } catch {
        _ = try? registry.update(id: id) { (endpoint) throws(EndpointError) in
          endpoint.identity = identity
        }
        throw error
      }
    }
    // A concurrent delete may have finished first; then it cleaned up.
    if let (action, endpoint) = try? transition(id: id, .deleteFinished) {
      try await perform(action, on: endpoint)
    }
    logger.info(
      "endpoint deleted",
      metadata: ["endpoint.id": "\(id)", "container.id": "\(requested.endpoint.containerID)"])
    return requested.endpoint
  }

  /// Retries a datapath removal that failed, with backoff, for up to ten minutes.
  private func removeFromDatapathEventually(_ id: UInt64) {
    logger.warning(
      "datapath unreachable; its state for the endpoint will be removed when it is back",
      metadata: ["endpoint.id": "\(id)"])
    Task {
      var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
      let deadline = ContinuousClock.now + .seconds(600)
      while ContinuousClock.now < deadline {
        try? await backoff.sleep()
        if (try? await datapath.removeEndpoint(id: id)) != nil { return }
      }
    }
  }

  /// CNI GC: deletes the network's endpoints whose container/interface is not listed.
  /// Endpoints of other networks (a second configuration using tessera-cni, Multus)
  /// are not the caller's to judge, and one whose first regeneration has not finished
  /// is an ADD in progress that the runtime's list may predate: both are kept.
  /// `network` "" selects the endpoints created without one (the CLI, older plugins).
  public func garbageCollect(valid: Set<EndpointRegistry.Attachment>, network: String)
    async throws(EndpointError) -> [Endpoint]
  {
    var removed: [Endpoint] = []
    for endpoint in registry.all()
    where (endpoint.network ?? "") == network && endpoint.policyRevision > 0
      && !valid.contains(
        .init(containerID: endpoint.containerID, interfaceName: endpoint.interfaceName))
    {
      if let gone = try await deleteEndpoint(id: endpoint.id) { removed.append(gone) }
    }
    return removed
  }
}
