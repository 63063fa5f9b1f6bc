import GRPCCore

extension EndpointError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch code {
    case .invalidArgument: .invalidArgument
    case .duplicate: .alreadyExists
    case .notFound: .notFound
    case .staleRevision: .aborted
    case .deadlineExceeded: .deadlineExceeded
    case .illegalTransition: .failedPrecondition
    default: .unavailable
    }
  }

  public var rpcErrorMessage: String { description }
}
