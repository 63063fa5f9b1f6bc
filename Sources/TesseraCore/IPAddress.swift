#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// An IPv4 or IPv6 prefix such as `10.1.0.5/32` or `fd00::/64`, normalised so
/// host bits are zero.
public struct IPPrefix: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  public enum Family: UInt8, Sendable, Codable {
    case v4 = 4
    case v6 = 6
  }

  public var family: Family
  /// 4 or 16 bytes, network order.
  public var bytes: [UInt8]
  public var length: UInt8

  /// Parses `ADDRESS` (a host prefix) or `ADDRESS/LENGTH`.
  public init?(_ text: String) {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 1 || parts.count == 2 else { return nil }
    let address = String(parts[0])
    if let v4 = Self.parse(address, family: AF_INET, size: 4) {
      family = .v4
      bytes = v4
    } else if let v6 = Self.parse(address, family: AF_INET6, size: 16) {
      family = .v6
      bytes = v6
    } else {
      return nil
    }
    let maxLength = UInt8(bytes.count * 8)
    if parts.count == 2 {
      guard let parsed = UInt8(parts[1]), parsed <= maxLength, !parts[1].hasPrefix("+") else {
        return nil
      }
      length = parsed
    } else {
      length = maxLength
    }
    for bit in Int(length)..<Int(maxLength) { bytes[bit / 8] &= ~(0x80 >> UInt8(bit % 8)) }
  }

  public var isHost: Bool { Int(length) == bytes.count * 8 }

  /// An address no workload can own: unspecified, loopback, multicast or the
  /// IPv4 limited broadcast.
  public var isSpecialPurposeHost: Bool {
    switch family {
    case .v4:
      return bytes[0] == 0 || bytes[0] == 127 || (bytes[0] >= 224 && bytes[0] <= 239)
        || bytes == [255, 255, 255, 255]
    case .v6:
      let unspecified = bytes.allSatisfy { $0 == 0 }
      let loopback = bytes.dropLast().allSatisfy { $0 == 0 } && bytes.last == 1
      return unspecified || loopback || bytes[0] == 0xff
    }
  }

  /// The address part, as text.
  public var address: String {
    var buffer = [CChar](repeating: 0, count: 64)
    let af = family == .v4 ? AF_INET : AF_INET6
    _ = bytes.withUnsafeBytes { inet_ntop(af, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  /// `ADDRESS/LENGTH`.
  public var description: String { "\(address)/\(length)" }

  /// Whether `other` (an address or a longer prefix) lies inside this prefix.
  public func contains(_ other: IPPrefix) -> Bool {
    guard family == other.family, other.length >= length else { return false }
    let full = Int(length) / 8
    guard bytes.prefix(full) == other.bytes.prefix(full) else { return false }
    let rest = Int(length) % 8
    guard rest > 0 else { return true }
    let mask = UInt8(0xff) << (8 - rest)
    return bytes[full] & mask == other.bytes[full] & mask
  }

  public static func < (lhs: Self, rhs: Self) -> Bool {
    if lhs.family != rhs.family { return lhs.family.rawValue < rhs.family.rawValue }
    if lhs.bytes != rhs.bytes { return lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
    return lhs.length < rhs.length
  }

  private static func parse(_ text: String, family: Int32, size: Int) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: size)
    let ok = out.withUnsafeMutableBytes { inet_pton(family, text, $0.baseAddress) }
    return ok == 1 ? out : nil
  }
}
