import TesseraCore

extension PolicyManifest {
  /// How a selector's keys are written.
  enum KeyStyle {
    /// CiliumNetworkPolicy: `source:key` or `key` (any source).
    case cilium
    /// Kubernetes NetworkPolicy: plain label keys, source `k8s`.
    case kubernetes
  }

  /// Reads a `LabelSelector` (`matchLabels`, `matchExpressions`) and validates it the way the
  /// Kubernetes API server does.
  static func decodeLabelSelector(_ field: ManifestField, style: KeyStyle) throws(FieldError)
    -> [LabelRequirement]
  {
    let object = try field.object(known: ["matchLabels", "matchExpressions"])
    var requirements: [LabelRequirement] = []
    if let matchLabels = object["matchLabels"] {
      for member in try matchLabels.anyObject().members {
        let entry = ManifestField(path: matchLabels.childPath(member.key), value: member.value)
        let key = try selectorKey(member.key, style: style, field: entry)
        let value = try entry.string()
        if let problem = KubernetesNames.labelValueProblem(value) { throw entry.error(problem) }
        requirements.append(LabelRequirement(key: key, op: .in, values: [value]))
      }
    }
    for expressionField in try object.list("matchExpressions") {
      let expression = try expressionField.object(known: ["key", "operator", "values"])
      let keyField = try expression.required("key")
      let key = try selectorKey(try keyField.string(), style: style, field: keyField)
      let operatorField = try expression.required("operator")
      let operatorName = try operatorField.string()
      guard let op = LabelRequirement.Operator(rawValue: operatorName) else {
        throw operatorField.error(
          "unknown operator \"\(operatorName)\" (want In, NotIn, Exists or DoesNotExist)")
      }
      let valuesPath = expressionField.childPath("values")
      var values: [String] = []
      for valueField in try expression.list("values") {
        let value = try valueField.string()
        if let problem = KubernetesNames.labelValueProblem(value) {
          throw valueField.error(problem)
        }
        values.append(value)
      }
      switch op {
      case .in, .notIn:
        if values.isEmpty {
          throw FieldError(
            path: valuesPath, problem: "must be specified when operator is In or NotIn")
        }
      case .exists, .doesNotExist:
        if !values.isEmpty {
          throw FieldError(
            path: valuesPath,
            problem: "may not be specified when operator is Exists or DoesNotExist")
        }
      }
      requirements.append(LabelRequirement(key: key, op: op, values: values))
    }
    return requirements
  }

  private static func selectorKey(_ text: String, style: KeyStyle, field: ManifestField)
    throws(FieldError) -> SelectorKey
  {
    switch style {
    case .kubernetes:
      if let problem = KubernetesNames.labelKeyProblem(text) { throw field.error(problem) }
      return .k8s(text)
    case .cilium:
      let key = SelectorKey(parsing: text)
      if key.key.isEmpty { throw field.error("invalid label key \"\(text)\": empty key") }
      do {
        try Label(source: key.source, key: key.key, value: "").validate()
      } catch {
        throw field.error("invalid label key \"\(text)\": \(error.problem)")
      }
      return key
    }
  }

  /// `selector`, made to select only pods: unless it already requires the pod namespace label
  /// (`In` or `Exists`), it gets `k8s:io.kubernetes.pod.namespace` Exists. Every pod identity
  /// carries that label; world, host and the other reserved identities never do, so a selector
  /// written only with `NotIn`/`DoesNotExist` terms cannot reach them.
  static func requiringPod(_ selector: EndpointSelector) -> EndpointSelector {
    let requiresNamespace = selector.requirements.contains {
      ($0.key == PolicyLabels.podNamespaceK8s || $0.key == PolicyLabels.podNamespaceAny)
        && ($0.op == .in || $0.op == .exists)
    }
    return requiresNamespace
      ? selector : selector.adding(LabelRequirement(key: PolicyLabels.podNamespaceK8s, op: .exists))
  }

  // MARK: Ports

  /// Reads a Cilium `PortProtocol` (`port` as a string or number, `endPort`, `protocol`;
  /// port 0 or no port means every port, no protocol means any protocol).
  static func decodeCiliumPort(_ field: ManifestField) throws(FieldError) -> PortProtocol {
    let object = try field.object(known: ["port", "endPort", "protocol"])
    var proto = L4Protocol.any
    if let protocolField = object["protocol"] {
      let name = try protocolField.string()
      guard let parsed = L4Protocol(name: name) else {
        throw protocolField.error("unsupported protocol \"\(name)\" (want TCP, UDP, SCTP or ANY)")
      }
      proto = parsed
    }
    var port = 0
    if let portField = object["port"] {
      switch try portNumberOrName(portField, minimum: 0) {
      case .number(let number): port = number
      case .name(let name): return try namedPort(name, proto: proto, object: object)
      }
    }
    return PortProtocol(proto: proto, ports: try portRange(port: port, object: object, minimum: 0))
  }

  /// Reads a Kubernetes `NetworkPolicyPort` (numeric `port` 1–65535, `endPort`, `protocol`
  /// TCP/UDP/SCTP defaulting to TCP; no port means every port of the protocol).
  static func decodeKubernetesPort(_ field: ManifestField) throws(FieldError) -> PortProtocol {
    let object = try field.object(known: ["port", "endPort", "protocol"])
    var proto = L4Protocol.tcp
    if let protocolField = object["protocol"] {
      let name = try protocolField.string()
      guard let parsed = L4Protocol(name: name), parsed != .any else {
        throw protocolField.error("unsupported protocol \"\(name)\" (want TCP, UDP or SCTP)")
      }
      proto = parsed
    }
    guard let portField = object["port"] else {
      if let endPort = object["endPort"] {
        throw endPort.error("may not be specified when port is not specified")
      }
      return PortProtocol(proto: proto, ports: .any)
    }
    switch try portNumberOrName(portField, minimum: 1) {
    case .number(let port):
      return PortProtocol(
        proto: proto, ports: try portRange(port: port, object: object, minimum: 1))
    case .name(let name):
      return try namedPort(name, proto: proto, object: object)
    }
  }

  private enum PortNumberOrName {
    case number(Int)
    case name(String)
  }

  /// A port as a number, or as text naming a port (Kubernetes' IntOrString; Cilium's string).
  private static func portNumberOrName(_ field: ManifestField, minimum: Int) throws(FieldError)
    -> PortNumberOrName
  {
    let number: Int
    switch field.value {
    case .integer, .number:
      number = try field.integer()
    case .string(let text):
      guard let parsed = Int(text.trimmingSpaces) else {
        guard text.contains(where: \.isLetter) else {
          throw field.error("invalid port \"\(text)\"")
        }
        if let problem = NamedPort.problem(withName: text) { throw field.error(problem) }
        return .name(text)
      }
      number = parsed
    default:
      throw field.error("expected a port number, got \(field.value.typeDescription)")
    }
    guard (minimum...65535).contains(number) else {
      throw field.error("port \(number) is out of range (\(minimum)-65535)")
    }
    return .number(number)
  }

  private static func namedPort(_ name: String, proto: L4Protocol, object: ManifestObject)
    throws(FieldError) -> PortProtocol
  {
    if let endPortField = object["endPort"] {
      throw endPortField.error("may not be specified when port is a name (\"\(name)\")")
    }
    return PortProtocol(proto: proto, name: name)
  }

  private static func portRange(port: Int, object: ManifestObject, minimum: Int) throws(FieldError)
    -> PortRange
  {
    guard let endPortField = object["endPort"] else {
      return port == 0 ? .any : PortRange(single: UInt16(port))
    }
    let endPort = try endPortField.integer()
    if port == 0 {
      throw endPortField.error("may not be specified when port is 0 or not specified")
    }
    guard endPort <= 65535 else {
      throw endPortField.error("port \(endPort) is out of range (\(minimum)-65535)")
    }
    guard endPort >= port else {
      throw endPortField.error("must be greater than or equal to port (\(port))")
    }
    return PortRange(UInt16(port), UInt16(endPort))
  }

  // MARK: CIDRs

  /// The peers a CIDR and its `except` prefixes stand for: the identities of the prefix and
  /// of every prefix a policy names inside it (``CIDRIdentity``), less those inside an
  /// exception. The whole address space of a family is that family's world (`0.0.0.0/0` is
  /// world-ipv4 and `::/0` world-ipv6, as in Cilium's dual-stack datapath, where an address
  /// no entry covers carries its family's world), less the exceptions.
  static func cidrPeers(_ cidrField: ManifestField, except exceptFields: [ManifestField])
    throws(FieldError) -> [PeerSelector]
  {
    let text = try cidrField.string()
    guard let prefix = IPPrefix(text) else { throw cidrField.error("invalid CIDR \"\(text)\"") }
    var exclusions: [LabelRequirement] = []
    for exceptField in exceptFields {
      let exceptText = try exceptField.string()
      guard let excepted = IPPrefix(exceptText) else {
        throw exceptField.error("invalid CIDR \"\(exceptText)\"")
      }
      guard prefix.contains(excepted), excepted.length > prefix.length else {
        throw exceptField.error("\(exceptText) must be a strict subset of \(prefix)")
      }
      exclusions.append(LabelRequirement(key: cidrKey(excepted), op: .doesNotExist))
    }
    let family: ReservedIdentity = prefix.family == .v4 ? .worldIPv4 : .worldIPv6
    guard prefix.length > 0 else {
      return [
        .selector(
          EndpointSelector(
            [LabelRequirement(key: .reserved(family.name), op: .in, values: [""])] + exclusions))
      ]
    }
    // The reserved label, which no workload can carry, keeps a pod labelled cidr:… out.
    return [
      .selector(
        EndpointSelector(
          [
            LabelRequirement(key: cidrKey(prefix), op: .in, values: [""]),
            LabelRequirement(key: .reserved(family.name), op: .in, values: [""]),
          ] + exclusions))
    ]
  }

  private static func cidrKey(_ prefix: IPPrefix) -> SelectorKey {
    SelectorKey(source: CIDRIdentity.labelSource, key: CIDRIdentity.labelKey(for: prefix))
  }
}

extension String {
  var trimmingSpaces: Substring {
    let start = firstIndex { $0 != " " } ?? endIndex
    let end = lastIndex { $0 != " " }.map { index(after: $0) } ?? endIndex
    return start < end ? self[start..<end] : ""
  }
}
