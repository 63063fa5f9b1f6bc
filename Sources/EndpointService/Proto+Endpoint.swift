import Foundation
import TesseraCore
import TesseraProto

// The endpoint service's wire conversions: domain types to and from its protos, in one place.

extension Tessera_Endpoint_V1_Endpoint {
  init(_ endpoint: Endpoint) {
    self.init()
    id = endpoint.id
    containerID = endpoint.containerID
    interfaceName = endpoint.interfaceName
    hostInterface = endpoint.hostInterface
    ips = endpoint.ips.map(\.address)
    namespace = endpoint.namespace
    podName = endpoint.podName
    labels = endpoint.labels.proto
    identity = endpoint.identity.rawValue
    state = Tessera_Endpoint_V1_EndpointState(endpoint.state)
    policyRevision = endpoint.policyRevision
    identityRevision = endpoint.identityRevision
    netns = endpoint.netns
    network = endpoint.network ?? ""
    namedPorts = (endpoint.namedPorts ?? []).map(Tessera_Common_V1_NamedPort.init)
    createdAtUnixMs = Int64(endpoint.createdAt.timeIntervalSince1970 * 1000)
  }
}

extension Tessera_Endpoint_V1_EndpointState {
  init(_ state: EndpointState) {
    switch state {
    case .waitingForIdentity: self = .waitingForIdentity
    case .waitingToRegenerate: self = .waitingToRegenerate
    case .regenerating: self = .regenerating
    case .ready: self = .ready
    case .disconnecting: self = .disconnecting
    case .disconnected: self = .disconnected
    case .restoring: self = .restoring
    }
  }
}

extension Tessera_Endpoint_V1_Workload {
  init(_ workload: Workload) {
    self.init()
    namespace = workload.namespace
    podName = workload.podName
    labels = workload.labels.proto
  }
}
