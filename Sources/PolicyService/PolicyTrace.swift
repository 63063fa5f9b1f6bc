import TesseraCore

/// Why a flow from one identity to another is allowed or denied
/// (`tessera policy trace`): the source's egress and the destination's ingress,
/// each decided by its rules (a matching deny, else a matching allow, else the
/// direction's default), with the rules named.
public struct PolicyTrace: Sendable, Hashable {
  /// A rule of a policy: the policy and the rule's place in it (0-based).
  public struct RuleRef: Sendable, Hashable {
    public var policy: PolicyRef
    public var rule: Int
  }

  /// A section (one `ingress`/`egress`/`ingressDeny`/`egressDeny` entry) that matches the flow.
  public struct SectionMatch: Sendable, Hashable {
    public var policy: PolicyRef
    public var rule: Int
    public var section: Int
    public var verdict: PolicyVerdict
  }

  public enum Decision: String, Sendable, Hashable {
    /// A matching deny section.
    case deny
    /// A matching allow section and no deny.
    case allow
    /// No section matched, the direction is enforced, and the flow is the node reaching one
    /// of its pods, which ``LocalhostIngress/always`` admits.
    case allowNode = "allow-node"
    /// No section matched and a rule selecting the subject enforces the direction.
    case defaultDeny = "default-deny"
    /// No section matched and nothing enforces the direction.
    case defaultAllow = "default-allow"
  }

  public struct Direction: Sendable, Hashable {
    public var direction: TrafficDirection
    public var subject: NumericIdentity
    /// Rules that select the subject and make this direction default-deny.
    public var enforcedBy: [RuleRef] = []
    public var matches: [SectionMatch] = []
    /// The node reaching the subject, admitted whatever the rules (``LocalhostIngress``).
    public var nodeAdmitted = false
    /// The verdict of the endpoint policy the repository computes for the subject
    /// (what the datapath is given); `decision` must agree with it.
    public var computed: PolicyVerdict = .allow

    init(direction: TrafficDirection, subject: NumericIdentity) {
      self.direction = direction
      self.subject = subject
    }

    public var decision: Decision {
      if matches.contains(where: { $0.verdict == .deny }) { return .deny }
      if matches.contains(where: { $0.verdict == .allow }) { return .allow }
      if nodeAdmitted { return .allowNode }
      return enforcedBy.isEmpty ? .defaultAllow : .defaultDeny
    }

    public var verdict: PolicyVerdict {
      decision == .deny || decision == .defaultDeny ? .deny : .allow
    }
  }

  public var egress: Direction
  public var ingress: Direction

  /// Allowed only when the source may send and the destination may receive.
  public var allowed: Bool { egress.verdict == .allow && ingress.verdict == .allow }
}

extension PolicyEngine {
  /// How a flow from `source` to `destination` on `proto`/`port` is decided.
  /// Peers must be in the SelectorCache (a known identity) to be selected. Named ports
  /// resolve through `destinationPorts`, the destination pod's.
  public func trace(
    from source: SecurityIdentity, to destination: SecurityIdentity, proto: L4Protocol,
    port: UInt16, destinationPorts: [NamedPort] = []
  ) -> PolicyTrace {
    state.withLock { repository in
      PolicyTrace(
        egress: repository.trace(
          subject: source, direction: .egress, peer: destination.id, proto: proto, port: port,
          destinationPorts: destinationPorts),
        ingress: repository.trace(
          subject: destination, direction: .ingress, peer: source.id, proto: proto, port: port,
          destinationPorts: destinationPorts))
    }
  }

  /// The labels of a known identity (reserved ones included).
  public func labels(of identity: NumericIdentity) -> LabelSet? {
    state.withLock { $0.cache.labels(of: identity) }
  }
}

extension PolicyEngine {
  /// The known identity whose labels are exactly `labels`.
  public func identity(labeled labels: LabelSet) -> NumericIdentity? {
    state.withLock { $0.cache.identity(labeled: labels) }
  }
}
