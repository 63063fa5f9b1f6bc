/// An error from the policy engine, with a code the gRPC layer maps to a status.
///
/// A rejected manifest reads `<source>: document N: <field path>: <problem>`, for
/// example `web.yaml: document 2: spec.ingress[0].toPorts[0].ports[0].port: port 70000 is
/// out of range (0-65535)`.
public struct PolicyError: Error, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    enum Wrapped: Hashable, Sendable {
      case invalidManifest, invalidRequest, notFound, storage, unavailable
    }
    let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// The manifest is malformed or uses something Tessera does not support (→ `invalidArgument`).
    public static let invalidManifest = Code(.invalidManifest)
    /// A request that names nothing valid: a malformed label selector, conflicting
    /// choices (→ `invalidArgument`).
    public static let invalidRequest = Code(.invalidRequest)
    /// No policy has that namespace and name (→ `notFound`).
    public static let notFound = Code(.notFound)
    /// The policy database could not be read or written (→ `internal`).
    public static let storage = Code(.storage)
    /// The cluster policy store cannot be reached, or has not caught up yet; retrying may
    /// succeed (→ `unavailable`).
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
