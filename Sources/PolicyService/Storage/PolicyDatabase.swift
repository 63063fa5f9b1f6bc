import GRDB

/// The policy repository on disk (SQLite through GRDB): every imported policy as its
/// normalised JSON, and the repository revision.
///
/// One `DatabaseQueue` per file for the life of the process. Each import or delete is one
/// transaction that writes the policies and the new revision together, so a crash never
/// leaves a revision that does not describe the stored policies.
public final class PolicyDatabase: Sendable {
  private let writer: any DatabaseWriter

  /// Opens (creating if needed) the database file at `path` and migrates it.
  ///
  /// - Throws: ``PolicyError`` with code `storage` when the file cannot be opened or migrated.
  public convenience init(path: String) throws(PolicyError) {
    do {
      try self.init(writer: DatabaseQueue(path: path))
    } catch {
      throw PolicyError(
        code: .storage, message: "cannot open policy database \(path)", cause: error)
    }
  }

  /// An in-memory database, for tests.
  public static func inMemory() throws(PolicyError) -> PolicyDatabase {
    do {
      return try PolicyDatabase(writer: DatabaseQueue())
    } catch {
      throw PolicyError(
        code: .storage, message: "cannot open in-memory policy database", cause: error)
    }
  }

  private init(writer: any DatabaseWriter) throws {
    self.writer = writer
    try Self.migrator.migrate(writer)
  }

  private static var migrator: DatabaseMigrator {
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1: policies and repository revision") { db in
      try db.create(table: "policy") { t in
        t.column("namespace", .text).notNull()
        t.column("name", .text).notNull()
        t.column("kind", .text).notNull()
        t.column("revision", .integer).notNull()
        t.column("sourceJSON", .text).notNull()
        t.column("ruleCount", .integer).notNull()
        t.primaryKey(["namespace", "name"])
      }
      try db.create(table: "repository") { t in
        t.column("id", .integer).primaryKey().check { $0 == 1 }
        t.column("revision", .integer).notNull()
      }
      try db.execute(sql: "INSERT INTO repository (id, revision) VALUES (1, 1)")
    }
    return migrator
  }

  /// The repository revision and every stored policy.
  func load() throws(PolicyError) -> (revision: UInt64, policies: [PolicyRecord]) {
    do {
      return try writer.read { db in
        let revision = try RepositoryRecord.fetchOne(db)?.revision ?? 1
        return (UInt64(revision), try PolicyRecord.all().orderedByName().fetchAll(db))
      }
    } catch {
      throw PolicyError(code: .storage, message: "cannot read the policy database", cause: error)
    }
  }

  /// In one transaction: stores `upserting` (replacing by namespace/name), deletes
  /// `deleting`, and sets the repository revision.
  func commit(revision: UInt64, upserting: [PolicyRecord], deleting: [PolicyKey])
    throws(PolicyError)
  {
    do {
      try writer.write { db in
        for record in upserting { try record.upsert(db) }
        for key in deleting {
          try PolicyRecord.deleteOne(db, key: ["namespace": key.namespace, "name": key.name])
        }
        try RepositoryRecord(revision: Int64(revision)).upsert(db)
      }
    } catch {
      throw PolicyError(code: .storage, message: "cannot write the policy database", cause: error)
    }
  }
}
