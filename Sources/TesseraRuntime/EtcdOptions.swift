import ArgumentParser

/// Command-line options of a daemon that talks to etcd (TLS files, lease TTL). They live with
/// the other daemon options; TesseraEtcd turns them into an `EtcdConfiguration`.
public struct EtcdOptions: ParsableArguments, Sendable {
  @Option(help: "CA bundle (PEM) that signs the etcd members' certificates (https:// endpoints).")
  public var etcdCAFile: String?

  @Option(help: "Client certificate (PEM) for etcd.")
  public var etcdCertFile: String?

  @Option(help: "Client key (PEM) for etcd.")
  public var etcdKeyFile: String?

  @Option(help: "Seconds this node's keys outlive it in etcd (its lease).")
  public var etcdLeaseTTL: Int64 = 30

  public init() {}

  public func validate() throws {
    guard etcdLeaseTTL >= 5 else {
      throw ValidationError("--etcd-lease-ttl must be at least 5 seconds")
    }
    guard (etcdCertFile == nil) == (etcdKeyFile == nil) else {
      throw ValidationError("--etcd-cert-file and --etcd-key-file go together")
    }
  }

  /// The flags that pass these options on to another daemon.
  public var arguments: [String] {
    var arguments = ["--etcd-lease-ttl", "\(etcdLeaseTTL)"]
    if let etcdCAFile { arguments += ["--etcd-ca-file", etcdCAFile] }
    if let etcdCertFile { arguments += ["--etcd-cert-file", etcdCertFile] }
    if let etcdKeyFile { arguments += ["--etcd-key-file", etcdKeyFile] }
    return arguments
  }
}
