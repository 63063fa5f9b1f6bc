import GRPCCore

extension IdentityError: RPCErrorConvertible {
  /// Exhaustive: a new code must choose its status. Only the store and the policy
  /// service being unreachable are UNAVAILABLE, which callers take as "try again".
  public var rpcErrorCode: RPCError.Code {
    switch code.wrapped {
    case .invalidLabels: .invalidArgument
    case .notFound: .notFound
    case .exhausted: .resourceExhausted
    case .storeUnavailable: .unavailable
    case .policyUnavailable: .unavailable
    }
  }

  public var rpcErrorMessage: String { description }
}
