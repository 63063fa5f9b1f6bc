import GRPCCore

extension EndpointError: RPCErrorConvertible {
  /// Exhaustive: a new code must choose its status; nothing falls back to UNAVAILABLE,
  /// which callers (the CNI plugin) take as "try again".
  public var rpcErrorCode: RPCError.Code {
    switch code.wrapped {
    case .invalidArgument: .invalidArgument
    case .duplicate: .alreadyExists
    case .notFound: .notFound
    case .staleRevision: .aborted
    case .upstreamUnavailable: .unavailable
    case .deadlineExceeded: .deadlineExceeded
    case .illegalTransition: .failedPrecondition
    case .failedPrecondition: .failedPrecondition
    case .upstreamFailed: .internalError
    }
  }

  public var rpcErrorMessage: String { description }
}
