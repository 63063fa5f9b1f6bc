import TesseraCore

/// Where namespace and workload labels are written: this node's registry (the
/// default), or the cluster store that every node's registry follows
/// (`ClusterMetadataStore`, with `--cluster-store`). Reads always come from
/// the node's ``WorkloadRegistry``.
public protocol MetadataStore: Sendable {
  func setNamespace(_ name: String, labels: LabelSet) async throws
  /// Whether the namespace had labels.
  func deleteNamespace(_ name: String) async throws -> Bool
  func setWorkload(_ workload: Workload) async throws
  /// Whether the workload existed.
  func deleteWorkload(namespace: String, podName: String) async throws -> Bool
}

extension WorkloadRegistry: MetadataStore {
  public func setWorkload(_ workload: Workload) async throws { try set(workload) }

  public func deleteWorkload(namespace: String, podName: String) async throws -> Bool {
    try delete(namespace: namespace, podName: podName)
  }
}

extension WorkloadRegistry {
  /// Makes the registry hold exactly these namespaces and workloads (a cluster
  /// store's full read). Returns the namespaces whose labels changed.
  public func replaceAll(namespaces: [String: LabelSet], workloads: [Workload]) throws -> Set<
    String
  > {
    let before = Dictionary(uniqueKeysWithValues: self.namespaces().map { ($0.name, $0.labels) })
    for (name, _) in before where namespaces[name] == nil { try deleteNamespace(name) }
    for (name, labels) in namespaces where before[name] != labels {
      try setNamespace(name, labels: labels)
    }
    let wanted = Set(workloads.map { "\($0.namespace)/\($0.podName)" })
    for workload in all() where !wanted.contains("\(workload.namespace)/\(workload.podName)") {
      try delete(namespace: workload.namespace, podName: workload.podName)
    }
    for workload in workloads
    where self.workload(
      namespace: workload.namespace, podName: workload.podName) != workload
    {
      try set(workload)
    }
    return Set(before.keys).union(namespaces.keys).filter { before[$0] != namespaces[$0] }
  }
}
