import GRPCCore

extension PolicyError: RPCErrorConvertible {
  /// Exhaustive: a new code must choose its status.
  public var rpcErrorCode: RPCError.Code {
    switch code.wrapped {
    case .invalidManifest, .invalidRequest: .invalidArgument
    case .notFound: .notFound
    case .storage: .internalError
    case .unavailable: .unavailable
    }
  }

  public var rpcErrorMessage: String { description }
}
