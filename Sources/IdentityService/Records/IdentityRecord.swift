import GRDB

/// A row of `identity`: one allocated identity and its canonical label key.
struct IdentityRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
  static let databaseTableName = "identity"

  var id: Int64
  /// ``TesseraCore/LabelSet/canonicalKey``; UNIQUE, so one label set has one identity.
  var canonicalLabels: String
  var createdAt: Int64
  /// When the last reference went away; NULL while referenced.
  var unreferencedSince: Int64?

  enum Columns {
    static let id = Column(CodingKeys.id)
    static let canonicalLabels = Column(CodingKeys.canonicalLabels)
    static let unreferencedSince = Column(CodingKeys.unreferencedSince)
  }

  static let references = hasMany(IdentityReferenceRecord.self)
}

extension DerivableRequest<IdentityRecord> {
  func labelled(_ canonicalLabels: String) -> Self {
    filter(IdentityRecord.Columns.canonicalLabels == canonicalLabels)
  }

  func unreferenced(before cutoff: Int64) -> Self {
    filter(
      IdentityRecord.Columns.unreferencedSince != nil
        && IdentityRecord.Columns.unreferencedSince <= cutoff)
  }
}

/// A row of `identity_reference`: how many references one node holds on one identity.
struct IdentityReferenceRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
  static let databaseTableName = "identity_reference"

  var identityId: Int64
  var node: String
  var count: Int64

  enum Columns {
    static let identityId = Column(CodingKeys.identityId)
    static let node = Column(CodingKeys.node)
  }

  static let identity = belongsTo(IdentityRecord.self)
}
