import Foundation
import GRDB
import Synchronization

/// This replica's own references on a shared store, kept on local disk.
///
/// The shared store (etcd) only records that a node holds an identity (one
/// key bound to the node's lease); how many endpoints hold it is the node's
/// business, and must survive a restart of the daemon and a lost lease, which
/// deletes the node's keys. `synced` is false while the key in etcd may not
/// match the count (etcd was unreachable, or the lease was lost).
final class NodeReferenceTable: Sendable {
  struct Key: Hashable, Sendable {
    var canonicalLabels: String
    var node: String
  }

  struct Row: Hashable, Sendable {
    var identity: UInt32
    var count: Int
    var synced: Bool
  }

  private let writer: any DatabaseWriter
  private let rows: Mutex<[Key: Row]>

  /// - Parameter path: the file; `nil` keeps it in memory (tests).
  init(path: String?) throws {
    var configuration = Configuration()
    configuration.busyMode = .timeout(5)
    configuration.prepareDatabase { db in
      if try String.fetchOne(db, sql: "PRAGMA journal_mode") != "memory" {
        try db.execute(sql: "PRAGMA journal_mode = WAL")
        try db.execute(sql: "PRAGMA synchronous = NORMAL")
      }
    }
    if let path {
      try FileManager.default.createDirectory(
        atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      writer = try DatabaseQueue(path: path, configuration: configuration)
    } else {
      writer = try DatabaseQueue(configuration: configuration)
    }
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1: node references and lease") { db in
      try db.execute(
        sql: """
          CREATE TABLE node_reference (
            canonicalLabels TEXT NOT NULL,
            node TEXT NOT NULL,
            identityId INTEGER NOT NULL,
            count INTEGER NOT NULL CHECK (count >= 0),
            synced INTEGER NOT NULL,
            PRIMARY KEY (canonicalLabels, node)
          );
          CREATE TABLE setting (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
          """)
    }
    try migrator.migrate(writer)
    let loaded = try writer.read { db in
      try Row.fetchAllWithKeys(db)
    }
    rows = Mutex(loaded)
  }

  func row(_ key: Key) -> Row? { rows.withLock { $0[key] } }

  func all() -> [Key: Row] { rows.withLock { $0 } }

  func rows(identity: UInt32) -> [Key: Row] {
    rows.withLock { $0.filter { $0.value.identity == identity } }
  }

  /// Writes the row through to disk (or deletes it when `row` is nil).
  func set(_ key: Key, _ row: Row?) throws {
    try writer.write { db in
      if let row {
        try db.execute(
          sql: """
            INSERT INTO node_reference (canonicalLabels, node, identityId, count, synced) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT(canonicalLabels, node) DO UPDATE SET identityId = excluded.identityId, count = excluded.count, synced = excluded.synced
            """,
          arguments: [key.canonicalLabels, key.node, Int64(row.identity), row.count, row.synced])
      } else {
        try db.execute(
          sql: "DELETE FROM node_reference WHERE canonicalLabels = ? AND node = ?",
          arguments: [key.canonicalLabels, key.node])
      }
    }
    rows.withLock { $0[key] = row }
  }

  /// Marks every row as needing its etcd key written again (after a lost lease).
  func markAllUnsynced() throws {
    try writer.write { db in try db.execute(sql: "UPDATE node_reference SET synced = 0") }
    rows.withLock { rows in
      for key in rows.keys { rows[key]!.synced = false }
    }
  }

  func setting(_ name: String) throws -> Int64? {
    try writer.read { db in
      try Int64.fetchOne(db, sql: "SELECT value FROM setting WHERE name = ?", arguments: [name])
    }
  }

  func setSetting(_ name: String, _ value: Int64) throws {
    try writer.write { db in
      try db.execute(
        sql:
          "INSERT INTO setting (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        arguments: [name, value])
    }
  }
}

extension NodeReferenceTable.Row {
  fileprivate static func fetchAllWithKeys(_ db: Database) throws -> [NodeReferenceTable.Key: Self]
  {
    var result: [NodeReferenceTable.Key: Self] = [:]
    for row in try GRDB.Row.fetchAll(
      db, sql: "SELECT canonicalLabels, node, identityId, count, synced FROM node_reference")
    {
      let key = NodeReferenceTable.Key(canonicalLabels: row["canonicalLabels"], node: row["node"])
      result[key] = Self(
        identity: UInt32(row["identityId"] as Int64), count: row["count"], synced: row["synced"])
    }
    return result
  }
}
