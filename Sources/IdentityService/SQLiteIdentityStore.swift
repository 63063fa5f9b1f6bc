import Foundation
import GRDB
import Synchronization
import TesseraCore

/// The embedded identity store: one SQLite file, for a single node or a few
/// nodes on one machine. Survives restarts: the same labels get the same ID.
public final class SQLiteIdentityStore: IdentityStore {
  private let database: IdentityDatabase
  private let range: ClosedRange<UInt32>
  /// Every ID of the range below it is taken: the search for the lowest free ID
  /// starts here instead of at the bottom of the range (a scan of every identity
  /// per allocation otherwise). Raised by allocations, lowered by deletions, both
  /// inside the serialised write transactions; back to the bottom when a write fails.
  private let lowestPossiblyFree: Mutex<Int64>
  public let backendDescription: String

  /// - Parameters:
  ///   - path: the database file; `nil` keeps it in memory (tests).
  ///   - clusterID: selects the allocation range.
  public init(path: String?, clusterID: UInt32 = 0) throws(IdentityError) {
    do {
      var configuration = Configuration()
      configuration.foreignKeysEnabled = true
      configuration.busyMode = .timeout(5)
      // WAL with synchronous=NORMAL: a committed allocation survives a crash of
      // the daemon (the case that matters for duplicate identities); only an OS
      // crash may lose the last transactions, and their references with them.
      // FULL costs an fsync per allocation (≈15 ms here).
      configuration.prepareDatabase { db in
        if !db.configuration.readonly,
          try String.fetchOne(db, sql: "PRAGMA journal_mode") != "memory"
        {
          try db.execute(sql: "PRAGMA journal_mode = WAL")
          try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
      }
      if let path {
        try FileManager.default.createDirectory(
          atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        database = try IdentityDatabase(DatabaseQueue(path: path, configuration: configuration))
        backendDescription = "sqlite:\(path)"
      } else {
        database = try IdentityDatabase(DatabaseQueue(configuration: configuration))
        backendDescription = "sqlite (in memory)"
      }
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "cannot open identity database \(path ?? ":memory:")",
        cause: error)
    }
    range = NumericIdentity.allocationRange(clusterID: clusterID)
    lowestPossiblyFree = Mutex(Int64(range.lowerBound))
  }

  public func allocate(labels: LabelSet, node: String) async throws(IdentityError) -> (
    identity: SecurityIdentity, isNew: Bool
  ) {
    let key = labels.canonicalKey
    let range = self.range
    let result: Result<(Int64, Bool), IdentityError> = await write { db in
      let now = Self.now()
      var isNew = false
      var record = try IdentityRecord.all().labelled(key).fetchOne(db)
      if record == nil {
        let from = self.lowestPossiblyFree.withLock { $0 }
        guard let id = try Self.lowestFreeID(db, in: range, from: from) else {
          return .failure(
            IdentityError(code: .exhausted, message: "no free identity left in \(range)"))
        }
        self.lowestPossiblyFree.withLock { $0 = id + 1 }
        record = IdentityRecord(
          id: id, canonicalLabels: key, createdAt: now, unreferencedSince: nil)
        try record!.insert(db)
        isNew = true
      } else if record!.unreferencedSince != nil {
        record!.unreferencedSince = nil
        try record!.update(db)
      }
      try db.execute(
        sql: """
          INSERT INTO identity_reference (identityId, node, count) VALUES (?, ?, 1)
          ON CONFLICT(identityId, node) DO UPDATE SET count = count + 1
          """, arguments: [record!.id, node])
      return .success((record!.id, isNew))
    }
    let (id, isNew) = try result.get()
    return (SecurityIdentity(id: NumericIdentity(UInt32(id)), labels: labels), isNew)
  }

  public func release(id: NumericIdentity, node: String) async throws(IdentityError)
    -> IdentityRelease
  {
    let result: Result<IdentityRelease, IdentityError> = await write { db in
      guard var record = try IdentityRecord.fetchOne(db, key: Int64(id.rawValue)) else {
        return .failure(IdentityError(code: .notFound, message: "no identity \(id)"))
      }
      let released = try Self.dropReference(db, identity: record.id, node: node)
      let remaining = try Self.totalReferences(db, identity: record.id)
      if remaining == 0 && record.unreferencedSince == nil {
        record.unreferencedSince = Self.now()
        try record.update(db)
      }
      return .success(IdentityRelease(released: released, remainingReferences: remaining))
    }
    return try result.get()
  }

  public func rollback(identity: SecurityIdentity, node: String, wasNew: Bool)
    async throws(IdentityError)
  {
    let _: Result<Void, IdentityError> = await write { db in
      let id = Int64(identity.id.rawValue)
      _ = try Self.dropReference(db, identity: id, node: node)
      guard try Self.totalReferences(db, identity: id) == 0 else { return .success(()) }
      if wasNew {
        _ = try IdentityRecord.deleteOne(db, key: id)
        self.lowestPossiblyFree.withLock { $0 = min($0, id) }
      } else if var record = try IdentityRecord.fetchOne(db, key: id),
        record.unreferencedSince == nil
      {
        record.unreferencedSince = Self.now()
        try record.update(db)
      }
      return .success(())
    }
  }

  public func syncReferences(node: String, held: [NumericIdentity: Int]) async throws(IdentityError)
    -> ReferenceSync
  {
    let result: Result<ReferenceSync, IdentityError> = await write { db in
      var sync = ReferenceSync()
      let now = Self.now()
      let existing = try IdentityReferenceRecord.filter(
        IdentityReferenceRecord.Columns.node == node
      ).fetchAll(db)
      var touched: Set<Int64> = []
      for var reference in existing {
        let wanted = held[NumericIdentity(UInt32(reference.identityId))] ?? 0
        guard wanted != reference.count else { continue }
        touched.insert(reference.identityId)
        if wanted == 0 {
          sync.dropped += Int(reference.count)
          try reference.delete(db)
        } else {
          if wanted > reference.count {
            sync.added += wanted - Int(reference.count)
          } else {
            sync.dropped += Int(reference.count) - wanted
          }
          reference.count = Int64(wanted)
          try reference.update(db)
        }
      }
      let known = Set(existing.map(\.identityId))
      for (id, count) in held where count > 0 && !known.contains(Int64(id.rawValue)) {
        guard try IdentityRecord.fetchOne(db, key: Int64(id.rawValue)) != nil else {
          sync.missing.append(id)
          continue
        }
        try IdentityReferenceRecord(identityId: Int64(id.rawValue), node: node, count: Int64(count))
          .insert(db)
        touched.insert(Int64(id.rawValue))
        sync.added += count
      }
      for id in touched {
        guard var record = try IdentityRecord.fetchOne(db, key: id) else { continue }
        let referenced = try Self.totalReferences(db, identity: id) > 0
        if referenced != (record.unreferencedSince == nil) {
          record.unreferencedSince = referenced ? nil : now
          try record.update(db)
        }
      }
      sync.missing.sort()
      return .success(sync)
    }
    return try result.get()
  }

  public func identity(id: NumericIdentity) async throws(IdentityError) -> StoredIdentity? {
    try read { db in
      try IdentityRecord.fetchOne(db, key: Int64(id.rawValue)).map { try Self.stored($0, db) }
    }
  }

  public func identity(labels: LabelSet) async throws(IdentityError) -> StoredIdentity? {
    try read { db in
      try IdentityRecord.all().labelled(labels.canonicalKey).fetchOne(db).map {
        try Self.stored($0, db)
      }
    }
  }

  public func identities() async throws(IdentityError) -> [StoredIdentity] {
    try read { db in
      let references = try IdentityReferenceRecord.fetchAll(db)
      var byIdentity: [Int64: [String: Int]] = [:]
      for reference in references {
        byIdentity[reference.identityId, default: [:]][reference.node] = Int(reference.count)
      }
      return try IdentityRecord.order(IdentityRecord.Columns.id).fetchAll(db).map { record in
        StoredIdentity(
          identity: try Self.securityIdentity(record), references: byIdentity[record.id] ?? [:],
          createdAtMilliseconds: record.createdAt)
      }
    }
  }

  public func collectGarbage(gracePeriodMilliseconds: Int64) async throws(IdentityError)
    -> [SecurityIdentity]
  {
    let result: Result<[SecurityIdentity], IdentityError> = await write { db in
      let cutoff = Self.now() - gracePeriodMilliseconds
      let doomed = try IdentityRecord.all().unreferenced(before: cutoff).fetchAll(db)
      var deleted: [SecurityIdentity] = []
      for record in doomed where try Self.totalReferences(db, identity: record.id) == 0 {
        _ = try IdentityRecord.deleteOne(db, key: record.id)
        self.lowestPossiblyFree.withLock { $0 = min($0, record.id) }
        deleted.append(try Self.securityIdentity(record))
      }
      return .success(deleted)
    }
    return try result.get()
  }

  // MARK: - Helpers

  /// Runs `body` in one write transaction, suspending (not blocking a thread)
  /// while other writes go first.
  private func write<T: Sendable>(
    _ body: @escaping @Sendable (Database) throws -> Result<T, IdentityError>
  ) async -> Result<T, IdentityError> {
    do {
      return try await database.writer.write { db in try body(db) }
    } catch {
      // Rolled back: an ID the hint passed may be free again.
      self.lowestPossiblyFree.withLock { $0 = Int64(range.lowerBound) }
      if let error = error as? IdentityError { return .failure(error) }
      return .failure(
        IdentityError(
          code: .storeUnavailable, message: "identity database write failed", cause: error))
    }
  }

  private func read<T>(_ body: @Sendable (Database) throws -> T) throws(IdentityError) -> T {
    do {
      return try database.writer.read { db in try body(db) }
    } catch let error as IdentityError {
      throw error
    } catch {
      throw IdentityError(
        code: .storeUnavailable, message: "identity database read failed", cause: error)
    }
  }

  private static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

  /// The lowest unused ID in the range: a fresh database hands out 256, 257, …
  /// and a freed ID is reused only after its identity has been garbage collected.
  /// The lowest free ID of `range`, searched from `hint` (IDs below it are taken);
  /// from the bottom again when nothing is free above it.
  private static func lowestFreeID(_ db: Database, in range: ClosedRange<UInt32>, from hint: Int64)
    throws -> Int64?
  {
    let bottom = Int64(range.lowerBound)
    let high = Int64(range.upperBound)
    func firstFree(from low: Int64) throws -> Int64? {
      guard low <= high else { return nil }
      guard try !IdentityRecord.filter(key: low).isEmpty(db) else { return low }
      return try Int64.fetchOne(
        db,
        sql: """
          SELECT a.id + 1 FROM identity a
          WHERE a.id >= ? AND a.id < ? AND NOT EXISTS (SELECT 1 FROM identity b WHERE b.id = a.id + 1)
          ORDER BY a.id LIMIT 1
          """, arguments: [low, high])
    }
    let start = min(max(bottom, hint), high + 1)
    if let free = try firstFree(from: start) { return free }
    return start > bottom ? try firstFree(from: bottom) : nil
  }

  private static func dropReference(_ db: Database, identity: Int64, node: String) throws -> Bool {
    guard
      var reference = try IdentityReferenceRecord.fetchOne(
        db, key: ["identityId": identity, "node": node])
    else {
      return false
    }
    if reference.count > 1 {
      reference.count -= 1
      try reference.update(db)
    } else {
      try reference.delete(db)
    }
    return true
  }

  private static func totalReferences(_ db: Database, identity: Int64) throws -> Int {
    try Int.fetchOne(
      db, sql: "SELECT COALESCE(SUM(count), 0) FROM identity_reference WHERE identityId = ?",
      arguments: [identity]) ?? 0
  }

  private static func stored(_ record: IdentityRecord, _ db: Database) throws -> StoredIdentity {
    let references = try IdentityReferenceRecord.filter(
      IdentityReferenceRecord.Columns.identityId == record.id
    ).fetchAll(db)
    return StoredIdentity(
      identity: try securityIdentity(record),
      references: Dictionary(references.map { ($0.node, Int($0.count)) }, uniquingKeysWith: +),
      createdAtMilliseconds: record.createdAt)
  }

  private static func securityIdentity(_ record: IdentityRecord) throws -> SecurityIdentity {
    SecurityIdentity(
      id: NumericIdentity(UInt32(record.id)),
      labels: try LabelSet(canonicalKey: record.canonicalLabels))
  }
}
