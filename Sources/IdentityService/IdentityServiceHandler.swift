import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import TesseraRuntime

/// The gRPC face of the identity service; one RPC per file in `IdentityService+*.swift`.
public struct IdentityServiceHandler: Tessera_Identity_V1_IdentityService.SimpleServiceProtocol {
  let allocator: IdentityAllocator
  let logger: Logger

  public init(allocator: IdentityAllocator, logger: Logger) {
    self.allocator = allocator
    self.logger = logger
  }
}
