import Foundation

/// Where everything of a local cluster lives: etcd members, identity and policy
/// replicas, nodes, certificates, ports, network namespaces and BPF pins.
///
/// `tessera node up --cluster` writes it to `<run-dir>/cluster.json`;
/// `node status` and `node down` read it back, so they find exactly what `up`
/// made (and nothing else) without any flag repeated.
public struct ClusterPlan: Codable, Sendable, Equatable {
  /// What the operator asked for.
  public struct Configuration: Sendable, Equatable {
    public var nodes: Int
    public var identityReplicas: Int
    public var policyReplicas: Int
    public var etcdMembers: Int
    /// The cluster's run directory (everything but the BPF pins goes under it).
    public var root: String
    /// An IPv4 /16; node N's pods get `a.b.N.0/24`.
    public var podCIDR: String
    /// First of the consecutive loopback ports to use; nil: the kernel picks free ones.
    public var basePort: Int?

    /// A bound, not a capacity: each node costs two daemons and a pin directory,
    /// and `a.b.N.0/24` subnets need N < 256 anyway.
    public static let maxNodes = 16
    public static let maxReplicas = 5

    public static let defaults = Configuration(
      nodes: 2, identityReplicas: 2, policyReplicas: 2, etcdMembers: 1,
      root: "/run/tessera-cluster", podCIDR: "10.199.0.0/16", basePort: nil)

    public init(
      nodes: Int, identityReplicas: Int, policyReplicas: Int, etcdMembers: Int, root: String,
      podCIDR: String, basePort: Int?
    ) {
      self.nodes = nodes
      self.identityReplicas = identityReplicas
      self.policyReplicas = policyReplicas
      self.etcdMembers = etcdMembers
      self.root = root
      self.podCIDR = podCIDR
      self.basePort = basePort
    }

    /// Loopback ports the cluster listens on: two per etcd member (client, peer), one per replica.
    public var portCount: Int { etcdMembers * 2 + identityReplicas + policyReplicas }

    /// Checks every value; the messages name the flag.
    public func validate() throws(LocalClusterError) {
      guard (1...Self.maxNodes).contains(nodes) else {
        throw LocalClusterError(
          .invalidArgument, "--nodes must be 1 to \(Self.maxNodes), not \(nodes)")
      }
      for (flag, value) in [
        ("--identity-replicas", identityReplicas), ("--policy-replicas", policyReplicas),
      ] where !(1...Self.maxReplicas).contains(value) {
        throw LocalClusterError(
          .invalidArgument, "\(flag) must be 1 to \(Self.maxReplicas), not \(value)")
      }
      // An even count adds no fault tolerance; 1 is for trying it out, 3 survives a loss.
      guard etcdMembers == 1 || etcdMembers == 3 else {
        throw LocalClusterError(
          .invalidArgument, "--etcd-members must be 1 or 3, not \(etcdMembers)")
      }
      guard root.hasPrefix("/"), root.count > 1 else {
        throw LocalClusterError(
          .invalidArgument, "--run-dir must be an absolute path other than /, not '\(root)'")
      }
      guard Self.podPrefix(podCIDR) != nil else {
        throw LocalClusterError(
          .invalidArgument, "--pod-cidr must be an IPv4 /16 such as 10.199.0.0/16, not '\(podCIDR)'"
        )
      }
      if let basePort {
        guard basePort >= 1024, basePort + portCount - 1 <= 65535 else {
          throw LocalClusterError(
            .invalidArgument,
            "--base-port must leave room for \(portCount) ports within 1024...65535, not \(basePort)"
          )
        }
      }
    }

    /// `a.b` of an `a.b.0.0/16`, or nil.
    static func podPrefix(_ cidr: String) -> String? {
      let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
      guard parts.count == 2, parts[1] == "16" else { return nil }
      let octets = parts[0].split(separator: ".", omittingEmptySubsequences: false).map {
        UInt8($0)
      }
      guard octets.count == 4, octets.allSatisfy({ $0 != nil }), octets[2] == 0, octets[3] == 0
      else { return nil }
      return "\(octets[0]!).\(octets[1]!)"
    }
  }

  /// One etcd member (plain HTTP on loopback: only this machine reaches it).
  public struct EtcdMember: Codable, Sendable, Equatable {
    public var name: String
    public var clientPort: Int
    public var peerPort: Int
    public var dataDirectory: String
    public var log: String
    public var pidFile: String
    public var clientURL: String { "http://127.0.0.1:\(clientPort)" }
    public var peerURL: String { "http://127.0.0.1:\(peerPort)" }
  }

  /// One identityd or policyd replica: TCP with mutual TLS, plus the Unix socket in its run directory.
  public struct Replica: Codable, Sendable, Equatable {
    /// `identity` or `policy` (a `TesseraService` raw value).
    public var service: String
    /// `identity-1`: its node name and its certificate's SAN.
    public var name: String
    public var port: Int
    /// Shared by identity-N and policy-N, so identityd announces new identities to the policyd beside it.
    public var runDirectory: String
    public var stateDirectory: String
    public var address: String { "127.0.0.1:\(port)" }
  }

  /// One node: endpointd + datapathd with their own run, state and pin directories and pod subnet.
  public struct Node: Codable, Sendable, Equatable {
    /// `node-1`: its node name and its certificate's SAN.
    public var name: String
    public var runDirectory: String
    public var stateDirectory: String
    public var pinDirectory: String
    public var podSubnet: String
    /// Pod network namespaces are this prefix + the pod's name.
    public var netnsPrefix: String
    /// The CNI network name (container ids are `<network>-<pod>`).
    public var cniNetwork: String
    /// IPAM state and each pod's cached CNI result.
    public var cniDirectory: String
    /// The pod helper script (`pod add NAME LABEL...`).
    public var podScript: String
  }

  public var root: String
  /// Short and stable per run directory: keeps two clusters' namespaces and pins apart.
  public var tag: String
  public var podCIDR: String
  public var etcd: [EtcdMember]
  public var identity: [Replica]
  public var policy: [Replica]
  public var nodes: [Node]
  /// Holds every node's pin directory; removed whole by `node down`.
  public var pinRoot: String
  /// Every pod namespace of the cluster starts with this.
  public var netnsPrefix: String

  /// Lays out a validated configuration on `ports` (`configuration.portCount` of them).
  public init(_ configuration: Configuration, ports: [Int]) throws(LocalClusterError) {
    try configuration.validate()
    guard ports.count >= configuration.portCount else {
      throw LocalClusterError(
        .layout, "\(configuration.portCount) ports needed, \(ports.count) given")
    }
    let root =
      configuration.root.count > 1 && configuration.root.hasSuffix("/")
      ? String(configuration.root.dropLast()) : configuration.root
    var ports = ports[...]
    func nextPort() -> Int { ports.popFirst() ?? 0 }
    self.root = root
    tag = Self.tag(for: root)
    podCIDR = configuration.podCIDR
    pinRoot = "/sys/fs/bpf/tessera-cluster-\(tag)"
    netnsPrefix = "tc\(tag)-"
    etcd = (1...configuration.etcdMembers).map { index in
      EtcdMember(
        name: "m\(index)", clientPort: nextPort(), peerPort: nextPort(),
        dataDirectory: "\(root)/etcd/m\(index)", log: "\(root)/etcd/m\(index).log",
        pidFile: "\(root)/etcd/m\(index).pid")
    }
    func replicas(_ service: String, _ count: Int) -> [Replica] {
      (1...count).map { index in
        Replica(
          service: service, name: "\(service)-\(index)", port: nextPort(),
          runDirectory: "\(root)/control/replica-\(index)",
          stateDirectory: "\(root)/control/replica-\(index)/state")
      }
    }
    identity = replicas("identity", configuration.identityReplicas)
    policy = replicas("policy", configuration.policyReplicas)
    let prefix = Configuration.podPrefix(configuration.podCIDR) ?? "10.199"
    nodes = (1...configuration.nodes).map { [tag, pinRoot] index in
      let directory = "\(root)/nodes/node-\(index)"
      return Node(
        name: "node-\(index)", runDirectory: directory, stateDirectory: "\(directory)/state",
        pinDirectory: "\(pinRoot)/node-\(index)", podSubnet: "\(prefix).\(index).0/24",
        netnsPrefix: "tc\(tag)-n\(index)-", cniNetwork: "tessera-\(tag)-node-\(index)",
        cniDirectory: "\(directory)/cni", podScript: "\(directory)/pod")
    }
  }

  /// The etcd store flag value every daemon of the cluster shares.
  public var etcdStore: String { "etcd:" + etcd.map(\.clientURL).joined(separator: ",") }
  /// `--identity-address` of the nodes and policy replicas: every identity replica.
  public var identityAddresses: String { identity.map(\.address).joined(separator: ",") }
  /// `--policy-address` of the nodes: every policy replica.
  public var policyAddresses: String { policy.map(\.address).joined(separator: ",") }
  /// `--initial-cluster` of the etcd members.
  public var etcdInitialCluster: String {
    etcd.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
  }

  public var pkiDirectory: String { "\(root)/pki" }
  public var caFile: String { "\(pkiDirectory)/ca.pem" }
  /// Certificate and key of `name` (a replica's or a node's); its SAN DNS name is `name`.
  public func certificate(_ name: String) -> (certificate: String, key: String) {
    ("\(pkiDirectory)/\(name).pem", "\(pkiDirectory)/\(name).key")
  }
  /// Everything that gets a certificate.
  public var certificateNames: [String] {
    identity.map(\.name) + policy.map(\.name) + nodes.map(\.name)
  }

  /// The replica a node's CLI reaches through the sockets linked into the node's run directory.
  public func replica(of service: String, for node: Node) -> Replica? {
    let replicas = service == "identity" ? identity : policy
    guard let index = nodes.firstIndex(of: node), !replicas.isEmpty else { return nil }
    return replicas[index % replicas.count]
  }

  /// Whether the identityd of `replica` has a policyd in its run directory to announce to.
  public func hasPolicyBeside(_ replica: Replica) -> Bool {
    policy.contains { $0.runDirectory == replica.runDirectory }
  }

  public static func manifestPath(root: String) -> String { "\(root)/cluster.json" }

  /// Writes the plan to `<root>/cluster.json`.
  public func save() throws(LocalClusterError) {
    do {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
      try encoder.encode(self).write(
        to: URL(fileURLWithPath: Self.manifestPath(root: root)), options: .atomic)
    } catch {
      throw LocalClusterError(
        .layout, "cannot write \(Self.manifestPath(root: root))", cause: error)
    }
  }

  /// The plan of the cluster made in `root`, or nil when there is none.
  public static func load(root: String) throws(LocalClusterError) -> ClusterPlan? {
    let path = manifestPath(root: root)
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    do { return try JSONDecoder().decode(ClusterPlan.self, from: data) } catch {
      throw LocalClusterError(.layout, "cannot read \(path)", cause: error)
    }
  }

  /// FNV-1a of the path, 6 hex digits: short enough for namespace and pin names, stable across runs.
  static func tag(for root: String) -> String {
    var hash: UInt32 = 2_166_136_261
    for byte in root.utf8 {
      hash ^= UInt32(byte)
      hash = hash &* 16_777_619
    }
    let hex = String(hash & 0xff_ffff, radix: 16)
    return String(repeating: "0", count: 6 - hex.count) + hex
  }
}
