import GRPCCore

extension DatapathError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    // Exhaustive: a new code must say what it means on the wire. Only
    // `unavailable` tells a caller to try again.
    switch code.wrapped {
    case .invalidArgument: .invalidArgument
    case .notFound: .notFound
    case .unavailable: .unavailable
    case .precondition: .failedPrecondition
    case .kernel: .failedPrecondition
    }
  }

  public var rpcErrorMessage: String { description }
}
