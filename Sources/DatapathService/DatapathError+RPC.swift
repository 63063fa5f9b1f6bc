import GRPCCore

extension DatapathError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch code {
    case .invalidArgument: .invalidArgument
    case .notFound: .notFound
    case .unavailable: .unavailable
    default: .failedPrecondition
    }
  }

  public var rpcErrorMessage: String { description }
}
