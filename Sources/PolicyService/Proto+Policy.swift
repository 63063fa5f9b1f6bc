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
