/// Why a local cluster (`tessera node up --cluster`) cannot be planned, started or stopped.
public struct LocalClusterError: Error, CustomStringConvertible, Sendable {
  /// What kind of problem it is; the CLI turns every code into a one-line message.
  public enum Code: String, Sendable {
    /// A flag's value is out of range or malformed.
    case invalidArgument
    /// A program the cluster needs is not installed (etcd, openssl, a CNI plugin, a daemon).
    case missingDependency
    /// Network namespaces, eBPF and bpffs need root.
    case notRoot
    /// A loopback port the cluster was told to use is taken.
    case portBusy
    /// The run directory already holds a running cluster or node.
    case alreadyRunning
    /// A process did not start or did not become healthy.
    case startFailed
    /// The run directory's cluster layout cannot be read or written.
    case layout
  }

  public var code: Code
  public var message: String
  public var cause: (any Error)?

  public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public var description: String { cause.map { "\(message): \($0)" } ?? message }
}
