/// Whether the node may reach its own pods whatever their ingress rules.
///
/// Kubernetes requires it ("traffic to and from the node where a Pod is running is always
/// allowed": kubelet's liveness and readiness probes come from the node), and Cilium's
/// agent does it in Kubernetes mode (`--allow-localhost`).
public enum LocalhostIngress: String, Sendable, CaseIterable {
  /// An endpoint whose ingress is enforced admits the `host` identity on every port,
  /// unless a deny names it.
  case always
  /// The node is judged by the rules like any peer (`fromEntities: [host]` admits it).
  case policy
}
