import Foundation
import GRPCCore
import IdentityService
import Synchronization
import TesseraCore
import Testing

@testable import EndpointService

/// A datapath whose realisations fail with a given upstream status, recording removals.
struct FailingDatapath: DatapathRealizing {
  final class Removals: Sendable {
    private let ids = Mutex<[UInt64]>([])
    func append(_ id: UInt64) { ids.withLock { $0.append(id) } }
    var all: [UInt64] { ids.withLock { $0 } }
  }
  let status: RPCError
  let removed = Removals()
  func realize(endpoint: Endpoint, policy: EndpointPolicy) async throws(EndpointError) -> UInt64 {
    throw .upstream("datapath", status)
  }
  func removeEndpoint(id: UInt64) async throws(EndpointError) { removed.append(id) }
  func realizedEndpoints() async throws(EndpointError) -> [UInt64: (
    identity: NumericIdentity, revision: UInt64
  )] { [:] }
}

@Suite("Upstream errors keep their meaning")
struct UpstreamErrorTests {
  @Test(
    "each upstream status maps to what it means for the caller",
    arguments: [
      (RPCError.Code.invalidArgument, EndpointError.Code.invalidArgument),
      (.outOfRange, .invalidArgument),
      (.notFound, .failedPrecondition),
      (.failedPrecondition, .failedPrecondition),
      (.resourceExhausted, .failedPrecondition),
      (.alreadyExists, .duplicate),
      (.unavailable, .upstreamUnavailable),
      (.cancelled, .upstreamUnavailable),
      (.aborted, .upstreamUnavailable),
      (.deadlineExceeded, .upstreamUnavailable),
      (.permissionDenied, .upstreamFailed),
      (.unauthenticated, .upstreamFailed),
      (.unimplemented, .upstreamFailed),
      (.internalError, .upstreamFailed),
      (.dataLoss, .upstreamFailed),
      (.unknown, .upstreamFailed),
    ])
  func upstreamMapping(status: RPCError.Code, expected: EndpointError.Code) {
    let mapped = EndpointError.upstream(
      "datapath", RPCError(code: status, message: "no network device named flow-veth0"))
    #expect(mapped.code == expected)
    #expect(mapped.description.contains("datapath"))
    if expected != .upstreamUnavailable {
      #expect(mapped.description.contains("flow-veth0"), "the upstream's reason is kept: \(mapped)")
    }
  }

  @Test("a transport failure that is not an RPCError is \"try again\"")
  func transportFailure() {
    struct Broken: Error {}
    #expect(EndpointError.upstream("policy", Broken()).code == .upstreamUnavailable)
    #expect(EndpointError.upstream("policy", CancellationError()).code == .upstreamUnavailable)
  }

  @Test(
    "every endpoint error code has its own gRPC status; only an unreachable upstream is UNAVAILABLE"
  )
  func statusMapping() {
    let expected: [EndpointError.Code: RPCError.Code] = [
      .invalidArgument: .invalidArgument, .duplicate: .alreadyExists, .notFound: .notFound,
      .staleRevision: .aborted,
      .upstreamUnavailable: .unavailable, .deadlineExceeded: .deadlineExceeded,
      .illegalTransition: .failedPrecondition,
      .failedPrecondition: .failedPrecondition, .upstreamFailed: .internalError,
    ]
    #expect(Set(EndpointError.Code.allCases) == Set(expected.keys), "a new code needs a row here")
    for code in EndpointError.Code.allCases {
      #expect(EndpointError(code: code, message: "m").rpcErrorCode == expected[code], "\(code)")
    }
  }

  @Test(
    "a first realisation the datapath refuses fails the create with the datapath's reason and cleans up by endpoint id",
    arguments: [
      (
        RPCError(code: .notFound, message: "no network device named flow-missing0"),
        EndpointError.Code.failedPrecondition, "flow-missing0"
      ),
      (
        RPCError(code: .failedPrecondition, message: "device flow-missing1 has no peer"),
        .failedPrecondition, "flow-missing1"
      ),
      (
        RPCError(code: .invalidArgument, message: "address 10.9.9.9 is not a host address"),
        .invalidArgument, "10.9.9.9"
      ),
      (
        RPCError(code: .unavailable, message: "connection refused"), .upstreamUnavailable,
        "datapath"
      ),
    ])
  func failedFirstRealise(status: RPCError, expected: EndpointError.Code, named: String)
    async throws
  {
    let node = try InProcessNode()
    let datapath = FailingDatapath(status: status)
    let manager = EndpointManager(
      configuration: .init(requestTimeout: .seconds(5), regenerationRetryDelay: .milliseconds(50)),
      metadata: MetadataResolver(source: node.workloads),
      identities: InProcessNode.Identities(allocator: node.allocator, down: Flag()),
      policy: InProcessNode.Policies(engine: node.engine), datapath: datapath, store: nil)
    do {
      _ = try await manager.createEndpoint(
        EndpointSpec(
          containerID: "a", hostInterface: "flow-missing0", ips: [IPPrefix("10.0.0.1")!],
          labels: try LabelSet(parsing: ["app=x"])),
        sync: true)
      Issue.record("the create succeeded")
    } catch let error as EndpointError {
      #expect(error.code == expected, "\(error)")
      #expect(error.description.contains(named), "\(error)")
      #expect(error.rpcErrorCode != .unavailable || expected == .upstreamUnavailable)
    }
    // Nothing left behind: endpoint forgotten, datapath state removed by its id, identity released.
    #expect(manager.registry.all().isEmpty)
    #expect(datapath.removed.all == [1])
    let stored = try await node.allocator.store.identities()
    #expect(!stored.isEmpty && stored.allSatisfy { $0.totalReferences == 0 })
    // And no retry resurrects it later.
    try await Task.sleep(for: .milliseconds(150))
    #expect(manager.registry.all().isEmpty)
    #expect(datapath.removed.all == [1])
  }
}
