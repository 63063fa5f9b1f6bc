import TesseraCore
import Testing

@testable import DatapathService

/// The port range ↔ LPM prefix arithmetic; runs without root.
@Suite("Port ranges as LPM prefixes")
struct PortPrefixTests {
  @Test(
    "known decompositions",
    arguments: [
      (PortRange(single: 80), ["80/16"]),
      (PortRange.any, ["0/0"]),
      (PortRange(8080, 8081), ["8080/15"]),
      (PortRange(1024, 65535), ["1024/6", "2048/5", "4096/4", "8192/3", "16384/2", "32768/1"]),
      (PortRange(0, 1023), ["0/6"]),
      (PortRange(79, 81), ["79/16", "80/15"]),
      (PortRange(65535, 65535), ["65535/16"]),
    ])
  func known(range: PortRange, expected: [String]) {
    #expect(PortPrefix.decompose(range).map(\.description) == expected)
  }

  @Test("1-65535 needs one prefix per bit")
  func worstCase() {
    #expect(PortPrefix.decompose(PortRange(1, 65535)).count == 16)
    #expect(PortPrefix.decompose(PortRange(1, 65534)).count == 30)
  }

  @Test("random ranges are covered exactly, by aligned disjoint blocks, and merge back")
  func randomRanges() {
    var rng = SplitMix64(seed: 0x7E55_E7A)
    for _ in 0..<2000 {
      let a = UInt16(truncatingIfNeeded: rng.next())
      let b = UInt16(truncatingIfNeeded: rng.next())
      let range = PortRange(min(a, b), max(a, b))
      let blocks = PortPrefix.decompose(range)
      #expect(blocks.count <= 30)
      var expectedStart = UInt32(range.first)
      for block in blocks {
        #expect(UInt32(block.first) == expectedStart, "blocks are contiguous and ascending")
        #expect(UInt32(block.first) % block.size == 0, "blocks are aligned")
        expectedStart = UInt32(block.last) + 1
      }
      #expect(expectedStart == UInt32(range.last) + 1)
      #expect(PortPrefix.merge(blocks) == [range])
      // Minimal: two neighbouring blocks of the same size never form an aligned bigger block.
      for (x, y) in zip(blocks, blocks.dropFirst()) where x.length == y.length && x.length > 0 {
        #expect(UInt32(x.first) % (x.size * 2) != 0)
      }
    }
  }

  @Test("membership agrees with PortRange.contains on every port")
  func exhaustiveMembership() {
    for range in [
      PortRange(1000, 2000), PortRange(3, 3), PortRange(0, 65534), PortRange(12345, 54321),
    ] {
      let blocks = PortPrefix.decompose(range)
      for port in 0...UInt16.max {
        #expect(blocks.contains { $0.contains(port) } == range.contains(port))
      }
    }
  }

  @Test("overlapping ranges cluster, adjacent ones stay apart")
  func clusters() {
    #expect(
      PortPrefix.clusters([PortRange(80, 90), PortRange(85, 95), PortRange(96, 100)]) == [
        PortRange(80, 95), PortRange(96, 100),
      ])
    #expect(PortPrefix.clusters([PortRange(1, 1), PortRange(1, 1)]) == [PortRange(1, 1)])
  }

  @Test("policy entries survive encode and decode unless they overlap in one group")
  func encodeDecode() {
    let entries = [
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .tcp, ports: PortRange(8080, 8081)),
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .tcp, ports: PortRange(8082, 8082)),
      PolicyEntry(peer: .unknown, direction: .egress, proto: .any, ports: .any),
      PolicyEntry(
        peer: NumericIdentity(301), direction: .ingress, proto: .udp, ports: PortRange(1, 65535),
        verdict: .deny),
    ].sorted()
    #expect(PolicyEncoding.decode(PolicyEncoding.encode(entries)) == entries)

    let overlapping = [
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .tcp, ports: PortRange(80, 90)),
      PolicyEntry(
        peer: NumericIdentity(300), direction: .ingress, proto: .tcp, ports: PortRange(85, 95)),
    ]
    #expect(
      PolicyEncoding.decode(PolicyEncoding.encode(overlapping))
        == [
          PolicyEntry(
            peer: NumericIdentity(300), direction: .ingress, proto: .tcp, ports: PortRange(80, 95))
        ])
  }
}

/// A small deterministic generator so failures can be replayed from the seed.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
