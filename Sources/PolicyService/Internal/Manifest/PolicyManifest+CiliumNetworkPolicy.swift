import TesseraCore

extension PolicyManifest {
  private static let notSupported = "is not supported yet"

  /// Reads one Cilium rule (`spec` or an element of `specs`).
  ///
  /// Follows Cilium's `ParseToCiliumRule` (`pkg/k8s/apis/cilium.io/utils/utils.go`): a
  /// namespaced rule's endpointSelector always gets `k8s:io.kubernetes.pod.namespace=<ns>`,
  /// and its peer selectors are scoped the same way unless they name the namespace label,
  /// a namespace-labels key (`io.cilium.k8s.namespace.labels.*`) or a `reserved:` label
  /// (the first two still select only pods, see ``PeerScope``).
  /// Cluster-wide peer selectors that name no namespace require a namespace label to exist
  /// (so `{}` is "every pod", not "everything"), except in a rule for `reserved:init`.
  ///
  /// - Parameters:
  ///   - namespace: the policy's namespace, nil for a cluster-wide policy.
  ///   - legacy: read the forms older versions accepted instead of refusing them (stored
  ///     policies): a rule without entries, a port rule without ports (every port), two peer
  ///     kinds in one element (their union).
  static func decodeCiliumRule(
    _ field: ManifestField, namespace: String?, legacy: Bool = false
  ) throws(FieldError) -> PolicyRule {
    let rule = try field.object(
      known: [
        "endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny", "labels",
        "description", "enableDefaultDeny", "log",
      ],
      unsupported: ["nodeSelector": "nodeSelector (host policies) \(notSupported)"])
    if let description = rule["description"] { _ = try description.string() }
    _ = try rule.list("labels")
    if let log = rule["log"] { _ = try log.anyObject() }

    var subject = EndpointSelector(
      try decodeLabelSelector(rule.required("endpointSelector"), style: .cilium))
    if let namespace {
      subject = subject.replacingMatch(PolicyLabels.podNamespaceK8s, with: namespace)
    }
    let scope = PeerScope(namespace: namespace, matchesInit: subject.hasKey(PolicyLabels.initK8s))

    var sections: [PolicySection] = []
    var directions: Set<TrafficDirection> = []
    for (key, direction, verdict) in [
      ("ingress", TrafficDirection.ingress, PolicyVerdict.allow), ("ingressDeny", .ingress, .deny),
      ("egress", .egress, .allow), ("egressDeny", .egress, .deny),
    ] {
      let entries = try rule.list(key)
      if !entries.isEmpty { directions.insert(direction) }
      for entry in entries {
        if let section = try decodeCiliumSection(
          entry, direction: direction, verdict: verdict, scope: scope, legacy: legacy)
        {
          sections.append(section)
        }
      }
    }

    // Cilium ≥ 1.17 (`Rule.Validate`) refuses a rule that has no entry in any section: such a rule
    // (only an endpointSelector, or `ingress: []`) enforces nothing, and accepting it would let
    // an operator believe a default-deny is in force. Checked after the sections are read, so a
    // malformed field is reported first.
    if directions.isEmpty && !legacy {
      throw field.error(emptyRuleProblem)
    }

    // Cilium's `enableDefaultDeny`: unset means "yes" for each direction the rule has entries in.
    var defaultDeny: [TrafficDirection: Bool] = [:]
    if let enable = rule["enableDefaultDeny"] {
      let object = try enable.object(known: ["ingress", "egress"])
      if let ingress = object["ingress"] { defaultDeny[.ingress] = try ingress.bool() }
      if let egress = object["egress"] { defaultDeny[.egress] = try egress.bool() }
    }
    return PolicyRule(
      subject: subject,
      enforcesIngress: directions.contains(.ingress) && defaultDeny[.ingress] ?? true,
      enforcesEgress: directions.contains(.egress) && defaultDeny[.egress] ?? true,
      sections: sections)
  }

  /// Cilium's message for a rule without ingress, ingressDeny, egress or egressDeny entries.
  static let emptyRuleProblem =
    "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny"

  struct PeerScope {
    var namespace: String?
    var matchesInit: Bool

    /// Cilium's `getEndpointSelector`, with one correction: a selector that names the
    /// namespace label or a namespace-labels key itself, which Cilium leaves as written, still
    /// selects only pods. Written with only `NotIn`/`DoesNotExist` terms (`namespace notin
    /// (kube-system)`), it would otherwise match every identity without the label: world,
    /// host and every other reserved identity. A selector that names a `reserved:` label
    /// selects by exactly those labels, as in Cilium, and so does every peer of a cluster-wide
    /// rule for `reserved:init` endpoints (Cilium leaves those unscoped).
    func scope(_ selector: EndpointSelector) -> EndpointSelector {
      if selector.requirements.contains(where: { $0.key.source == Label.Source.reserved }) {
        return selector
      }
      if selector.hasKey(PolicyLabels.podNamespaceK8s)
        || selector.hasKey(PolicyLabels.podNamespaceAny)
      {
        return PolicyManifest.requiringPod(selector)
      }
      guard let namespace else {
        return matchesInit
          ? selector
          : selector.adding(LabelRequirement(key: PolicyLabels.podNamespaceK8s, op: .exists))
      }
      if selector.hasKeyPrefix(
        source: Label.Source.kubernetes, keyPrefix: PolicyLabels.namespaceLabelsPrefix)
        || selector.hasKeyPrefix(
          source: Label.Source.any, keyPrefix: PolicyLabels.namespaceLabelsPrefix)
      {
        return PolicyManifest.requiringPod(selector)
      }
      return selector.adding(
        LabelRequirement(key: PolicyLabels.podNamespaceK8s, op: .in, values: [namespace]))
    }
  }

  /// Reads one element of `ingress`, `ingressDeny`, `egress` or `egressDeny`.
  ///
  /// An element with no peer field but with `toPorts` or `icmps` applies to every peer; one
  /// with neither (`{}`) allows nothing (it only makes the direction default-deny). An element
  /// with peers but no `toPorts` or `icmps` covers every port and protocol; `icmps` limits it
  /// to the ICMP types listed (and cannot be combined with `toPorts`, as in Cilium). A peer field given as an
  /// empty list (`fromEntities: []`) selects no peer, so the element matches nothing (Cilium
  /// since 1.15, cilium/cilium#29608); it never widens to every peer. As in Cilium, one
  /// element names one kind of peer (`fromEndpoints`, `fromEntities` or `fromCIDR`/`fromCIDRSet`).
  private static func decodeCiliumSection(
    _ field: ManifestField, direction: TrafficDirection, verdict: PolicyVerdict, scope: PeerScope,
    legacy: Bool
  ) throws(FieldError) -> PolicySection? {
    let isIngress = direction == .ingress
    let from = isIngress ? "from" : "to"
    let known: Set<String> = [
      "\(from)Endpoints", "\(from)Entities", "\(from)CIDR", "\(from)CIDRSet", "toPorts", "icmps",
    ]
    var unsupported: [String: String] = [
      // Cilium 1.19 rejects them too (cilium/cilium#42615, #43088): a requirement
      // narrowed every rule selecting the pod, in any policy, which made policies hard to
      // read (and let one policy's deny requirement cancel another's deny).
      "\(from)Requires":
        "\(from)Requires was removed in Cilium 1.19 (deprecated since 1.17); add the requirement to each \(from)Endpoints selector instead",
      "\(from)Groups": "\(from)Groups \(notSupported)",
      "\(from)Nodes": "\(from)Nodes \(notSupported)",
      "authentication": "authentication \(notSupported)",
    ]
    if !isIngress {
      unsupported["toServices"] = "toServices \(notSupported)"
      unsupported["toFQDNs"] = "toFQDNs \(notSupported)"
    }
    let object = try field.object(known: known, unsupported: unsupported)

    let peerKinds = ["\(from)Endpoints", "\(from)Entities", "\(from)CIDR", "\(from)CIDRSet"]
    let present = peerKinds.filter { object.has($0) }
    var nonEmpty: [String] = []
    for key in present where try !object.list(key).isEmpty { nonEmpty.append(key) }
    if nonEmpty.count > 1 && !legacy {
      throw field.error(
        "combining \(nonEmpty[0]) and \(nonEmpty[1]) in one rule is not supported (Cilium refuses it too); write one rule for each"
      )
    }
    // An explicitly empty peer list selects nobody: the element matches no traffic (the rest is
    // still read, so bad input in it is reported).
    let selectsNobody = nonEmpty.count < present.count
    let namesPeers = !present.isEmpty

    var peers: [PeerSelector] = []
    for endpoint in try object.list("\(from)Endpoints") {
      let selector = scope.scope(
        EndpointSelector(try decodeLabelSelector(endpoint, style: .cilium)))
      peers.append(selector.isWildcard ? .all : .selector(selector))
    }
    for entityField in try object.list("\(from)Entities") {
      let name = try entityField.string()
      guard let entity = Entity(rawValue: name) else {
        let names = Entity.allCases.map(\.rawValue).joined(separator: ", ")
        throw entityField.error("unknown entity \"\(name)\" (want one of \(names))")
      }
      peers += entity.peers
    }
    for cidrField in try object.list("\(from)CIDR") {
      peers += try cidrPeers(cidrField, except: [])
    }
    for cidrSetField in try object.list("\(from)CIDRSet") {
      let cidrSet = try cidrSetField.object(
        known: ["cidr", "except"],
        unsupported: [
          "cidrGroupRef": "cidrGroupRef \(notSupported)",
          "cidrGroupSelector": "cidrGroupSelector \(notSupported)",
        ])
      let exceptions = try cidrSet["except"]?.list() ?? []
      peers += try cidrPeers(try cidrSet.required("cidr"), except: exceptions)
    }

    var ports: [PortProtocol] = []
    let portRules = try object.list("toPorts")
    for portRuleField in portRules {
      var portRuleUnsupported = [
        "rules": "L7 rules are not supported yet",
        "listener": "listener \(notSupported)",
        "originatingTLS": "originatingTLS \(notSupported)",
        "terminatingTLS": "terminatingTLS \(notSupported)",
        "serverNames": "serverNames \(notSupported)",
      ]
      if verdict == .deny {
        portRuleUnsupported["rules"] = "L7 rules are not allowed in a deny rule"
      }
      let portRule = try portRuleField.object(known: ["ports"], unsupported: portRuleUnsupported)
      let portFields = try portRule.list("ports")
      // Cilium matches no traffic with a port rule that lists no ports; a silent "nothing" in
      // an allow or deny is a trap, so it is refused with the way to say "every port".
      if portFields.isEmpty && legacy { ports.append(.any) }
      if portFields.isEmpty && !legacy {
        throw FieldError(
          path: portRuleField.childPath("ports"),
          problem:
            "must list at least one port (a port rule without ports matches nothing; use port \"0\" for every port)"
        )
      }
      for portField in portFields {
        let port = try decodeCiliumPort(portField)
        // Cilium's `ANY` in a port rule is TCP, UDP and SCTP (`mergeIngress`/`mergeEgress`
        // in pkg/policy/rule.go), not every protocol: a port rule never covers ICMP or a
        // portless protocol. Only an element without `toPorts` does.
        // A named port keeps `ANY`: it takes the protocol the workload declares.
        if port.proto == .any && port.name == nil {
          ports += [L4Protocol.tcp, .udp, .sctp].map { PortProtocol(proto: $0, ports: port.ports) }
        } else {
          ports.append(port)
        }
      }
    }

    let icmpRules = try object.list("icmps")
    if !icmpRules.isEmpty && !portRules.isEmpty {
      throw field.error(
        "the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts (Cilium refuses it too)"
      )
    }
    ports += try decodeCiliumICMPs(icmpRules)

    if !namesPeers {
      guard !portRules.isEmpty || !icmpRules.isEmpty else { return nil }
      peers = [.all]
    }
    if ports.isEmpty { ports = [.any] }
    guard !peers.isEmpty, !selectsNobody else { return nil }
    return PolicySection(
      direction: direction, verdict: verdict, peers: unique(peers), ports: unique(ports))
  }

  static func unique<T: Hashable>(_ values: [T]) -> [T] {
    var seen = Set<T>()
    return values.filter { seen.insert($0).inserted }
  }
}
