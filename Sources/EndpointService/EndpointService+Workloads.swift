import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension EndpointServiceHandler {
  public func setWorkload(request: Tessera_Endpoint_V1_SetWorkloadRequest, context: ServerContext)
    async throws -> Tessera_Endpoint_V1_Workload
  {
    let workload = Workload(
      namespace: request.workload.namespace.isEmpty
        ? Endpoint.defaultNamespace : request.workload.namespace,
      podName: request.workload.podName,
      labels: try LabelSet(protoLabels: request.workload.labels))
    guard !workload.podName.isEmpty else {
      throw RPCError(code: .invalidArgument, message: "workload needs a pod name")
    }
    if let reserved = workload.labels.firstSystemLabel {
      throw RPCError(
        code: .invalidArgument,
        message: "label \(reserved): reserved and cidr labels cannot be set on a workload")
    }
    if let propagated = workload.labels.labels.first(where: {
      $0.key.hasPrefix(Endpoint.namespaceLabelsPrefix)
    }) {
      throw RPCError(
        code: .invalidArgument,
        message:
          "label \(propagated) is a namespace label: set it with SetNamespace, not on a workload")
    }
    do { try await metadata.setWorkload(workload) } catch {
      throw (error as? RPCError)
        ?? RPCError(code: .internalError, message: "cannot store workload: \(error)")
    }
    await manager.workloadChanged(namespace: workload.namespace, podName: workload.podName)
    return .init(workload)
  }

  public func getWorkload(request: Tessera_Endpoint_V1_GetWorkloadRequest, context: ServerContext)
    async throws -> Tessera_Endpoint_V1_Workload
  {
    let namespace =
      request.workload.namespace.isEmpty ? Endpoint.defaultNamespace : request.workload.namespace
    guard let workload = workloads.workload(namespace: namespace, podName: request.workload.podName)
    else {
      throw RPCError(
        code: .notFound, message: "no workload \(namespace)/\(request.workload.podName)")
    }
    return .init(workload)
  }

  public func deleteWorkload(
    request: Tessera_Endpoint_V1_DeleteWorkloadRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_DeleteWorkloadResponse {
    let namespace =
      request.workload.namespace.isEmpty ? Endpoint.defaultNamespace : request.workload.namespace
    let existed: Bool
    do {
      existed = try await metadata.deleteWorkload(
        namespace: namespace, podName: request.workload.podName)
    } catch {
      throw (error as? RPCError)
        ?? RPCError(code: .internalError, message: "cannot store workload: \(error)")
    }
    if existed {
      await manager.workloadChanged(namespace: namespace, podName: request.workload.podName)
    }
    return .with { $0.existed = existed }
  }

  public func listWorkloads(
    request: Tessera_Endpoint_V1_ListWorkloadsRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_ListWorkloadsResponse {
    .with { $0.workloads = workloads.all().map(Tessera_Endpoint_V1_Workload.init) }
  }
}
