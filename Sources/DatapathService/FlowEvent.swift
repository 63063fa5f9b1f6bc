import Foundation
import TesseraCore

/// One verdict of the datapath: a dropped packet, or the first packet of a
/// connection that policy allowed. Established flows and replies emit none
/// (docs/architecture.md, "Datapath events").
public struct FlowEvent: Hashable, Sendable {
  public enum Verdict: Sendable, Hashable { case forwarded, dropped }

  /// What the event says of the connection (`TESSERA_EVENT_STATE_*`).
  public enum ConnectionState: UInt8, Sendable, Hashable {
    /// A dropped packet.
    case none = 0
    /// The first packet of a connection policy allowed.
    case new = 1
    /// A tracked connection began to close (FIN or RST).
    case closing = 2
  }

  /// The kind of policy entry that decided (`TESSERA_MATCH_*` in the programs).
  public enum PolicyMatch: UInt8, Sendable, Hashable {
    /// Policy was not consulted (parser, source validation, conntrack).
    case none = 0
    case peerAndPort = 1
    case peerOnly = 2
    case portOnly = 3
    case all = 4
    /// No entry matched: the direction's default.
    case defaultVerdict = 5
  }

  public var time: Date
  public var endpointID: UInt64
  public var direction: TrafficDirection
  public var verdict: Verdict
  /// The counters' reason name without its `forward-`/`drop-` prefix (`policy-deny`, …).
  public var reason: String
  public var match: PolicyMatch
  public var state: ConnectionState
  /// The matched entry was a deny entry.
  public var deniedByEntry: Bool
  /// IANA protocol number; 0 for non-IP.
  public var ipProtocol: UInt8
  public var source: String
  public var destination: String
  public var sourcePort: UInt16
  public var destinationPort: UInt16
  /// 0 when the datapath did not look the identity up.
  public var sourceIdentity: UInt32
  public var destinationIdentity: UInt32
  public var length: UInt32
  /// The message type of an ICMP or ICMPv6 packet; nil for other protocols.
  public var icmpType: UInt8?

  public init(
    time: Date, endpointID: UInt64, direction: TrafficDirection, verdict: Verdict, reason: String,
    match: PolicyMatch = .none, state: ConnectionState = .none, deniedByEntry: Bool = false,
    ipProtocol: UInt8 = 0,
    source: String = "", destination: String = "", sourcePort: UInt16 = 0,
    destinationPort: UInt16 = 0, sourceIdentity: UInt32 = 0, destinationIdentity: UInt32 = 0,
    length: UInt32 = 0, icmpType: UInt8? = nil
  ) {
    self.time = time
    self.endpointID = endpointID
    self.direction = direction
    self.verdict = verdict
    self.reason = reason
    self.match = match
    self.state = state
    self.deniedByEntry = deniedByEntry
    self.ipProtocol = ipProtocol
    self.source = source
    self.destination = destination
    self.sourcePort = sourcePort
    self.destinationPort = destinationPort
    self.sourceIdentity = sourceIdentity
    self.destinationIdentity = destinationIdentity
    self.length = length
    self.icmpType = icmpType
  }

  /// Policy decided this packet: a policy drop, or a connection policy allowed.
  public var isPolicyVerdict: Bool { match != .none }
}

/// Which events a reader wants; empty fields match everything.
public struct FlowFilter: Sendable, Hashable {
  public var verdict: FlowEvent.Verdict?
  public var policyVerdictsOnly = false
  public var endpointID: UInt64?
  /// Either side's identity is one of these.
  public var identities: Set<UInt32> = []
  public var sourceIdentities: Set<UInt32> = []
  public var destinationIdentities: Set<UInt32> = []
  /// Either port.
  public var port: UInt16?

  public init() {}

  public func matches(_ event: FlowEvent) -> Bool {
    if let verdict, event.verdict != verdict { return false }
    if policyVerdictsOnly && !event.isPolicyVerdict { return false }
    if let endpointID, event.endpointID != endpointID { return false }
    if !identities.isEmpty
      && !identities.contains(event.sourceIdentity)
      && !identities.contains(event.destinationIdentity)
    {
      return false
    }
    if !sourceIdentities.isEmpty && !sourceIdentities.contains(event.sourceIdentity) {
      return false
    }
    if !destinationIdentities.isEmpty
      && !destinationIdentities.contains(event.destinationIdentity)
    {
      return false
    }
    if let port, event.sourcePort != port && event.destinationPort != port { return false }
    return true
  }
}
