import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension EndpointServiceHandler {
  public func createEndpoint(
    request: Tessera_Endpoint_V1_CreateEndpointRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_CreateEndpointResponse {
    try requireServing()
    let spec = EndpointSpec(
      containerID: request.containerID,
      interfaceName: request.interfaceName.isEmpty ? "eth0" : request.interfaceName,
      hostInterface: request.hostInterface,
      ips: try request.ips.map { text throws(RPCError) in try IPPrefix(parsing: text) },
      namespace: request.namespace.isEmpty ? Endpoint.defaultNamespace : request.namespace,
      podName: request.podName,
      netns: request.netns,
      labels: try LabelSet(protoLabels: request.labels), network: request.network,
      namedPorts: try request.namedPorts.map { port throws(RPCError) in
        try NamedPort(proto: port)
      })
    let manager = self.manager
    if let deletionQueue,
      await deletionQueue.drain(
        manager, only: .init(containerID: spec.containerID, interfaceName: spec.interfaceName),
        logger: logger) > 0
    {
      throw RPCError(
        code: .unavailable,
        message:
          "a DEL of container \(spec.containerID) queued earlier cannot run yet (a service it needs is unreachable); try again"
      )
    }
    let endpoint = try await cancellable(context) {
      try await manager.createEndpoint(spec, sync: request.sync)
    }
    return .with { $0.endpoint = .init(endpoint) }
  }
}
