internal import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Synchronization
import TesseraRuntime

/// A client of one etcd cluster, speaking etcd's own v3 gRPC API.
///
/// Holds one connection per member. A call goes to the member that answered
/// last; when it is down or slow (UNAVAILABLE, DEADLINE_EXCEEDED) the call moves
/// on to the next member, so losing one member of three costs one deadline,
/// not an outage. Callers that write treat ``EtcdError/Code/unavailable`` as
/// "outcome unknown" and read back before retrying: every write here is a
/// compare-guarded transaction, so a retry can never apply twice.
public final class EtcdClient: Sendable {
  private struct Member: Sendable {
    let endpoint: EtcdConfiguration.Endpoint
    let client: GRPCClient<HTTP2ClientTransport.Posix>
  }

  public let configuration: EtcdConfiguration
  private let members: [Member]
  private let preferred = Atomic<Int>(0)
  private let logger: Logger

  public init(configuration: EtcdConfiguration, logger: Logger = Logger(label: "tessera.etcd"))
    throws(EtcdError)
  {
    self.configuration = configuration
    self.logger = logger
    var members: [Member] = []
    for endpoint in configuration.endpoints {
      do {
        let transport = try HTTP2ClientTransport.Posix(
          target: Self.target(endpoint),
          transportSecurity: try Self.transportSecurity(endpoint, configuration.tls),
          config: .defaults { config in
            config.backoff.initial = .milliseconds(50)
            config.backoff.max = .seconds(1)
            config.connection.maxIdleTime = nil
            // etcd rejects pings closer than 5 s apart.
            config.connection.keepalive = .init(
              time: .seconds(10), timeout: .seconds(5), allowWithoutCalls: true)
          })
        members.append(Member(endpoint: endpoint, client: GRPCClient(transport: transport)))
      } catch {
        throw EtcdError(
          code: .invalidConfiguration, message: "cannot set up a connection to etcd at \(endpoint)",
          cause: error)
      }
    }
    self.members = members
  }

  /// An address stays an address: a DNS target would put it in TLS SNI, which TLS forbids.
  private static func target(_ endpoint: EtcdConfiguration.Endpoint) -> any ResolvableTarget {
    var buffer = in6_addr()
    if inet_pton(AF_INET, endpoint.host, &buffer) == 1 {
      return ResolvableTargets.IPv4.ipv4(address: endpoint.host, port: endpoint.port)
    }
    if inet_pton(AF_INET6, endpoint.host, &buffer) == 1 {
      return ResolvableTargets.IPv6.ipv6(address: endpoint.host, port: endpoint.port)
    }
    return ResolvableTargets.DNS.dns(host: endpoint.host, port: endpoint.port)
  }

  private static func transportSecurity(
    _ endpoint: EtcdConfiguration.Endpoint, _ tls: EtcdConfiguration.TLSFiles
  ) throws -> HTTP2ClientTransport.Posix.TransportSecurity {
    guard endpoint.secure else { return .plaintext }
    return .tls { config in
      if let ca = tls.caFile { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
      if let certificate = tls.certificateFile, let key = tls.keyFile {
        config.certificateChain = [.file(path: certificate, format: .pem)]
        config.privateKey = .file(path: key, format: .pem)
      }
    }
  }

  /// The members, as given (for status output).
  public var endpointsDescription: String {
    configuration.endpoints.map(\.description).joined(separator: ",")
  }

  /// Maintains the connections until ``beginGracefulShutdown()``; run it for as long as the client is used.
  public func runConnections() async throws {
    try await withThrowingDiscardingTaskGroup { group in
      for member in members {
        group.addTask { try await member.client.runConnections() }
      }
    }
  }

  public func beginGracefulShutdown() {
    for member in members { member.client.beginGracefulShutdown() }
  }

  // MARK: - Unary calls with failover

  func range(_ request: Etcdserverpb_RangeRequest) async throws(EtcdError)
    -> Etcdserverpb_RangeResponse
  {
    try await unary("Range") { client, options in
      try await Etcdserverpb_KV.Client(wrapping: client).range(request, options: options)
    }
  }

  /// Runs `transaction` atomically.
  public func txn(_ transaction: EtcdTransaction) async throws(EtcdError) -> EtcdTransactionResult {
    let request = transaction.proto
    let response = try await unary("Txn") { client, options in
      try await Etcdserverpb_KV.Client(wrapping: client).txn(request, options: options)
    }
    return EtcdTransactionResult(response)
  }

  /// Deletes `key` (nothing happens when it is absent); returns how many keys went.
  @discardableResult
  public func delete(_ key: String) async throws(EtcdError) -> Int64 {
    let request = Etcdserverpb_DeleteRangeRequest.with { $0.key = Etcd.key(key) }
    return try await unary("DeleteRange") { client, options in
      try await Etcdserverpb_KV.Client(wrapping: client).deleteRange(request, options: options)
    }.deleted
  }

  /// Grants a lease of `ttl` seconds and returns its ID.
  public func grantLease(ttl: Int64) async throws(EtcdError) -> Int64 {
    let response = try await unary("LeaseGrant") { client, options in
      try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(
        .with { $0.ttl = ttl }, options: options)
    }
    guard response.error.isEmpty, response.id != 0 else {
      throw EtcdError(code: .failed, message: "etcd refused a lease: \(response.error)")
    }
    return response.id
  }

  /// Seconds left on `lease`; zero or less when it is gone.
  public func leaseTimeToLive(_ lease: Int64) async throws(EtcdError) -> Int64 {
    try await unary("LeaseTimeToLive") { client, options in
      try await Etcdserverpb_Lease.Client(wrapping: client).leaseTimeToLive(
        .with { $0.id = lease }, options: options)
    }.ttl
  }

  /// Renews `lease` once (one round of the keepalive stream) and returns its TTL in
  /// seconds; zero or less when it is gone. For a lease kept alive on another's
  /// behalf, renewed only when that other asks.
  public func renewLease(_ lease: Int64) async throws(EtcdError) -> Int64 {
    try await unary("LeaseKeepAlive") { client, options in
      try await Etcdserverpb_Lease.Client(wrapping: client).leaseKeepAlive(
        options: options,
        requestProducer: { writer in try await writer.write(.with { $0.id = lease }) },
        onResponse: { response in
          for try await message in response.messages { return message.ttl }
          throw RPCError(code: .unavailable, message: "keepalive stream ended without an answer")
        })
    }
  }

  public func revokeLease(_ lease: Int64) async throws(EtcdError) {
    do {
      _ = try await unary("LeaseRevoke") { client, options in
        try await Etcdserverpb_Lease.Client(wrapping: client).leaseRevoke(
          .with { $0.id = lease }, options: options)
      }
    } catch  where error.code == .failed || error.code == .leaseLost {
      // Already gone.
    }
  }

  /// The cluster's members as etcd reports them.
  func memberList() async throws(EtcdError) -> Etcdserverpb_MemberListResponse {
    try await unary("MemberList") { client, options in
      try await Etcdserverpb_Cluster.Client(wrapping: client).memberList(.init(), options: options)
    }
  }

  private func unary<Response: Sendable>(
    _ method: String,
    _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>, CallOptions) async throws -> Response
  ) async throws(EtcdError) -> Response {
    var options = CallOptions.defaults
    options.timeout = configuration.requestTimeout
    options.waitForReady = false
    let start = preferred.load(ordering: .relaxed)
    var lastError: (any Error)?
    for attempt in 0..<configuration.attempts {
      let index = (start + attempt) % members.count
      do {
        let response = try await body(members[index].client, options)
        if index != start { preferred.store(index, ordering: .relaxed) }
        return response
      } catch let error as RPCError where Self.isRetryable(error.code) {
        lastError = error
        logger.debug(
          "etcd call failed, trying the next member",
          metadata: [
            "method": "\(method)", "member": "\(members[index].endpoint)", "error": "\(error.code)",
          ])
        if Task.isCancelled { break }
        // A full round without an answer: give an election a moment before the next round.
        if attempt + 1 < configuration.attempts, (attempt + 1) % members.count == 0 {
          try? await Task.sleep(for: .milliseconds(200))
        }
      } catch let error as RPCError
        where error.code == .notFound && error.message.contains("lease not found")
      {
        throw EtcdError(
          code: .leaseLost, message: "etcd \(method): the lease is gone", cause: error)
      } catch is CancellationError where !Task.isCancelled {
        // The call's deadline passed while it waited for a connection: grpc-swift
        // cancels the waiting call rather than failing it with DEADLINE_EXCEEDED.
        lastError = RPCError(
          code: .deadlineExceeded,
          message: "no connection to \(members[index].endpoint) within the deadline")
      } catch {
        throw EtcdError(
          code: .failed, message: "etcd \(method) failed on \(members[index].endpoint)",
          cause: error)
      }
    }
    throw EtcdError(
      code: .unavailable, message: "etcd \(method): no member of \(endpointsDescription) answered",
      cause: lastError)
  }

  static func isRetryable(_ code: RPCError.Code) -> Bool {
    switch code {
    case .unavailable, .deadlineExceeded, .resourceExhausted, .aborted, .unknown: true
    default: false
    }
  }

  private func rotate(from index: Int) -> Int {
    let next = (index + 1) % members.count
    preferred.store(next, ordering: .relaxed)
    return next
  }

  // MARK: - Streams

  /// Keeps `lease` alive, renewing every `interval`, until the task is cancelled.
  ///
  /// Survives member failures by reopening the stream on the next member.
  /// - Throws: ``EtcdError/Code/leaseLost`` once etcd reports the lease gone;
  ///   `CancellationError` when cancelled.
  public func keepAlive(
    lease: Int64, interval: Duration, onRenewed: @escaping @Sendable (Int64) -> Void = { _ in }
  ) async throws {
    var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
    var index = preferred.load(ordering: .relaxed)
    while true {
      try Task.checkCancellation()
      do {
        try await Etcdserverpb_Lease.Client(wrapping: members[index].client).leaseKeepAlive(
          requestProducer: { writer in
            while true {
              try await writer.write(.with { $0.id = lease })
              try await Task.sleep(for: interval)
            }
          },
          onResponse: { response in
            for try await message in response.messages {
              if message.ttl <= 0 {
                throw EtcdError(
                  code: .leaseLost, message: "etcd lease \(String(lease, radix: 16)) expired")
              }
              onRenewed(message.ttl)
            }
          })
      } catch let error as EtcdError {
        throw error
      } catch is CancellationError where Task.isCancelled {
        throw CancellationError()
      } catch {
        if Task.isCancelled { throw CancellationError() }
        logger.debug(
          "lease keepalive stream ended",
          metadata: ["member": "\(members[index].endpoint)", "error": "\(error)"])
      }
      index = rotate(from: index)
      try await backoff.sleep()
    }
  }

  /// Streams changes of the keys in `[key, rangeEnd)` from `revision` on,
  /// until cancelled. `onEvents` receives each batch with the revision it brings
  /// the watcher to. Moves to another member when its stream breaks and
  /// resumes after the last revision seen, so no event is lost or repeated.
  /// - Throws: ``EtcdError/Code/compacted`` when the history needed has been
  ///   compacted (reload and watch again); `CancellationError` when cancelled.
  public func watch(
    key: Data, rangeEnd: Data, fromRevision revision: Int64,
    onEvents: @escaping @Sendable ([EtcdEvent], Int64) async -> Void
  ) async throws {
    let next = Mutex(revision)
    var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
    var index = preferred.load(ordering: .relaxed)
    while true {
      try Task.checkCancellation()
      let startRevision = next.withLock { $0 }
      do {
        try await Etcdserverpb_Watch.Client(wrapping: members[index].client).watch(
          requestProducer: { writer in
            try await writer.write(
              .with {
                $0.createRequest = .with {
                  $0.key = key
                  $0.rangeEnd = rangeEnd
                  $0.startRevision = startRevision
                }
              })
            // The request side stays open: etcd ends the watch when it closes.
            while true { try await Task.sleep(for: .seconds(3600)) }
          },
          onResponse: { response in
            for try await message in response.messages {
              if message.compactRevision > 0 {
                throw EtcdError(
                  code: .compacted,
                  message: "etcd history before \(message.compactRevision) is compacted")
              }
              if message.canceled {
                throw RPCError(
                  code: .unavailable, message: "etcd cancelled the watch: \(message.cancelReason)")
              }
              guard !message.events.isEmpty else { continue }
              let reached = message.events.map(\.kv.modRevision).max() ?? message.header.revision
              await onEvents(message.events.compactMap(EtcdEvent.init), reached)
              next.withLock { $0 = reached + 1 }
            }
          })
      } catch let error as EtcdError {
        throw error
      } catch is CancellationError where Task.isCancelled {
        throw CancellationError()
      } catch {
        if Task.isCancelled { throw CancellationError() }
        logger.debug(
          "watch stream ended",
          metadata: ["member": "\(members[index].endpoint)", "error": "\(error)"])
      }
      index = rotate(from: index)
      try await backoff.sleep()
    }
  }
}
