import TesseraCore

/// A block of destination ports `port ..< port + 2^(16 - length)`, the form an
/// LPM trie matches: the top `length` bits of the port are fixed.
///
/// The policy map stores a ``PortRange`` as the fewest aligned blocks that
/// cover exactly the range; `0-65535` (any) is the single block of length 0.
public struct PortPrefix: Hashable, Sendable, Comparable, CustomStringConvertible {
  /// The first port of the block (its low `16 - length` bits are zero).
  public var port: UInt16
  /// Fixed high bits, 0...16.
  public var length: UInt8

  public init(port: UInt16, length: UInt8) {
    precondition(length <= 16, "a port prefix has at most 16 bits")
    let mask: UInt32 = length == 0 ? 0 : (0xFFFF << (16 - UInt32(length))) & 0xFFFF
    self.port = UInt16(UInt32(port) & mask)
    self.length = length
  }

  /// The number of ports in the block.
  public var size: UInt32 { 1 << (16 - UInt32(length)) }
  public var first: UInt16 { port }
  public var last: UInt16 { UInt16(UInt32(port) + size - 1) }
  public var range: PortRange { PortRange(first, last) }

  public func contains(_ p: UInt16) -> Bool { p >= first && p <= last }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    (lhs.port, lhs.length) < (rhs.port, rhs.length)
  }
  public var description: String { "\(port)/\(length)" }

  /// The minimal list of aligned blocks whose union is exactly `range`, in
  /// ascending order (at most 30 for 16-bit ports).
  public static func decompose(_ range: PortRange) -> [PortPrefix] {
    var result: [PortPrefix] = []
    var start = UInt32(range.first)
    let end = UInt32(range.last)
    while start <= end {
      // The largest block aligned at `start` that does not pass `end`.
      var length: UInt8 = 16
      var size: UInt32 = 1
      while length > 0 {
        let bigger = size << 1
        if start % bigger != 0 || start + bigger - 1 > end { break }
        size = bigger
        length -= 1
      }
      result.append(PortPrefix(port: UInt16(start), length: length))
      start += size
    }
    return result
  }

  /// Merges blocks into the fewest ranges covering the same ports
  /// (overlapping and adjacent blocks join).
  public static func merge(_ prefixes: [PortPrefix]) -> [PortRange] {
    var ranges: [PortRange] = []
    for prefix in prefixes.sorted() {
      if let last = ranges.last, UInt32(prefix.first) <= UInt32(last.last) + 1 {
        ranges[ranges.count - 1] = PortRange(last.first, max(last.last, prefix.last))
      } else {
        ranges.append(prefix.range)
      }
    }
    return ranges
  }

  /// Groups ranges into clusters of overlapping ranges (adjacent ranges stay
  /// apart), each returned as the union of its members.
  ///
  /// The policy map stores one cluster per range given, so reading it back
  /// returns the ranges that were written; only ranges that overlap within
  /// one (verdict, direction, peer, protocol) group come back as their union,
  /// which matches exactly the same packets.
  public static func clusters(_ ranges: [PortRange]) -> [PortRange] {
    var result: [PortRange] = []
    for range in ranges.sorted() {
      if let last = result.last, range.first <= last.last {
        result[result.count - 1] = PortRange(last.first, max(last.last, range.last))
      } else {
        result.append(range)
      }
    }
    return result
  }
}
