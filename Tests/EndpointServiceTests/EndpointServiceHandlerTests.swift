import Foundation
import GRPCCore
import Logging
import TesseraCore
import TesseraProto
import Testing

@testable import EndpointService

@Suite("endpoint service handler")
struct EndpointServiceHandlerTests {
  /// Runs `body` with a server context, as the gRPC server gives one to a handler.
  func withContext<T>(_ body: (ServerContext) async throws -> T) async throws -> T {
    try await withServerContextRPCCancellationHandle { handle in
      try await body(
        ServerContext(
          descriptor: MethodDescriptor(fullyQualifiedService: "test", method: "test"),
          remotePeer: "test", localPeer: "test", cancellation: handle))
    }
  }

  func expectUnavailable(_ call: String, _ body: () async throws -> Void) async {
    do {
      try await body()
      Issue.record("\(call) answered while the node restores its endpoints")
    } catch let error as RPCError {
      #expect(error.code == .unavailable, "\(call): \(error)")
    } catch {
      Issue.record("\(call): \(error)")
    }
  }

  @Test(
    "a create first runs a DEL queued for its own attachment: a DEL that timed out and was queued never deletes the retried ADD's endpoint"
  )
  func createRunsItsQueuedDeletionFirst() async throws {
    let node = try InProcessNode()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "tsr-dq-\(UUID().uuidString)"
    ).path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let queue = DeletionQueue(directory: directory)
    let handler = EndpointServiceHandler(
      manager: node.manager, workloads: node.workloads, deletionQueue: queue,
      logger: Logger(label: "test"))
    func create(_ container: String, _ ip: String) async throws -> UInt64 {
      try await withContext { context in
        try await handler.createEndpoint(
          request: .with {
            $0.containerID = container
            $0.interfaceName = "eth0"
            $0.ips = [ip]
            $0.sync = true
          }, context: context
        ).endpoint.id
      }
    }
    // ADD, then a DEL whose call timed out: the plugin queued it (as deletion_queue.c writes).
    let first = try await create("retried", "10.0.0.1")
    let other = try await create("bystander", "10.0.0.2")
    for container in ["retried", "bystander"] {
      try Data(#"{"containerId":"\#(container)","interfaceName":"eth0"}"#.utf8).write(
        to: URL(fileURLWithPath: "\(directory)/\(container)@eth0.json"))
    }
    // The runtime retries the ADD: the queued DEL runs first, then the new endpoint is made.
    let second = try await create("retried", "10.0.0.1")
    #expect(second != first)
    #expect(!FileManager.default.fileExists(atPath: "\(directory)/retried@eth0.json"))
    // Another attachment's queued DEL is left to the drain.
    #expect(FileManager.default.fileExists(atPath: "\(directory)/bystander@eth0.json"))
    #expect(node.manager.registry.endpoint(id: other) != nil)
    // The periodic drain later finds nothing of the retried pod to delete.
    await queue.drain(node.manager, logger: Logger(label: "test"))
    #expect(node.manager.registry.endpoint(id: second)?.state == .ready)
    #expect(node.manager.registry.endpoint(id: other) == nil)
  }

  @Test(
    "while a restarted node restores its endpoints, every endpoint call gets UNAVAILABLE (CNI code 11; the plugin queues a DEL) and changes nothing"
  )
  func endpointCallsWaitForTheRestore() async throws {
    // The drill once saw a create during the restore take ID 1, still held by a live pod
    // not restored yet, and its clean-up delete that pod's endpoint.
    let node = try InProcessNode()
    let live = try await node.manager.createEndpoint(
      node.spec("live", "10.0.0.1", "k8s:app=web"), sync: true)
    let serving = Flag()
    let handler = EndpointServiceHandler(
      manager: node.manager, workloads: node.workloads, isServing: { serving.isOn },
      logger: Logger(label: "test"))
    let byContainer = Tessera_Endpoint_V1_EndpointSelector.with { $0.containerID = "live" }
    try await withContext { context in
      await expectUnavailable("CreateEndpoint") {
        _ = try await handler.createEndpoint(
          request: .with {
            $0.containerID = "new"
            $0.ips = ["10.0.0.2"]
          }, context: context)
      }
      await expectUnavailable("DeleteEndpoint") {
        _ = try await handler.deleteEndpoint(
          request: .with { $0.endpoint = byContainer }, context: context)
      }
      await expectUnavailable("UpdateEndpointLabels") {
        _ = try await handler.updateEndpointLabels(
          request: .with { $0.endpoint = byContainer }, context: context)
      }
      await expectUnavailable("GetEndpoint") {
        _ = try await handler.getEndpoint(
          request: .with { $0.endpoint = byContainer }, context: context)
      }
      await expectUnavailable("ListEndpoints") {
        _ = try await handler.listEndpoints(request: .init(), context: context)
      }
      await expectUnavailable("GarbageCollectEndpoints") {
        _ = try await handler.garbageCollectEndpoints(request: .init(), context: context)
      }
      #expect(node.manager.registry.all().map(\.id) == [live.id])

      serving.set(true)
      let got = try await handler.getEndpoint(
        request: .with { $0.endpoint = byContainer }, context: context)
      #expect(got.id == live.id)
      let deleted = try await handler.deleteEndpoint(
        request: .with { $0.endpoint = byContainer }, context: context)
      #expect(deleted.deleted == 1)
    }
  }
}
