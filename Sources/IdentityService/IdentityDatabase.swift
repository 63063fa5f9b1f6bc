import GRDB

/// Owns the SQLite database of the embedded identity store and its migrations.
final class IdentityDatabase: Sendable {
  let writer: any DatabaseWriter

  init(_ writer: any DatabaseWriter) throws {
    self.writer = writer
    try Self.migrator.migrate(writer)
  }

  /// Named migrations; never edit one that has shipped.
  static var migrator: DatabaseMigrator {
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1: identities and references") { db in
      try db.execute(
        sql: """
          CREATE TABLE identity (
            id INTEGER PRIMARY KEY NOT NULL,
            canonicalLabels TEXT NOT NULL UNIQUE,
            createdAt INTEGER NOT NULL,
            unreferencedSince INTEGER
          );
          CREATE TABLE identity_reference (
            identityId INTEGER NOT NULL REFERENCES identity(id) ON DELETE CASCADE,
            node TEXT NOT NULL,
            count INTEGER NOT NULL CHECK (count > 0),
            PRIMARY KEY (identityId, node)
          );
          CREATE INDEX identity_unreferenced ON identity(unreferencedSince) WHERE unreferencedSince IS NOT NULL;
          """)
    }
    return migrator
  }
}
