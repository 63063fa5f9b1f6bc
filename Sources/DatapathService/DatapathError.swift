/// An error from the datapath, with a code the gRPC layer maps to a status.
public struct DatapathError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    /// Every code there is (switched over exhaustively by the gRPC mapping).
    enum Wrapped: Hashable, Sendable {
      case invalidArgument, notFound, kernel, unavailable, precondition
    }
    let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// The request names something malformed (bad IP, bad interface name).
    public static let invalidArgument = Code(.invalidArgument)
    /// The endpoint or interface does not exist.
    public static let notFound = Code(.notFound)
    /// The kernel refused an operation (verifier, map update, attach).
    public static let kernel = Code(.kernel)
    /// A required facility or object is missing (bpffs, privileges, the endpoint's host device).
    public static let precondition = Code(.precondition)
    /// The datapath cannot serve now; trying again later may succeed.
    public static let unavailable = Code(.unavailable)

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

  public var description: String {
    cause.map { "\(message): \($0)" } ?? message
  }
}
