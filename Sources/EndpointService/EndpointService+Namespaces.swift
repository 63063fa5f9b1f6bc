import GRPCCore
import TesseraCore
import TesseraProto
import TesseraRuntime

extension EndpointServiceHandler {
  /// A Kubernetes namespace name: a DNS label (RFC 1123), at most 63 bytes.
  static func validateNamespaceName(_ name: String) throws(RPCError) {
    let valid =
      !name.isEmpty && name.utf8.count <= 63
      && name.utf8.allSatisfy {
        ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d
      }
      && name.first != "-" && name.last != "-"
    guard valid else {
      throw RPCError(
        code: .invalidArgument,
        message:
          "namespace '\(name)' is not a DNS label (a-z, 0-9, '-', at most 63, no leading or trailing '-')"
      )
    }
  }

  public func setNamespace(request: Tessera_Endpoint_V1_SetNamespaceRequest, context: ServerContext)
    async throws -> Tessera_Endpoint_V1_Namespace
  {
    let name = request.namespace.name
    try Self.validateNamespaceName(name)
    let labels = try LabelSet(protoLabels: request.namespace.labels)
    if labels.hasReservedLabel {
      throw RPCError(
        code: .invalidArgument, message: "reserved labels cannot be set on a namespace")
    }
    // Each becomes k8s:io.cilium.k8s.namespace.labels.<key> on the namespace's pods: that must be a valid label too.
    do { _ = try LabelSet(MetadataResolver.propagated(labels).labels) } catch {
      throw RPCError(
        code: .invalidArgument,
        message: "namespace label too long once propagated to pods: \(error)")
    }
    do { try await metadata.setNamespace(name, labels: labels) } catch {
      throw (error as? RPCError)
        ?? RPCError(code: .internalError, message: "cannot store namespace: \(error)")
    }
    await manager.namespaceChanged(name)
    return .with {
      $0.name = name
      $0.labels = labels.proto
    }
  }

  public func getNamespace(request: Tessera_Endpoint_V1_GetNamespaceRequest, context: ServerContext)
    async throws -> Tessera_Endpoint_V1_Namespace
  {
    guard let found = workloads.namespaces().first(where: { $0.name == request.name }) else {
      throw RPCError(code: .notFound, message: "no labels set for namespace \(request.name)")
    }
    return .with {
      $0.name = found.name
      $0.labels = found.labels.proto
    }
  }

  public func deleteNamespace(
    request: Tessera_Endpoint_V1_DeleteNamespaceRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_DeleteNamespaceResponse {
    let existed: Bool
    do { existed = try await metadata.deleteNamespace(request.name) } catch {
      throw (error as? RPCError)
        ?? RPCError(code: .internalError, message: "cannot store namespace: \(error)")
    }
    if existed { await manager.namespaceChanged(request.name) }
    return .with { $0.existed = existed }
  }

  public func listNamespaces(
    request: Tessera_Endpoint_V1_ListNamespacesRequest, context: ServerContext
  ) async throws -> Tessera_Endpoint_V1_ListNamespacesResponse {
    .with {
      $0.namespaces = workloads.namespaces().map { namespace in
        .with {
          $0.name = namespace.name
          $0.labels = namespace.labels.proto
        }
      }
    }
  }
}
