import GRPCCore

extension IdentityError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code {
    switch code {
    case .invalidLabels: .invalidArgument
    case .notFound: .notFound
    case .exhausted: .resourceExhausted
    default: .unavailable
    }
  }

  public var rpcErrorMessage: String { description }
}
