import GRPCCore
import TesseraCore
import TesseraProto

extension PolicyServiceHandler {
  public func tracePolicy(
    request: Tessera_Policy_V1_TracePolicyRequest, context: ServerContext
  ) async throws -> Tessera_Policy_V1_TracePolicyResponse {
    try readiness.requireSynced()
    let source = try identity(request.sourceIdentity, request.sourceLabels, side: "source")
    let destination = try identity(
      request.destinationIdentity, request.destinationLabels, side: "destination")
    guard request.port <= UInt32(UInt16.max) else {
      throw RPCError(code: .invalidArgument, message: "port \(request.port) is out of range")
    }
    let proto = L4Protocol(rawValue: UInt8(clamping: request.protocol.rawValue)) ?? .any
    let ports = try request.destinationNamedPorts.map { port throws(RPCError) in
      try NamedPort(proto: port)
    }
    if let problem = NamedPort.problem(with: ports) {
      throw RPCError(code: .invalidArgument, message: "destination named ports: \(problem)")
    }
    let trace = engine.trace(
      from: source, to: destination, proto: proto, port: UInt16(request.port),
      destinationPorts: ports)
    return .with {
      $0.allowed = trace.allowed
      $0.egress = .init(trace.egress)
      $0.ingress = .init(trace.ingress)
      $0.revision = engine.revision
      $0.sourceIdentity = source.id.rawValue
      $0.destinationIdentity = destination.id.rawValue
    }
  }

  /// The known identity with this number, or the one with exactly these labels.
  private func identity(
    _ number: UInt32, _ labels: [Tessera_Common_V1_Label], side: String
  ) throws -> SecurityIdentity {
    if number != 0 {
      guard let known = engine.labels(of: NumericIdentity(number)) else {
        throw RPCError(code: .notFound, message: "\(side): no identity \(number) is known")
      }
      return SecurityIdentity(id: NumericIdentity(number), labels: known)
    }
    guard !labels.isEmpty else {
      throw RPCError(code: .invalidArgument, message: "\(side): give an identity or labels")
    }
    let wanted = try LabelSet(protoLabels: labels)
    guard let id = engine.identity(labeled: wanted) else {
      throw RPCError(
        code: .notFound,
        message:
          "\(side): no identity has exactly the labels \(wanted) (give the identity's number)")
    }
    return SecurityIdentity(id: id, labels: wanted)
  }
}
