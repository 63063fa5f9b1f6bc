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

extension Tessera_Identity_V1_IdentityInfo {
  init(_ stored: StoredIdentity) {
    self.init()
    identity = .init(stored.identity)
    reserved = stored.identity.id.isReserved
    references = UInt32(clamping: stored.totalReferences)
    nodes = stored.references.sorted { $0.key < $1.key }.map { node, count in
      .with {
        $0.node = node
        $0.count = UInt32(clamping: count)
      }
    }
    createdAtUnixMs = stored.createdAtMilliseconds
  }
}
