import TesseraCore

@testable import PolicyService

/// Labels from `source:key=value` strings (`k8s` when no source is given).
func labels(_ texts: [String]) -> LabelSet {
  do { return try LabelSet(parsing: texts) } catch {
    fatalError("bad test labels \(texts): \(error)")
  }
}

/// A pod identity: `k8s:` labels plus the namespace label.
func pod(_ id: UInt32, namespace: String = "default", _ podLabels: String...) -> SecurityIdentity {
  SecurityIdentity(
    id: NumericIdentity(id),
    labels: labels(podLabels + ["k8s:io.kubernetes.pod.namespace=\(namespace)"]))
}

/// An engine (in memory unless given a database) with these identities pushed.
///
/// The node is judged by the rules like any peer (``LocalhostIngress/policy``), so that a
/// test sees what its rules make; what the default (`always`) adds is
/// `LocalhostIngressTests`' subject.
func engine(
  _ identities: [SecurityIdentity], database: PolicyDatabase? = nil,
  localhostIngress: LocalhostIngress = .policy
) throws -> PolicyEngine {
  let engine = try PolicyEngine(database: database, localhostIngress: localhostIngress)
  _ = engine.updateIdentities(added: identities, deleted: [])
  return engine
}

extension PolicyEngine {
  @discardableResult
  func importYAML(_ yaml: String, name: String = "test.yaml") throws -> (
    revision: UInt64, policies: [PolicyRef], affected: AffectedIdentities,
    identities: IdentityChanges
  ) {
    try importPolicies(sourceName: name, content: Array(yaml.utf8))
  }
}

extension EndpointPolicy {
  func ingress(from peer: SecurityIdentity, _ proto: L4Protocol = .tcp, _ port: UInt16 = 80)
    -> PolicyVerdict
  {
    verdict(peer: peer.id, direction: .ingress, proto: proto, port: port)
  }

  func ingress(from peer: NumericIdentity, _ proto: L4Protocol = .tcp, _ port: UInt16 = 80)
    -> PolicyVerdict
  {
    verdict(peer: peer, direction: .ingress, proto: proto, port: port)
  }

  func egress(to peer: SecurityIdentity, _ proto: L4Protocol = .tcp, _ port: UInt16 = 80)
    -> PolicyVerdict
  {
    verdict(peer: peer.id, direction: .egress, proto: proto, port: port)
  }

  func egress(to peer: NumericIdentity, _ proto: L4Protocol = .tcp, _ port: UInt16 = 80)
    -> PolicyVerdict
  {
    verdict(peer: peer, direction: .egress, proto: proto, port: port)
  }
}

/// The error a throwing import produced, as a PolicyError.
func policyError(_ body: () throws -> Void) -> PolicyError? {
  do {
    try body()
    return nil
  } catch let error as PolicyError {
    return error
  } catch {
    return PolicyError(code: .storage, message: "unexpected error \(error)")
  }
}

/// A small, seeded generator, so random tests are reproducible.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
