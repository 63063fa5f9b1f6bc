import TesseraCore

extension PolicyManifest {
  /// Reads a Kubernetes NetworkPolicy `spec` into one rule, the way Cilium's
  /// `ParseNetworkPolicy` (`pkg/k8s/network_policy.go`) does, with Kubernetes' `policyTypes`:
  ///
  /// - `policyTypes` defaults to `Ingress`, plus `Egress` when there are egress rules. A
  ///   direction listed there is default-deny; rules of a direction not listed are ignored.
  /// - A rule with no `from`/`to` peers matches every peer (wildcard); one with no `ports`
  ///   matches every port. `ingress: [{}]` therefore allows everything.
  /// - `podSelector` alone selects pods in the policy's namespace; `namespaceSelector`
  ///   selects pods by their namespace's labels (`{}`: every namespace), and with a
  ///   `podSelector` in the same peer both must hold.
  static func decodeNetworkPolicySpec(_ field: ManifestField, namespace: String) throws(FieldError)
    -> PolicyRule
  {
    let spec = try field.object(known: ["podSelector", "policyTypes", "ingress", "egress"])
    var subject = EndpointSelector()
    if let podSelector = spec["podSelector"] {
      subject = EndpointSelector(try decodeLabelSelector(podSelector, style: .kubernetes))
    }
    subject = subject.replacingMatch(PolicyLabels.podNamespaceK8s, with: namespace)

    var policyTypes: Set<TrafficDirection> = []
    for typeField in try spec.list("policyTypes") {
      switch try typeField.string() {
      case "Ingress": policyTypes.insert(.ingress)
      case "Egress": policyTypes.insert(.egress)
      case let other:
        throw typeField.error("unsupported value \"\(other)\" (want \"Ingress\" or \"Egress\")")
      }
    }
    let ingressRules = try spec.list("ingress")
    let egressRules = try spec.list("egress")
    if policyTypes.isEmpty {
      policyTypes.insert(.ingress)
      if !egressRules.isEmpty { policyTypes.insert(.egress) }
    }

    var sections: [PolicySection] = []
    for (direction, rules) in [(TrafficDirection.ingress, ingressRules), (.egress, egressRules)] {
      // Decode even the rules of an unlisted direction, so bad input is still rejected.
      for ruleField in rules {
        let section = try decodeNetworkPolicyRule(
          ruleField, direction: direction, namespace: namespace)
        if policyTypes.contains(direction) { sections.append(section) }
      }
    }
    return PolicyRule(
      subject: subject, enforcesIngress: policyTypes.contains(.ingress),
      enforcesEgress: policyTypes.contains(.egress),
      sections: sections)
  }

  private static func decodeNetworkPolicyRule(
    _ field: ManifestField, direction: TrafficDirection, namespace: String
  ) throws(FieldError) -> PolicySection {
    let peersKey = direction == .ingress ? "from" : "to"
    let rule = try field.object(known: [peersKey, "ports"])
    var peers: [PeerSelector] = []
    for peerField in try rule.list(peersKey) {
      peers += try decodeNetworkPolicyPeer(peerField, namespace: namespace)
    }
    var ports: [PortProtocol] = []
    for portField in try rule.list("ports") {
      ports.append(try decodeKubernetesPort(portField))
    }
    return PolicySection(
      direction: direction, verdict: .allow, peers: peers.isEmpty ? [.all] : unique(peers),
      ports: ports.isEmpty ? [.any] : unique(ports))
  }

  private static func decodeNetworkPolicyPeer(_ field: ManifestField, namespace: String)
    throws(FieldError) -> [PeerSelector]
  {
    let peer = try field.object(known: ["podSelector", "namespaceSelector", "ipBlock"])
    if let ipBlockField = peer["ipBlock"] {
      if peer.has("podSelector") || peer.has("namespaceSelector") {
        throw field.error("may not specify both ipBlock and another peer")
      }
      let ipBlock = try ipBlockField.object(known: ["cidr", "except"])
      return try cidrPeers(ipBlock.required("cidr"), except: ipBlock["except"]?.list() ?? [])
    }
    let podRequirements = try peer["podSelector"].map { (field) throws(FieldError) in
      try decodeLabelSelector(field, style: .kubernetes)
    }
    if let namespaceField = peer["namespaceSelector"] {
      // A NetworkPolicy peer only ever selects pods, whatever its terms: `{}`, `NotIn` or
      // `DoesNotExist` alone would otherwise match world, host and every reserved identity.
      let requirements = try decodeLabelSelector(namespaceField, style: .kubernetes).map(
        namespaceRequirement)
      return [.selector(requiringPod(EndpointSelector(requirements + (podRequirements ?? []))))]
    }
    guard let podRequirements else {
      throw field.error("must specify a peer (podSelector, namespaceSelector or ipBlock)")
    }
    return [
      .selector(
        EndpointSelector(podRequirements).replacingMatch(
          PolicyLabels.podNamespaceK8s, with: namespace))
    ]
  }

  /// A namespace label `key` becomes the pod label `k8s:io.cilium.k8s.namespace.labels.<key>`;
  /// `kubernetes.io/metadata.name`, which Kubernetes sets to the namespace's name, becomes the
  /// pod's namespace label, which every pod identity carries.
  private static func namespaceRequirement(_ requirement: LabelRequirement) -> LabelRequirement {
    var translated = requirement
    if requirement.key.key == PolicyLabels.namespaceNameLabel {
      translated.key = PolicyLabels.podNamespaceK8s
    } else {
      translated.key = .k8s(PolicyLabels.namespaceLabelsPrefix + requirement.key.key)
    }
    return translated
  }
}
