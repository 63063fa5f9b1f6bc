internal import EtcdProto
import Foundation

/// One key as etcd holds it.
public struct EtcdKeyValue: Sendable, Hashable {
  public var key: Data
  public var value: Data
  /// The lease the key is bound to; 0 when it outlives every node.
  public var lease: Int64
  /// The revision of the key's last change.
  public var modRevision: Int64
  /// The revision that created the key (0 once it is deleted).
  public var createRevision: Int64

  public init(
    key: Data, value: Data = Data(), lease: Int64 = 0, modRevision: Int64 = 0,
    createRevision: Int64 = 0
  ) {
    self.key = key
    self.value = value
    self.lease = lease
    self.modRevision = modRevision
    self.createRevision = createRevision
  }

  init(_ kv: Mvccpb_KeyValue) {
    self.init(
      key: kv.key, value: kv.value, lease: kv.lease, modRevision: kv.modRevision,
      createRevision: kv.createRevision)
  }
}

/// A change to one key, as a watch reports it.
public struct EtcdEvent: Sendable, Hashable {
  public enum Kind: Sendable, Hashable {
    /// The key was created or overwritten; ``EtcdEvent/kv`` holds the new value.
    case put
    /// The key was deleted; ``EtcdEvent/kv`` holds the key and the deleting revision.
    case delete
  }

  public var kind: Kind
  public var kv: EtcdKeyValue

  public init(kind: Kind, kv: EtcdKeyValue) {
    self.kind = kind
    self.kv = kv
  }

  /// Nil for an event type this client does not know (etcd has only put and delete).
  init?(_ event: Mvccpb_Event) {
    switch event.type {
    case .put: self.init(kind: .put, kv: EtcdKeyValue(event.kv))
    case .delete: self.init(kind: .delete, kv: EtcdKeyValue(event.kv))
    case .UNRECOGNIZED: return nil
    }
  }
}

/// One condition of a transaction; build it with ``Etcd/absent(_:)``, ``Etcd/holds(_:_:)`` and friends.
public struct EtcdCompare: Sendable {
  let proto: Etcdserverpb_Compare
}

/// One operation of a transaction; build it with ``Etcd/put(_:_:lease:)``, ``Etcd/delete(_:)``, ``Etcd/get(_:)``.
public struct EtcdOperation: Sendable {
  let proto: Etcdserverpb_RequestOp
}

/// A compare-guarded transaction: every compare holds → `success`, else `failure`. Build it with ``Etcd/txn(when:then:else:)``.
public struct EtcdTransaction: Sendable {
  public var compares: [EtcdCompare]
  public var success: [EtcdOperation]
  public var failure: [EtcdOperation]

  public init(compares: [EtcdCompare], success: [EtcdOperation], failure: [EtcdOperation] = []) {
    self.compares = compares
    self.success = success
    self.failure = failure
  }

  var proto: Etcdserverpb_TxnRequest {
    .with {
      $0.compare = compares.map(\.proto)
      $0.success = success.map(\.proto)
      $0.failure = failure.map(\.proto)
    }
  }
}

/// What one operation of a transaction answered.
public enum EtcdOperationResult: Sendable, Hashable {
  /// A get: the keys it found.
  case range([EtcdKeyValue])
  case put
  /// A delete: how many keys it removed.
  case delete(deleted: Int64)
  /// A nested transaction.
  indirect case transaction(EtcdTransactionResult)

  /// The keys a get found; empty for a put or a delete.
  public var kvs: [EtcdKeyValue] {
    if case .range(let kvs) = self { return kvs }
    return []
  }

  init(_ response: Etcdserverpb_ResponseOp) {
    switch response.response {
    case .responseRange(let range): self = .range(range.kvs.map(EtcdKeyValue.init))
    case .responseDeleteRange(let delete): self = .delete(deleted: delete.deleted)
    case .responsePut: self = .put
    case .responseTxn(let txn): self = .transaction(EtcdTransactionResult(txn))
    // etcd always says which operation answered; an empty answer found nothing.
    case nil: self = .range([])
    }
  }
}

/// How a transaction ended.
public struct EtcdTransactionResult: Sendable, Hashable {
  /// Every compare held, so the success branch ran.
  public var succeeded: Bool
  /// The store's revision after the transaction.
  public var revision: Int64
  /// One result per operation of the branch that ran, in order.
  public var responses: [EtcdOperationResult]

  public init(succeeded: Bool, revision: Int64, responses: [EtcdOperationResult]) {
    self.succeeded = succeeded
    self.revision = revision
    self.responses = responses
  }

  init(_ response: Etcdserverpb_TxnResponse) {
    self.init(
      succeeded: response.succeeded, revision: response.header.revision,
      responses: response.responses.map(EtcdOperationResult.init))
  }
}
