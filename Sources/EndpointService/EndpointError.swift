/// An endpoint-service failure with a code the gRPC layer maps to a status.
public struct EndpointError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable {
      case invalidArgument, duplicate, notFound, staleRevision, upstreamUnavailable, deadlineExceeded, illegalTransition
    }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// Malformed request: missing container ID, bad IP, `reserved:` label.
    public static let invalidArgument = Code(.invalidArgument)
    /// The container/interface or an IP is already registered.
    public static let duplicate = Code(.duplicate)
    public static let notFound = Code(.notFound)
    /// A label resolution was overtaken by a newer one.
    public static let staleRevision = Code(.staleRevision)
    /// The identity, policy or datapath service is unreachable; retry.
    public static let upstreamUnavailable = Code(.upstreamUnavailable)
    /// The request's deadline passed before the endpoint was ready.
    public static let deadlineExceeded = Code(.deadlineExceeded)
    /// The endpoint state machine refused an event.
    public static let illegalTransition = Code(.illegalTransition)

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
