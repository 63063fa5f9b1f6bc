/// An endpoint-service failure with a code the gRPC layer maps to a status.
public struct EndpointError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    enum Wrapped: Hashable, Sendable, CaseIterable {
      case invalidArgument, duplicate, notFound, staleRevision, upstreamUnavailable,
        deadlineExceeded, illegalTransition
      case failedPrecondition, upstreamFailed
    }
    let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// Malformed request: missing container ID, bad IP, `reserved:` label,
    /// oversized labels (→ INVALID_ARGUMENT). Permanent.
    public static let invalidArgument = Code(.invalidArgument)
    /// The container/interface or an IP is already registered (→ ALREADY_EXISTS).
    public static let duplicate = Code(.duplicate)
    /// The endpoint is unknown (→ NOT_FOUND).
    public static let notFound = Code(.notFound)
    /// A label resolution was overtaken by a newer one (→ ABORTED).
    public static let staleRevision = Code(.staleRevision)
    /// The identity, policy or datapath service is unreachable, not ready or
    /// did not answer in time; retry (→ UNAVAILABLE).
    public static let upstreamUnavailable = Code(.upstreamUnavailable)
    /// The request's deadline passed before the endpoint was ready (→ DEADLINE_EXCEEDED).
    public static let deadlineExceeded = Code(.deadlineExceeded)
    /// The endpoint state machine refused an event (→ FAILED_PRECONDITION).
    public static let illegalTransition = Code(.illegalTransition)
    /// Something the request names is missing or unusable, e.g. its host
    /// interface does not exist; retrying the same request cannot succeed
    /// (→ FAILED_PRECONDITION).
    public static let failedPrecondition = Code(.failedPrecondition)
    /// Another service failed in a way a retry will not fix: an internal error,
    /// an unimplemented call, refused permissions (→ INTERNAL).
    public static let upstreamFailed = Code(.upstreamFailed)

    /// Every code, for exhaustive tests.
    static var allCases: [Code] { Wrapped.allCases.map(Code.init) }

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
