/// An identity-service failure with a code the gRPC layer maps to a status.
public struct IdentityError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    enum Wrapped: Hashable, Sendable {
      case invalidLabels, notFound, exhausted, storeUnavailable, policyUnavailable
    }
    let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// A label is malformed, or `reserved:` labels are mixed with others.
    public static let invalidLabels = Code(.invalidLabels)
    public static let notFound = Code(.notFound)
    /// No free identity is left in the cluster's range.
    public static let exhausted = Code(.exhausted)
    /// The store cannot be reached or failed; the caller may retry.
    public static let storeUnavailable = Code(.storeUnavailable)
    /// A new identity could not be announced to the policy service; nothing was kept.
    public static let policyUnavailable = Code(.policyUnavailable)

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
