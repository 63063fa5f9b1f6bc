import Foundation
import TesseraCore
import Testing

@testable import DatapathService

@Suite("Flow log: bounded buffer and filters")
struct FlowLogTests {
  func event(_ n: Int, verdict: FlowEvent.Verdict = .dropped, match: FlowEvent.PolicyMatch = .none)
    -> FlowEvent
  {
    FlowEvent(
      time: Date(), endpointID: UInt64(n % 3), direction: .ingress, verdict: verdict,
      reason: "r\(n)", match: match, ipProtocol: 6, source: "10.0.0.\(n % 250)",
      destination: "10.0.1.1", sourcePort: UInt16(40000 + n), destinationPort: 8080,
      sourceIdentity: UInt32(1000 + n % 2), destinationIdentity: 5000)
  }

  @Test("keeps the newest events up to its capacity, oldest first")
  func bounded() {
    let log = FlowLog(capacity: 4)
    log.record((1...10).map { event($0) })
    #expect(
      log.recent(last: 10, matching: FlowFilter()).map(\.reason) == ["r7", "r8", "r9", "r10"])
    #expect(log.recent(last: 2, matching: FlowFilter()).map(\.reason) == ["r9", "r10"])
    #expect(log.recent(last: 0, matching: FlowFilter()).isEmpty)
    #expect(log.statistics.received == 10 && log.statistics.buffered == 4)
  }

  @Test("filters by verdict, policy verdicts, endpoint, identities and port")
  func filters() {
    let events = [
      event(1), event(2, verdict: .forwarded, match: .peerAndPort),
      event(3, match: .defaultVerdict),
    ]
    var filter = FlowFilter()
    filter.verdict = .dropped
    #expect(events.filter(filter.matches).map(\.reason) == ["r1", "r3"])
    filter = FlowFilter()
    filter.policyVerdictsOnly = true
    #expect(events.filter(filter.matches).map(\.reason) == ["r2", "r3"])
    filter = FlowFilter()
    filter.endpointID = 2
    #expect(events.filter(filter.matches).map(\.reason) == ["r2"])
    filter = FlowFilter()
    filter.sourceIdentities = [1001]
    #expect(events.filter(filter.matches).map(\.reason) == ["r1", "r3"])
    filter = FlowFilter()
    filter.identities = [5000]
    #expect(events.filter(filter.matches).count == 3)
    filter.destinationIdentities = [1]
    #expect(events.filter(filter.matches).isEmpty)
    filter = FlowFilter()
    filter.port = 40002
    #expect(events.filter(filter.matches).map(\.reason) == ["r2"])
  }

  @Test("followers see live events in order")
  func follow() async {
    let log = FlowLog(capacity: 8)
    let live = log.subscribe()
    let reader = Task { await Array(live.prefix(3)).map(\.reason) }
    // The subscription is registered synchronously; give the relay task a moment to start.
    try? await Task.sleep(for: .milliseconds(50))
    log.record([event(1), event(2)])
    log.record([event(3)])
    #expect(await reader.value == ["r1", "r2", "r3"])
  }
}
