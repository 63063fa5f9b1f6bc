import GRDB

/// One row of the `policy` table: an imported policy, keyed by namespace and name.
struct PolicyRecord: Codable, Hashable, FetchableRecord, PersistableRecord {
  static let databaseTableName = "policy"

  var namespace: String
  var name: String
  var kind: String
  /// The repository revision the policy was imported at.
  var revision: Int64
  var sourceJSON: String
  var ruleCount: Int

  enum Columns {
    static let namespace = Column(CodingKeys.namespace)
    static let name = Column(CodingKeys.name)
  }
}

extension DerivableRequest<PolicyRecord> {
  /// Policies in namespace/name order.
  func orderedByName() -> Self {
    order(PolicyRecord.Columns.namespace, PolicyRecord.Columns.name)
  }
}

/// The single row of the `repository` table: the repository revision.
struct RepositoryRecord: Codable, Hashable, FetchableRecord, PersistableRecord {
  static let databaseTableName = "repository"

  /// Always 1.
  var id: Int64 = 1
  var revision: Int64
}
