import GRPCCore
import TesseraProto

extension PolicyServiceHandler {
  public func importPolicy(request: Tessera_Policy_V1_ImportPolicyRequest, context: ServerContext)
    async throws -> Tessera_Policy_V1_ImportPolicyResponse
  {
    let source = request.sourceName.isEmpty ? "<request>" : request.sourceName
    if let cluster {
      // Applied (and announced to watchers) by this replica's watch before it returns.
      let result = try await cluster.importPolicies(
        sourceName: source, content: Array(request.content))
      return .with {
        $0.revision = result.revision
        $0.policies = result.policies.map(Tessera_Policy_V1_PolicyRef.init)
      }
    }
    let result = try events.serialized { () throws(PolicyError) in
      let result = try engine.importPolicies(sourceName: source, content: Array(request.content))
      events.publish(
        revision: result.revision, affected: result.affected, added: result.identities.added,
        deleted: result.identities.deleted)
      return result
    }
    logger.info(
      "policies imported",
      metadata: [
        "source": "\(source)", "revision": "\(result.revision)",
        "count": "\(result.policies.count)",
      ])
    return .with {
      $0.revision = result.revision
      $0.policies = result.policies.map(Tessera_Policy_V1_PolicyRef.init)
    }
  }

  public func deletePolicy(request: Tessera_Policy_V1_DeletePolicyRequest, context: ServerContext)
    async throws -> Tessera_Policy_V1_DeletePolicyResponse
  {
    let deletion = try PolicyDeletion(request)
    if let cluster {
      let result = try await cluster.deletePolicies(deletion)
      return .with {
        $0.revision = result.revision
        $0.deleted = result.deleted.map(Tessera_Policy_V1_PolicyRef.init)
      }
    }
    let result = try events.serialized { () throws(PolicyError) in
      let result = try engine.deletePolicies(deletion)
      if !result.deleted.isEmpty {
        events.publish(
          revision: result.revision, affected: result.affected, added: result.identities.added,
          deleted: result.identities.deleted)
      }
      return result
    }
    return .with {
      $0.revision = result.revision
      $0.deleted = result.deleted.map(Tessera_Policy_V1_PolicyRef.init)
    }
  }

  public func getPolicy(request: Tessera_Policy_V1_GetPolicyRequest, context: ServerContext)
    async throws -> Tessera_Policy_V1_Policy
  {
    guard let policy = engine.policy(namespace: request.namespace, name: request.name) else {
      throw RPCError(
        code: .notFound,
        message:
          "no policy \(request.namespace.isEmpty ? "" : request.namespace + "/")\(request.name)")
    }
    return .init(policy)
  }

  public func listPolicies(request: Tessera_Policy_V1_ListPoliciesRequest, context: ServerContext)
    async throws -> Tessera_Policy_V1_ListPoliciesResponse
  {
    .with {
      $0.revision = engine.revision
      $0.policies = engine.policies().map(Tessera_Policy_V1_Policy.init)
    }
  }
}
