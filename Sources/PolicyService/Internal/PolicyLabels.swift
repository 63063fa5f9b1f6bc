/// Label keys with a meaning in policy (Cilium's `pkg/k8s/apis/cilium.io` constants).
enum PolicyLabels {
  /// Every pod identity carries `k8s:io.kubernetes.pod.namespace=<namespace>`.
  static let podNamespace = "io.kubernetes.pod.namespace"
  /// Namespace labels are propagated to pods as `k8s:io.cilium.k8s.namespace.labels.<key>=<value>`.
  static let namespaceLabelsPrefix = "io.cilium.k8s.namespace.labels."
  /// The label Kubernetes sets on every namespace to its name.
  static let namespaceNameLabel = "kubernetes.io/metadata.name"

  static let podNamespaceK8s = SelectorKey.k8s(podNamespace)
  static let podNamespaceAny = SelectorKey.any(podNamespace)
  static let initK8s = SelectorKey.reserved("init")
}
