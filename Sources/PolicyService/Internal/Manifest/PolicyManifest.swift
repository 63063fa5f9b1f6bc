import TesseraCore

/// A policy read from a manifest: its name, its normalised source and its rules.
struct ParsedPolicy: Sendable, Hashable {
  var ref: PolicyRef
  var sourceJSON: String
  var rules: [PolicyRule]
}

/// Reads CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and Kubernetes NetworkPolicy
/// manifests (YAML or JSON, several documents, `List` kinds) into rules, applying Cilium's
/// translation (namespace scoping, entities, default-deny) on the way.
enum PolicyManifest {
  /// The policy kinds Tessera reads.
  enum Kind: String, CaseIterable {
    case ciliumNetworkPolicy = "CiliumNetworkPolicy"
    case ciliumClusterwideNetworkPolicy = "CiliumClusterwideNetworkPolicy"
    case networkPolicy = "NetworkPolicy"

    var apiVersion: String { self == .networkPolicy ? "networking.k8s.io/v1" : "cilium.io/v2" }
    var isNamespaced: Bool { self != .ciliumClusterwideNetworkPolicy }
    var listKind: String { rawValue + "List" }

    init?(listKind: String) {
      guard let kind = Self.allCases.first(where: { $0.listKind == listKind }) else { return nil }
      self = kind
    }
  }

  static let defaultNamespace = "default"

  /// Parses every policy in `content`.
  ///
  /// - Throws: ``PolicyError`` (`invalidManifest`) for the first problem found, as
  ///   `<source>: document N: <field path>: <problem>`; also when two documents define the
  ///   same namespace/name or when the content holds no policy.
  static func parse(sourceName: String, content: [UInt8]) throws(PolicyError) -> [ParsedPolicy] {
    let documents = try ManifestReader.documents(sourceName: sourceName, content: content)
    var policies: [ParsedPolicy] = []
    var definedIn: [PolicyKey: Int] = [:]
    for document in documents {
      do throws(FieldError) {
        for (policy, namePath) in try decodeDocument(ManifestField(path: "", value: document.value))
        {
          let key = PolicyKey(policy.ref)
          if let previous = definedIn[key] {
            let place =
              previous == document.number ? "earlier in this document" : "in document \(previous)"
            throw FieldError(
              path: namePath, problem: "policy \(policy.ref) is defined twice (also \(place))")
          }
          definedIn[key] = document.number
          policies.append(policy)
        }
      } catch {
        let location = error.path.isEmpty ? "" : "\(error.path): "
        throw PolicyError(
          code: .invalidManifest,
          message: "\(sourceName): document \(document.number): \(location)\(error.problem)")
      }
    }
    guard !policies.isEmpty else {
      throw PolicyError(code: .invalidManifest, message: "\(sourceName): no policies found")
    }
    return policies
  }

  /// Parses a policy the repository stored as JSON.
  ///
  /// Forms that older versions accepted and imports now refuse (a Cilium rule without entries,
  /// a port rule without ports, two peer kinds in one element) are read with the meaning they
  /// had, instead of keeping the service from starting; importing them again is refused.
  static func parseStored(_ json: String) throws(FieldError) -> ParsedPolicy {
    guard let value = ManifestReader.storedDocument(json) else {
      throw FieldError(path: "", problem: "stored policy is not valid JSON")
    }
    let parsed = try decodeDocument(ManifestField(path: "", value: value), legacy: true)
    guard parsed.count == 1 else {
      throw FieldError(path: "", problem: "stored policy holds \(parsed.count) policies")
    }
    return parsed[0].policy
  }

  // MARK: Documents

  private static func decodeDocument(
    _ field: ManifestField, legacy: Bool = false
  ) throws(FieldError) -> [(policy: ParsedPolicy, namePath: String)] {
    guard case .object = field.value else {
      throw field.error(
        "expected a policy (a mapping with apiVersion and kind), got \(field.value.typeDescription)"
      )
    }
    let object = try field.anyObject()
    let kindField = try object.required("kind")
    let kind = try kindField.string()
    if kind == "List" {
      try expectAPIVersion("v1", of: object, kind: kind)
      return try decodeList(object, itemKind: nil)
    }
    if let itemKind = Kind(listKind: kind) {
      try expectAPIVersion(itemKind.apiVersion, of: object, kind: kind)
      return try decodeList(object, itemKind: itemKind)
    }
    guard let policyKind = Kind(rawValue: kind) else {
      throw kindField.error(
        "unsupported kind \"\(kind)\" (want CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy or a List of them)"
      )
    }
    try expectAPIVersion(policyKind.apiVersion, of: object, kind: kind)
    return [try decodePolicy(field, kind: policyKind, legacy: legacy)]
  }

  private static func expectAPIVersion(_ expected: String, of object: ManifestObject, kind: String)
    throws(FieldError)
  {
    let field = try object.required("apiVersion")
    let apiVersion = try field.string()
    guard apiVersion == expected else {
      throw field.error(
        "unsupported apiVersion \"\(apiVersion)\" for kind \(kind) (want \"\(expected)\")")
    }
  }

  private static func decodeList(_ object: ManifestObject, itemKind: Kind?) throws(FieldError) -> [(
    policy: ParsedPolicy, namePath: String
  )] {
    let list = try ManifestField(path: object.path, value: .object(object.members))
      .object(known: ["apiVersion", "kind", "metadata", "items"])
    var result: [(policy: ParsedPolicy, namePath: String)] = []
    for var item in try list.list("items") {
      let itemObject = try item.anyObject()
      if let itemKind {
        // Items of a typed list may leave out their kind and apiVersion.
        if !itemObject.has("kind") {
          item.value = item.value.setting("kind", to: .string(itemKind.rawValue))
        }
        if !itemObject.has("apiVersion") {
          item.value = item.value.setting("apiVersion", to: .string(itemKind.apiVersion))
        }
      }
      let resolved = try item.anyObject()
      let kindField = try resolved.required("kind")
      let kind = try kindField.string()
      guard let policyKind = Kind(rawValue: kind) else {
        throw kindField.error(
          "unsupported kind \"\(kind)\" for a list item (want CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy)"
        )
      }
      if let itemKind, itemKind != policyKind {
        throw kindField.error(
          "a \(itemKind.listKind) may hold only \(itemKind.rawValue) items, not \(kind)")
      }
      try expectAPIVersion(policyKind.apiVersion, of: resolved, kind: kind)
      result.append(try decodePolicy(item, kind: policyKind))
    }
    return result
  }

  private static func decodePolicy(
    _ field: ManifestField, kind: Kind, legacy: Bool = false
  ) throws(FieldError) -> (policy: ParsedPolicy, namePath: String) {
    var known: Set<String> = ["apiVersion", "kind", "metadata", "spec", "status"]
    if kind != .networkPolicy { known.insert("specs") }
    let object = try field.object(known: known)
    let metadataField = try object.required("metadata")
    let metadata = try metadataField.anyObject()
    let nameField = try metadata.required("name")
    let name = try nameField.string()
    if let problem = KubernetesNames.dns1123SubdomainProblem(name) {
      throw nameField.error(problem)
    }

    var namespace = ""
    var normalized = field.value
    if kind.isNamespaced {
      namespace = defaultNamespace
      if let namespaceField = metadata["namespace"] {
        namespace = try namespaceField.string()
        if let problem = KubernetesNames.dns1123LabelProblem(namespace) {
          throw namespaceField.error(problem)
        }
      }
      normalized = normalized.setting(
        "metadata", to: metadataField.value.setting("namespace", to: .string(namespace)))
    }

    let rules: [PolicyRule]
    switch kind {
    case .networkPolicy:
      rules = [try decodeNetworkPolicySpec(object.required("spec"), namespace: namespace)]
    case .ciliumNetworkPolicy, .ciliumClusterwideNetworkPolicy:
      var specs: [ManifestField] = []
      if let spec = object["spec"] { specs.append(spec) }
      specs += try object.list("specs")
      guard !specs.isEmpty else {
        throw FieldError(
          path: object.path.isEmpty ? "spec" : "\(object.path).spec",
          problem: "required field is missing (a policy needs spec or specs)")
      }
      var decoded: [PolicyRule] = []
      for spec in specs {
        decoded.append(
          try decodeCiliumRule(spec, namespace: kind.isNamespaced ? namespace : nil, legacy: legacy)
        )
      }
      rules = decoded
    }
    let ref = PolicyRef(namespace: namespace, name: name, kind: kind.rawValue)
    return (
      ParsedPolicy(ref: ref, sourceJSON: normalized.normalizedJSON, rules: rules), nameField.path
    )
  }
}

/// Policies are keyed by namespace and name, whatever their kind.
struct PolicyKey: Hashable, Sendable, Comparable {
  var namespace: String
  var name: String

  init(namespace: String, name: String) {
    self.namespace = namespace
    self.name = name
  }

  init(_ ref: PolicyRef) { self.init(namespace: ref.namespace, name: ref.name) }

  static func < (lhs: Self, rhs: Self) -> Bool {
    (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name)
  }
}
