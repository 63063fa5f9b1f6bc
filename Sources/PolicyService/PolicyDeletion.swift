import Foundation
public import TesseraCore

/// Which policies one delete removes. All of them go in one revision (one transaction in
/// the cluster store): peers never see some of them gone and others not.
public enum PolicyDeletion: Sendable, Hashable {
  /// One policy; deleting a policy that does not exist is `notFound`.
  case named(namespace: String, name: String)
  /// Every policy, or every policy of one namespace (`""`: the cluster-wide ones).
  case all(namespace: String?)
  /// The policies whose labels (``StoredPolicy/labels``) the selector matches, optionally of
  /// one namespace, as `kubectl delete -l` and `cilium-dbg policy delete <labels>` do.
  case matching(EndpointSelector, namespace: String?)

  /// Whether this deletion removes `policy`.
  public func selects(_ policy: StoredPolicy) -> Bool {
    switch self {
    case .named(let namespace, let name):
      return policy.ref.namespace == namespace && policy.ref.name == name
    case .all(let namespace):
      return namespace.map { $0 == policy.ref.namespace } ?? true
    case .matching(let selector, let namespace):
      return (namespace.map { $0 == policy.ref.namespace } ?? true)
        && selector.matches(policy.labels)
    }
  }
}

extension StoredPolicy {
  /// The policy's labels, for selecting policies: its `metadata.labels` (source `k8s`) and
  /// the labels Cilium derives for every rule of a policy (`io.cilium.k8s.policy.name`,
  /// `.namespace`, `.derived-from`). Labels that are not valid label text are left out.
  public var labels: LabelSet {
    var labels = [
      Label(source: Label.Source.kubernetes, key: "io.cilium.k8s.policy.name", value: ref.name),
      Label(
        source: Label.Source.kubernetes, key: "io.cilium.k8s.policy.derived-from", value: ref.kind),
    ]
    if !ref.namespace.isEmpty {
      labels.append(
        Label(
          source: Label.Source.kubernetes, key: "io.cilium.k8s.policy.namespace",
          value: ref.namespace))
    }
    if let document = try? JSONSerialization.jsonObject(with: Data(sourceJSON.utf8))
      as? [String: Any],
      let metadata = document["metadata"] as? [String: Any],
      let declared = metadata["labels"] as? [String: Any]
    {
      for (key, value) in declared {
        guard let value = value as? String else { continue }
        let label = Label(source: Label.Source.kubernetes, key: key, value: value)
        if (try? label.validate()) != nil, !labels.contains(where: { $0.key == key }) {
          labels.append(label)
        }
      }
    }
    return (try? LabelSet(labels)) ?? LabelSet(validated: [])
  }
}
