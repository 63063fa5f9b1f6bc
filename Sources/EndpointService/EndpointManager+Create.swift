import TesseraCore

extension EndpointManager {
  /// Registers the endpoint, resolves its labels and identity and regenerates
  /// it. With `sync`, returns only once its policy is in force in the datapath.
  ///
  /// On failure nothing is left behind: the identity reference is released,
  /// datapath state removed and the endpoint forgotten.
  ///
  /// The steps follow the ``EndpointStateMachine``: `labelsChanged` asks for the
  /// identity (``resolveIdentity(of:)``), `identityResolved` for a regeneration
  /// (``Regenerator``), `regenerationFinished` resumes this call.
  public func createEndpoint(_ spec: EndpointSpec, sync: Bool) async throws(EndpointError)
    -> Endpoint
  {
    try spec.validate()
    let started = ContinuousClock.now
    let deadline = started + configuration.requestTimeout
    let endpoint = try registry.register(spec)
    var logger = self.logger
    logger[metadataKey: "endpoint.id"] = "\(endpoint.id)"
    logger[metadataKey: "container.id"] = "\(spec.containerID)"
    logger.debug("endpoint registered", metadata: ["state": "\(endpoint.state.rawValue)"])

    let flow: @Sendable () async throws(EndpointError) -> Void = {
      [self] () async throws(EndpointError) in
      let workloadLabels = try await metadata.resolve(
        namespace: spec.namespace, podName: spec.podName, deadline: deadline)
      let labels = Endpoint.labels(
        request: spec.labels, workload: workloadLabels, namespace: spec.namespace)
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
      EndpointMetrics.createDuration(result: "error").record(
        duration: ContinuousClock.now - started)
      throw error
    }
    guard let ready = registry.endpoint(id: endpoint.id) else {
      throw EndpointError(
        code: .notFound, message: "endpoint \(endpoint.id) was deleted while it was being created")
    }
    EndpointMetrics.createDuration(result: "ok").record(duration: ContinuousClock.now - started)
    EndpointMetrics.endpoints.record(registry.count)
    logger.info(
      "endpoint ready",
      metadata: [
        "identity": "\(ready.identity)", "policyRevision": "\(ready.policyRevision)",
        "took": "\(ContinuousClock.now - started)",
      ])
    return ready
  }
}
