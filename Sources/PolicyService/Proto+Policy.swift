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
    self.direction = direction.direction == .ingress ? .ingress : .egress
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
