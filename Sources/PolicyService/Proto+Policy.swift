import TesseraProto

// Conversions from the policy service's domain types to its wire messages.

extension Tessera_Policy_V1_PolicyRef {
  init(_ ref: PolicyRef) {
    self.init()
    namespace = ref.namespace
    name = ref.name
    kind = ref.kind
  }
}

extension Tessera_Policy_V1_Policy {
  init(_ policy: StoredPolicy) {
    self.init()
    ref = .init(policy.ref)
    revision = policy.revision
    sourceJson = policy.sourceJSON
    ruleCount = UInt32(clamping: policy.ruleCount)
  }
}

extension Tessera_Policy_V1_TraceDirection {
  init(_ direction: PolicyTrace.Direction) {
    self.init()
    self.direction = Tessera_Common_V1_Direction(direction.direction)
    subjectIdentity = direction.subject.rawValue
    decision = direction.decision.rawValue
    verdict = direction.verdict == .deny ? .deny : .allow
    computedVerdict = direction.computed == .deny ? .deny : .allow
    enforcedBy = direction.enforcedBy.map { rule in
      .with {
        $0.policy = .init(rule.policy)
        $0.rule = UInt32(rule.rule)
      }
    }
    matches = direction.matches.map { match in
      .with {
        $0.policy = .init(match.policy)
        $0.rule = UInt32(match.rule)
        $0.section = UInt32(match.section)
        $0.verdict = match.verdict == .deny ? .deny : .allow
      }
    }
  }
}

extension PolicyDeletion {
  /// The deletion a request asks for: exactly one of a name, `all` and a label selector.
  init(_ request: Tessera_Policy_V1_DeletePolicyRequest) throws(PolicyError) {
    let chosen = [!request.name.isEmpty, request.all, !request.labelSelector.isEmpty]
      .filter { $0 }.count
    guard chosen == 1 else {
      throw PolicyError(
        code: .invalidRequest,
        message: "name one policy, or ask for all policies or a label selector: exactly one")
    }
    let namespace = request.hasNamespace_p ? request.namespace : nil
    if !request.name.isEmpty {
      self = .named(namespace: request.namespace, name: request.name)
    } else if request.all {
      self = .all(namespace: namespace)
    } else {
      self = .matching(try EndpointSelector(parsing: request.labelSelector), namespace: namespace)
    }
  }
}
