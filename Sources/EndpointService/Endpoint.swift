import Foundation
import TesseraCore

/// One endpoint: a container's interface on this node.
public struct Endpoint: Sendable, Codable, Hashable {
  public var id: UInt64
  public var containerID: String
  public var interfaceName: String
  /// Host side of the veth; empty for endpoints created without a device.
  public var hostInterface: String
  public var ips: [IPPrefix]
  public var namespace: String
  public var podName: String
  public var netns: String
  /// Labels given in the request (CNI args, CLI).
  public var requestLabels: LabelSet
  /// All labels currently applied: request + metadata + namespace.
  public var labels: LabelSet
  /// `.unknown` until resolved.
  public var identity: NumericIdentity
  /// The identity's own (filtered) labels, which policy selects on.
  public var identityLabels: LabelSet
  public var stateMachine: EndpointStateMachine
  /// Realised policy revision; 0 until the first regeneration.
  public var policyRevision: UInt64
  /// Bumped by every label update; a resolution for an older revision is dropped.
  public var identityRevision: UInt64
  /// Bumped by every regeneration trigger; waiters wait for `realizedGeneration` to reach it.
  public var wantedGeneration: UInt64
  public var realizedGeneration: UInt64
  public var createdAt: Date
  /// The CNI network (its configuration's name) the endpoint was created in: garbage
  /// collection is per network. Nil when created by the CLI or an older plugin (and
  /// in state files written before networks were recorded).
  public var network: String?
  /// Ports the workload declares by name; a policy's named ports resolve to them. Nil in
  /// state files written before named ports.
  public var namedPorts: [NamedPort]?

  public var state: EndpointState { stateMachine.state }

  /// The label every endpoint carries so namespaced policies can select it.
  public static let namespaceLabelKey = "io.kubernetes.pod.namespace"
  /// Namespace labels reach pods as `k8s:<prefix><key>=<value>` (Cilium's propagation);
  /// only the namespace sets them.
  public static let namespaceLabelsPrefix = "io.cilium.k8s.namespace.labels."
  public static let defaultNamespace = "default"
}

/// What a caller asks to create.
public struct EndpointSpec: Sendable, Hashable {
  public var containerID: String
  public var interfaceName: String
  public var hostInterface: String
  public var ips: [IPPrefix]
  public var namespace: String
  public var podName: String
  public var netns: String
  public var labels: LabelSet
  /// The CNI network; empty for none.
  public var network: String
  /// The workload's named ports (its container ports); names are unique.
  public var namedPorts: [NamedPort]

  public init(
    containerID: String, interfaceName: String = "eth0", hostInterface: String = "",
    ips: [IPPrefix], namespace: String = Endpoint.defaultNamespace, podName: String = "",
    netns: String = "", labels: LabelSet = .empty, network: String = "",
    namedPorts: [NamedPort] = []
  ) {
    self.network = network
    self.namedPorts = namedPorts
    self.containerID = containerID
    self.interfaceName = interfaceName
    self.hostInterface = hostInterface
    self.ips = ips
    self.namespace = namespace
    self.podName = podName
    self.netns = netns
    self.labels = labels
  }

  static func isContainerID(_ text: String) -> Bool {
    func alphanumeric(_ byte: UInt8) -> Bool {
      (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
        || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
        || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
    guard let first = text.utf8.first, alphanumeric(first) else { return false }
    return text.utf8.allSatisfy {
      alphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
        || $0 == UInt8(ascii: "-")
    }
  }

  /// Checks what the wire cannot: no `reserved:` labels, sane names.
  public func validate() throws(EndpointError) {
    // CNI spec: starts with an alphanumeric, then alphanumerics, '_', '.' or '-'.
    guard !containerID.isEmpty, containerID.utf8.count <= 256, Self.isContainerID(containerID)
    else {
      throw EndpointError(
        code: .invalidArgument,
        message:
          "container ID must be 1 to 256 characters: an alphanumeric, then alphanumerics, '_', '.' or '-'"
      )
    }
    // CNI spec: at most 15 bytes, not "." or "..", no '/', ':' or whitespace.
    guard !interfaceName.isEmpty, interfaceName.utf8.count < 16, interfaceName != ".",
      interfaceName != "..",
      !interfaceName.unicodeScalars.contains(where: {
        $0 == "/" || $0 == ":" || $0.properties.isWhitespace || $0.value < 0x20
      })
    else {
      throw EndpointError(
        code: .invalidArgument,
        message: "interface name must be 1 to 15 bytes, not . or .., without '/', ':' or whitespace"
      )
    }
    guard hostInterface.utf8.count < 16, !hostInterface.contains("/") else {
      throw EndpointError(
        code: .invalidArgument,
        message: "host interface '\(hostInterface)' is not a valid interface name")
    }
    if let reserved = labels.firstSystemLabel {
      throw EndpointError(
        code: .invalidArgument,
        message:
          "label \(reserved) is reserved: reserved and cidr labels cannot be requested")
    }
    if let propagated = labels.labels.first(where: {
      $0.key.hasPrefix(Endpoint.namespaceLabelsPrefix)
    }) {
      throw EndpointError(
        code: .invalidArgument,
        message:
          "label \(propagated) is a namespace label: set it on the namespace (tessera namespace set), not on a pod"
      )
    }
    if let explicit = labels[Endpoint.namespaceLabelKey], explicit.value != namespace {
      throw EndpointError(
        code: .invalidArgument, message: "label \(explicit) contradicts namespace '\(namespace)'")
    }
    guard !namespace.isEmpty, namespace.utf8.count <= 253 else {
      throw EndpointError(code: .invalidArgument, message: "namespace must be 1 to 253 bytes")
    }
    if let problem = NamedPort.problem(with: namedPorts) {
      throw EndpointError(code: .invalidArgument, message: problem)
    }
    for ip in ips where !ip.isHost {
      throw EndpointError(
        code: .invalidArgument, message: "endpoint address \(ip) must be a single address")
    }
    for ip in ips where ip.isSpecialPurposeHost {
      throw EndpointError(
        code: .invalidArgument,
        message: "endpoint address \(ip.address) is unspecified, loopback, multicast or broadcast")
    }
  }
}
