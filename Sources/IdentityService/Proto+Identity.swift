import TesseraProto

// Conversions from the identity service's domain types to its wire messages.

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
