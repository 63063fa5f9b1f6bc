import Foundation
import Synchronization
import TesseraCore

/// Every endpoint on the node, behind one lock, with the indexes that make
/// duplicates impossible. Transitions go through ``EndpointStateMachine``;
/// the returned actions are run by the caller after the lock is released.
public final class EndpointRegistry: Sendable {
  private struct State {
    var endpoints: [UInt64: Endpoint] = [:]
    var byAttachment: [Attachment: UInt64] = [:]
    var byIP: [IPPrefix: UInt64] = [:]
    var nextID: UInt64 = 1
  }

  /// A container's interface.
  public struct Attachment: Hashable, Sendable {
    public var containerID: String
    public var interfaceName: String
    public init(containerID: String, interfaceName: String) {
      self.containerID = containerID
      self.interfaceName = interfaceName
    }
  }

  private let state = Mutex(State())

  public init() {}

  /// Registers a new endpoint in `waiting-for-identity`.
  ///
  /// - Throws: ``EndpointError`` `.duplicate` for a known container/interface or IP.
  public func register(_ spec: EndpointSpec) throws(EndpointError) -> Endpoint {
    try state.withLock { (state) throws(EndpointError) -> Endpoint in
      let attachment = Attachment(containerID: spec.containerID, interfaceName: spec.interfaceName)
      if let existing = state.byAttachment[attachment] {
        throw EndpointError(
          code: .duplicate,
          message:
            "container \(spec.containerID) interface \(spec.interfaceName) is already endpoint \(existing)"
        )
      }
      if Set(spec.ips).count != spec.ips.count {
        throw EndpointError(code: .invalidArgument, message: "an address is listed twice")
      }
      for ip in spec.ips {
        if let owner = state.byIP[ip] {
          throw EndpointError(
            code: .duplicate, message: "address \(ip.address) already belongs to endpoint \(owner)")
        }
      }
      let endpoint = Endpoint(
        id: state.nextID, containerID: spec.containerID, interfaceName: spec.interfaceName,
        hostInterface: spec.hostInterface, ips: spec.ips, namespace: spec.namespace,
        podName: spec.podName,
        netns: spec.netns, requestLabels: spec.labels, labels: .empty, identity: .unknown,
        identityLabels: .empty,
        stateMachine: EndpointStateMachine(state: .waitingForIdentity), policyRevision: 0,
        identityRevision: 0, wantedGeneration: 0, realizedGeneration: 0, createdAt: Date(),
        network: spec.network.isEmpty ? nil : spec.network, namedPorts: spec.namedPorts.sorted())
      state.nextID += 1
      Self.insert(endpoint, into: &state)
      return endpoint
    }
  }

  /// Re-inserts endpoints read back from the state directory, in `restoring`.
  public func restore(_ endpoints: [Endpoint]) {
    state.withLock { state in
      for var endpoint in endpoints {
        endpoint.stateMachine = EndpointStateMachine(state: .restoring)
        Self.insert(endpoint, into: &state)
        state.nextID = max(state.nextID, endpoint.id + 1)
      }
    }
  }

  private static func insert(_ endpoint: Endpoint, into state: inout State) {
    state.endpoints[endpoint.id] = endpoint
    state.byAttachment[
      Attachment(containerID: endpoint.containerID, interfaceName: endpoint.interfaceName)] =
      endpoint.id
    for ip in endpoint.ips { state.byIP[ip] = endpoint.id }
  }

  /// Forgets the endpoint entirely.
  @discardableResult
  public func remove(id: UInt64) -> Endpoint? {
    state.withLock { state in
      guard let endpoint = state.endpoints.removeValue(forKey: id) else { return nil }
      state.byAttachment[
        Attachment(containerID: endpoint.containerID, interfaceName: endpoint.interfaceName)] = nil
      for ip in endpoint.ips where state.byIP[ip] == id { state.byIP[ip] = nil }
      return endpoint
    }
  }

  public func endpoint(id: UInt64) -> Endpoint? { state.withLock { $0.endpoints[id] } }

  /// Endpoints of a container; `interfaceName` nil or empty matches every interface.
  public func endpoints(containerID: String, interfaceName: String?) -> [Endpoint] {
    state.withLock { state in
      if let interfaceName, !interfaceName.isEmpty {
        return state.byAttachment[
          Attachment(containerID: containerID, interfaceName: interfaceName)
        ]
        .flatMap { state.endpoints[$0] }.map { [$0] } ?? []
      }
      return state.endpoints.values.filter { $0.containerID == containerID }.sorted {
        $0.id < $1.id
      }
    }
  }

  public func all() -> [Endpoint] {
    state.withLock { $0.endpoints.values.sorted { $0.id < $1.id } }
  }

  /// The ids, ascending, of the endpoints `isIncluded` accepts, tested under the lock without
  /// copying and sorting the endpoints as ``all()`` does: every policy event tests every
  /// endpoint of the node. `isIncluded` must not call into the registry or take other locks.
  public func ids(where isIncluded: (Endpoint) -> Bool) -> [UInt64] {
    state.withLock { state in
      state.endpoints.compactMap { id, endpoint in isIncluded(endpoint) ? id : nil }.sorted()
    }
  }

  /// The named ports the node's endpoints declare, by identity (endpoints without an
  /// identity yet, and identities without any port, are left out).
  public func namedPortsByIdentity() -> [NumericIdentity: Set<NamedPort>] {
    state.withLock { state in
      var byIdentity: [NumericIdentity: Set<NamedPort>] = [:]
      for endpoint in state.endpoints.values where endpoint.identity != .unknown {
        guard let ports = endpoint.namedPorts, !ports.isEmpty else { continue }
        byIdentity[endpoint.identity, default: []].formUnion(ports)
      }
      return byIdentity
    }
  }

  /// How many endpoints are registered (without copying them).
  public var count: Int { state.withLock { $0.endpoints.count } }

  /// Runs `body` on the endpoint under the lock and returns its result.
  ///
  /// - Throws: ``EndpointError`` `.notFound`, or whatever `body` throws (the endpoint is then unchanged).
  public func update<T>(id: UInt64, _ body: (inout Endpoint) throws(EndpointError) -> T)
    throws(EndpointError) -> T
  {
    try state.withLock { (state) throws(EndpointError) -> T in
      guard var endpoint = state.endpoints[id] else {
        throw EndpointError(code: .notFound, message: "no endpoint \(id)")
      }
      let result = try body(&endpoint)
      state.endpoints[id] = endpoint
      return result
    }
  }
}
