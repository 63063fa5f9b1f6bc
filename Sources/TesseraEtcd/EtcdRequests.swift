internal import EtcdProto
import Foundation

/// Small builders for etcd requests, so transactions read like their intent.
public enum Etcd {
  /// The end of the range holding every key that starts with `prefix`.
  public static func prefixEnd(_ prefix: Data) -> Data {
    var end = [UInt8](prefix)
    while let last = end.last {
      if last < 0xff {
        end[end.count - 1] = last + 1
        return Data(end)
      }
      end.removeLast()
    }
    return Data([0])  // every key
  }

  public static func key(_ text: String) -> Data { Data(text.utf8) }

  /// Every key under `prefix`, `limit` at a time, at one revision.
  static func rangePrefix(_ prefix: String, keysOnly: Bool = false, limit: Int64 = 1000)
    -> Etcdserverpb_RangeRequest
  {
    .with {
      $0.key = key(prefix)
      $0.rangeEnd = prefixEnd(key(prefix))
      $0.keysOnly = keysOnly
      $0.limit = limit
    }
  }

  /// `key` does not exist (it was never created, or was deleted).
  public static func absent(_ key: String) -> EtcdCompare {
    EtcdCompare(
      proto: .with {
        $0.key = Etcd.key(key)
        $0.target = .create
        $0.result = .equal
        $0.createRevision = 0
      })
  }

  /// No key starts with `prefix`.
  public static func noneUnder(_ prefix: String) -> EtcdCompare {
    EtcdCompare(
      proto: .with {
        $0.key = Etcd.key(prefix)
        $0.rangeEnd = prefixEnd(Etcd.key(prefix))
        $0.target = .create
        $0.result = .equal
        $0.createRevision = 0
      })
  }

  /// `key` exists and holds exactly `value`.
  public static func holds(_ key: String, _ value: String) -> EtcdCompare {
    EtcdCompare(
      proto: .with {
        $0.key = Etcd.key(key)
        $0.target = .value
        $0.result = .equal
        $0.value = Data(value.utf8)
      })
  }

  /// `key` was last modified at `revision`.
  public static func modifiedAt(_ key: String, _ revision: Int64) -> EtcdCompare {
    EtcdCompare(
      proto: .with {
        $0.key = Etcd.key(key)
        $0.target = .mod
        $0.result = .equal
        $0.modRevision = revision
      })
  }

  public static func put(_ key: String, _ value: String, lease: Int64 = 0) -> EtcdOperation {
    EtcdOperation(
      proto: .with {
        $0.requestPut = .with {
          $0.key = Etcd.key(key)
          $0.value = Data(value.utf8)
          $0.lease = lease
        }
      })
  }

  public static func delete(_ key: String) -> EtcdOperation {
    EtcdOperation(proto: .with { $0.requestDeleteRange = .with { $0.key = Etcd.key(key) } })
  }

  public static func get(_ key: String) -> EtcdOperation {
    EtcdOperation(proto: .with { $0.requestRange = .with { $0.key = Etcd.key(key) } })
  }

  public static func txn(
    when compares: [EtcdCompare], then success: [EtcdOperation], else failure: [EtcdOperation] = []
  ) -> EtcdTransaction {
    EtcdTransaction(compares: compares, success: success, failure: failure)
  }
}

extension EtcdClient {
  /// Every key-value under `prefix`, paged so no response exceeds etcd's
  /// limits, all read at the revision of the first page. Returns the revision too.
  public func rangeAll(prefix: String, keysOnly: Bool = false) async throws(EtcdError) -> (
    kvs: [EtcdKeyValue], revision: Int64
  ) {
    var request = Etcd.rangePrefix(prefix, keysOnly: keysOnly)
    var kvs: [EtcdKeyValue] = []
    var revision: Int64 = 0
    while true {
      let response = try await range(request)
      if revision == 0 {
        revision = response.header.revision
        request.revision = revision
      }
      kvs.append(contentsOf: response.kvs.map(EtcdKeyValue.init))
      guard response.more, let last = response.kvs.last else { return (kvs, revision) }
      request.key = last.key + Data([0])
    }
  }
}
