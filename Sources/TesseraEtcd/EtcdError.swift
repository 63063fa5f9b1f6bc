/// An etcd failure with a code callers act on.
public struct EtcdError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable {
      case unavailable, failed, invalidConfiguration, compacted, leaseLost
    }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// No member answered in time; the outcome of a write is unknown, so
    /// callers read back before retrying.
    public static let unavailable = Code(.unavailable)
    /// etcd answered with an error (bad request, too large, permission).
    public static let failed = Code(.failed)
    public static let invalidConfiguration = Code(.invalidConfiguration)
    /// A watch asked for history that has been compacted away: resync.
    public static let compacted = Code(.compacted)
    /// The lease expired or was revoked; keys bound to it are gone.
    public static let leaseLost = Code(.leaseLost)

    public var description: String { String(describing: wrapped) }
  }

  public var code: Code
  public var message: String
  public var cause: (any Error)?

  public init(code: Code, message: String, cause: (any Error)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public var description: String { cause.map { "\(message): \($0)" } ?? message }
}
