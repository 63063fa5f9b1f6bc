import DatapathService
import Foundation
import GRPCCore
import GRPCInProcessTransport
import IdentityService
import Logging
import PolicyService
import Synchronization
import TesseraCore
import TesseraProto
import Testing

@testable import EndpointService

/// Runs `body` with a client of a policy service served in process.
func withPolicyService(
  _ handler: PolicyServiceHandler,
  _ body: (GRPCClient<InProcessTransport.Client>) async throws -> Void
) async throws {
  let transport = InProcessTransport()
  let server = GRPCServer(transport: transport.server, services: [handler])
  let client = GRPCClient(transport: transport.client)
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await server.serve() }
    group.addTask { try await client.runConnections() }
    do { try await body(client) } catch {
      client.beginGracefulShutdown()
      server.beginGracefulShutdown()
      throw error
    }
    client.beginGracefulShutdown()
    server.beginGracefulShutdown()
    try await group.waitForAll()
  }
}

/// Runs `body` with a fresh policy engine and a client of a policy service that
/// serves it in process, publishing to `events`.
func withPolicyService(
  events: PolicyEvents = PolicyEvents(), readiness: PolicyReadiness = PolicyReadiness(synced: true),
  _ body: (PolicyEngine, GRPCClient<InProcessTransport.Client>) async throws -> Void
) async throws {
  let engine = try PolicyEngine(database: nil)
  let handler = PolicyServiceHandler(
    engine: engine, events: events, readiness: readiness, logger: Logger(label: "test.policy"))
  try await withPolicyService(handler) { client in try await body(engine, client) }
}

/// An identity as the policy service's calls carry it: `app=<app>` in the default namespace.
func identityMessage(_ id: UInt32, _ app: String) -> Tessera_Common_V1_Identity {
  .with {
    $0.id = id
    $0.labels =
      (try! LabelSet(parsing: ["app=\(app)", "io.kubernetes.pod.namespace=default"])).proto
  }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(_ timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if condition() { return true }
    try? await Task.sleep(for: .milliseconds(10))
  }
  return condition()
}

final class ChangeLog: Sendable {
  private let changes = Mutex<[PolicyChange]>([])
  func append(_ change: PolicyChange) { changes.withLock { $0.append(change) } }
  var resyncs: Int { changes.withLock { $0.filter(\.resync).count } }
}

@Suite("Policy watch: lag and readiness")
struct PolicyWatchTests {
  @Test(
    "a subscriber that falls behind gets RESOURCE_EXHAUSTED after a gap-free prefix, never a silent gap"
  )
  func laggingSubscriberIsCutOff() async throws {
    let events = PolicyEvents(bufferSize: 3)
    let subscription = events.subscribe()
    for i in 1...10 {
      events.publish(revision: 1, affected: .some([NumericIdentity(rawValue: UInt32(1000 + i))]))
    }
    var received: [UInt64] = []
    for await event in subscription.events { received.append(event.sequence) }
    #expect(received == [1, 2, 3], "the buffered prefix, in order, then the end")
    #expect(subscription.lagged)
    #expect(events.subscriberCount == 0)
    // A subscriber that keeps up is never cut off.
    let keepsUp = events.subscribe()
    events.publish(revision: 1, affected: .all)
    var iterator = keepsUp.events.makeAsyncIterator()
    #expect(await iterator.next()?.sequence == 11)
    #expect(!keepsUp.lagged)
  }

  @Test("WatchPolicy ends a lagging stream with RESOURCE_EXHAUSTED \"subscriber lagged\"")
  func watchStatusOnLag() async throws {
    let events = PolicyEvents(bufferSize: 2)
    try await withPolicyService(events: events) { engine, client in
      let raw = Tessera_Policy_V1_PolicyService.Client(wrapping: client)
      do {
        try await raw.watchPolicy(.init()) { response in
          var sequences: [UInt64] = []
          for try await event in response.messages {
            if sequences.isEmpty {
              #expect(!event.instanceID.isEmpty)
              for i in 0..<1_000 {
                events.publish(
                  revision: 1, affected: .some([NumericIdentity(rawValue: UInt32(2_000 + i))]))
              }
            }
            sequences.append(event.sequence)
          }
          #expect(sequences == Array(sequences.indices).map(UInt64.init), "gap-free until the end")
        }
        Issue.record("the stream ended without a status")
      } catch let error as RPCError {
        #expect(error.code == .resourceExhausted)
        #expect(error.message.contains("subscriber lagged"))
      }
    }
  }

  @Test(
    "the endpoint service resynchronises after its watch was cut off and ends with the policy it missed"
  )
  func clientResyncsAfterLag() async throws {
    let events = PolicyEvents(bufferSize: 4)
    try await withPolicyService(events: events) { engine, client in
      let policy = PolicyServiceClient(wrapping: client)
      let allocator = IdentityAllocator(
        configuration: .init(nodeName: "test"), store: try SQLiteIdentityStore(path: nil),
        changeSink: EventedNode.EventedPolicySink(engine: engine, events: events))
      let datapath = try Datapath(backend: MemoryDatapathBackend())
      let manager = EndpointManager(
        configuration: .init(
          requestTimeout: .seconds(5), regenerationRetryDelay: .milliseconds(50)),
        metadata: MetadataResolver(source: try WorkloadRegistry(file: nil)),
        identities: InProcessNode.Identities(allocator: allocator, down: Flag()),
        policy: policy, datapath: InProcessNode.Datapaths(datapath: datapath, down: Flag()),
        store: nil)
      let changes = ChangeLog()
      let watch = Task {
        await policy.watchPolicy(logger: Logger(label: "test.watch")) { change in
          changes.append(change)
          await manager.policyChanged(change)
        }
      }
      defer { watch.cancel() }
      #expect(await eventually { changes.resyncs == 1 })

      let frontend = try await manager.createEndpoint(
        EndpointSpec(
          containerID: "f", ips: [IPPrefix("10.0.0.1")!],
          labels: try LabelSet(parsing: ["app=frontend"])), sync: true)
      let backend = try await manager.createEndpoint(
        EndpointSpec(
          containerID: "b", ips: [IPPrefix("10.0.0.2")!],
          labels: try LabelSet(parsing: ["app=backend"])), sync: true)
      #expect(datapath.endpoint(id: backend.id)?.policy.ingressEnforced == false)

      // A rule change whose event the subscriber will not get: it falls behind first.
      _ = try engine.importPolicies(sourceName: "p.yaml", content: Array(backendPolicy.utf8))
      var flooded = 0
      while changes.resyncs < 2 && flooded < 2_000_000 {
        events.publish(
          revision: engine.revision, affected: .some([NumericIdentity(rawValue: 65_000)]))
        flooded += 1
        if flooded.isMultiple(of: 64) { await Task.yield() }
      }
      #expect(
        changes.resyncs >= 2,
        "the cut-off stream was followed by a resync (after \(flooded) events)")
      let enforced = await eventually {
        datapath.endpoint(id: backend.id)?.policy.verdict(
          peer: frontend.identity, direction: .ingress, proto: .tcp, port: 8080) == .allow
          && datapath.endpoint(id: backend.id)?.policy.verdict(
            peer: frontend.identity, direction: .ingress, proto: .tcp, port: 9090) == .deny
      }
      #expect(enforced, "the missed rule is in force after the resync")
      watch.cancel()
    }
  }

  @Test("policy computation is refused with UNAVAILABLE until the first identity sync")
  func unavailableUntilSynced() async throws {
    let readiness = PolicyReadiness(synced: false)
    try await withPolicyService(readiness: readiness) { engine, client in
      let raw = Tessera_Policy_V1_PolicyService.Client(wrapping: client)
      let request = Tessera_Policy_V1_ComputeEndpointPolicyRequest.with { $0.identity = 256 }
      do {
        _ = try await raw.computeEndpointPolicy(request)
        Issue.record("answered before the identity sync")
      } catch let error as RPCError {
        #expect(error.code == .unavailable)
        #expect(error.message.contains("identities not synchronised yet"))
      }
      await #expect(throws: RPCError.self) { _ = try await raw.listSelectors(.init()) }
      // Through the endpoint service's client: "try again", not a permanent failure.
      let policy = PolicyServiceClient(wrapping: client)
      do {
        _ = try await policy.computePolicy(
          for: SecurityIdentity(id: NumericIdentity(rawValue: 256), labels: .empty))
        Issue.record("answered before the identity sync")
      } catch let error as EndpointError {
        #expect(error.code == .upstreamUnavailable)
      }
      // Rules can be imported meanwhile; they are not computed against a partial SelectorCache.
      _ = try await raw.importPolicy(.with { $0.content = Data(backendPolicy.utf8) })
      readiness.markSynced()
      let answer = try await raw.computeEndpointPolicy(request)
      #expect(answer.revision == 2)
      _ = try await raw.listSelectors(.init())
    }
  }

  @Test(
    "a caller that does not resolve named ports (older than them) gets none: a named allow admits nothing, a named deny denies its whole protocol"
  )
  func namedPortsForOlderCallers() async throws {
    try await withPolicyService { engine, client in
      let web = SecurityIdentity(
        id: NumericIdentity(rawValue: 300),
        labels: try LabelSet(parsing: ["app=web", "io.kubernetes.pod.namespace=default"]))
      let peer = SecurityIdentity(
        id: NumericIdentity(rawValue: 301),
        labels: try LabelSet(parsing: ["app=peer", "io.kubernetes.pod.namespace=default"]))
      _ = engine.updateIdentities(added: [web, peer], deleted: [])
      let manifest = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: named, namespace: default}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          ingress:
          - fromEndpoints: [{matchLabels: {app: peer}}]
            toPorts: [{ports: [{port: http, protocol: TCP}, {port: "443", protocol: TCP}]}]
          ingressDeny:
          - fromEndpoints: [{matchLabels: {app: peer}}]
            toPorts: [{ports: [{port: admin, protocol: TCP}]}]
          - fromEndpoints: [{matchLabels: {app: peer}}]
            toPorts: [{ports: [{port: debug, protocol: ANY}]}]
        """
      _ = try engine.importPolicies(sourceName: "p.yaml", content: Array(manifest.utf8))
      let raw = Tessera_Policy_V1_PolicyService.Client(wrapping: client)
      let request = Tessera_Policy_V1_ComputeEndpointPolicyRequest.with {
        $0.identity = web.id.rawValue
        $0.labels = web.labels.proto
      }
      let old = try EndpointPolicy(proto: try await raw.computeEndpointPolicy(request))
      #expect(old.namedPortEntries.isEmpty)
      #expect(old.verdict(peer: peer.id, direction: .ingress, proto: .tcp, port: 443) == .deny)
      #expect(old.verdict(peer: peer.id, direction: .ingress, proto: .tcp, port: 8080) == .deny)
      #expect(old.verdict(peer: peer.id, direction: .ingress, proto: .udp, port: 53) == .deny)
      // ANY on a named port is TCP, UDP and SCTP (what a port can be), not ICMP.
      #expect(
        Set(old.entries.filter { $0.verdict == .deny }.map(\.proto)) == [.tcp, .udp, .sctp])
      #expect(
        old.entries.contains {
          $0.peer == peer.id && $0.proto == .tcp && $0.ports == .any && $0.verdict == .deny
        })
      // endpointd's client says it resolves them, and gets the rows.
      let current = try await PolicyServiceClient(wrapping: client).computePolicy(for: web)
      #expect(current.namedPortEntries.count == 3)
      #expect(current.verdict(peer: peer.id, direction: .ingress, proto: .tcp, port: 443) == .allow)
    }
  }

  @Test("the event sequence a caller reads covers every change made before its call")
  func eventSequenceCoversEarlierChanges() async throws {
    let events = PolicyEvents()
    try await withPolicyService(events: events) { engine, client in
      let raw = Tessera_Policy_V1_PolicyService.Client(wrapping: client)
      _ = try await raw.updateIdentities(.with { $0.added = [identityMessage(300, "backend")] })
      let before = try await raw.getEventSequence(.init())
      _ = try await raw.importPolicy(.with { $0.content = Data(backendPolicy.utf8) })
      _ = try await raw.updateIdentities(.with { $0.added = [identityMessage(301, "frontend")] })
      let after = try await raw.getEventSequence(.init())
      #expect(after.instanceID == before.instanceID)
      #expect(after.instanceID == events.instanceID)
      #expect(
        after.sequence == before.sequence + 2,
        "one event for the import (backend affected), one for the new peer the rule selects")
    }
  }

  @Test(
    "asked about identities, the event sequence names those the SelectorCache does not hold and covers the others' arrival"
  )
  func eventSequenceNamesUnknownIdentities() async throws {
    let events = PolicyEvents()
    try await withPolicyService(events: events) { engine, client in
      let raw = Tessera_Policy_V1_PolicyService.Client(wrapping: client)
      _ = try await raw.updateIdentities(.with { $0.added = [identityMessage(300, "backend")] })
      _ = try await raw.importPolicy(.with { $0.content = Data(backendPolicy.utf8) })
      let unknown = try await raw.getEventSequence(.with { $0.identities = [301, 302] })
      #expect(unknown.unknownIdentities == [301, 302])
      _ = try await raw.updateIdentities(.with { $0.added = [identityMessage(301, "frontend")] })
      let known = try await raw.getEventSequence(.with { $0.identities = [301, 302] })
      #expect(known.unknownIdentities == [302])
      #expect(
        known.sequence > unknown.sequence, "the sequence covers the event that brought 301 in")
      let reserved = try await raw.getEventSequence(.with { $0.identities = [1, 2] })
      #expect(reserved.unknownIdentities.isEmpty, "reserved identities are always held")
    }
  }

  @Test(
    "WatchPolicy names the identities each event brought into or removed from the SelectorCache, also when no rule selects them"
  )
  func watchNamesIdentityChanges() async throws {
    let events = PolicyEvents()
    try await withPolicyService(events: events) { engine, client in
      let raw = Tessera_Policy_V1_PolicyService.Client(wrapping: client)
      let unselected = Tessera_Common_V1_Identity.with {
        $0.id = 400
        $0.labels =
          (try! LabelSet(parsing: ["app=lonely", "io.kubernetes.pod.namespace=default"]))
          .proto
      }
      try await raw.watchPolicy(.init()) { response in
        var stream = response.messages.makeAsyncIterator()
        let first = try #require(try await stream.next())
        #expect(first.all && first.addedIdentities.isEmpty && first.namesIdentityChanges)
        _ = try await raw.updateIdentities(.with { $0.added = [unselected] })
        let added = try #require(try await stream.next())
        #expect(added.sequence == first.sequence + 1)
        #expect(added.addedIdentities.map(\.id) == [400] && added.deletedIdentities.isEmpty)
        #expect(
          added.addedIdentities.first?.labelsDigest
            == (try! LabelSet(parsing: ["app=lonely", "io.kubernetes.pod.namespace=default"]))
            .canonicalDigest)
        #expect(added.affectedIdentities.isEmpty && !added.all, "no rule selects it")
        _ = try await raw.updateIdentities(.with { $0.deleted = [400] })
        let deleted = try #require(try await stream.next())
        #expect(deleted.deletedIdentities == [400] && deleted.addedIdentities.isEmpty)
      }
    }
  }
}
