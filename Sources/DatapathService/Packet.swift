import TesseraCore

/// Crafted Ethernet frames for BPF_PROG_TEST_RUN (tests and benchmarks).
///
/// - Important: addresses must be valid literals; a malformed one is a programming error.
public enum Packet {
  public static let tcp: UInt8 = 6
  public static let udp: UInt8 = 17
  public static let sctp: UInt8 = 132
  public static let icmp: UInt8 = 1

  public static let syn: UInt8 = 0x02
  public static let ack: UInt8 = 0x10
  public static let synAck: UInt8 = 0x12

  public static func ipv4(_ source: String, _ destination: String, proto: UInt8, sport: UInt16 = 40000, dport: UInt16 = 0, tcpFlags: UInt8 = syn) -> [UInt8] {
    var l4: [UInt8]
    switch proto {
    case tcp:
      l4 = [UInt8](repeating: 0, count: 20)
      l4[12] = 0x50
      l4[13] = tcpFlags
    case udp:
      l4 = [UInt8](repeating: 0, count: 8)
      l4[5] = 8
    case sctp:
      l4 = [UInt8](repeating: 0, count: 12)
    case icmp:
      // Echo request, identifier = sport.
      l4 = [8, 0, 0, 0, UInt8(sport >> 8), UInt8(sport & 0xff), 0, 1]
    default:
      l4 = [UInt8](repeating: 0, count: 8)
    }
    if proto == tcp || proto == udp || proto == sctp {
      l4[0] = UInt8(sport >> 8)
      l4[1] = UInt8(sport & 0xff)
      l4[2] = UInt8(dport >> 8)
      l4[3] = UInt8(dport & 0xff)
    }
    var ip: [UInt8] = [0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0]
    let total = 20 + l4.count
    ip[2] = UInt8(total >> 8)
    ip[3] = UInt8(total & 0xff)
    ip += address(source, 4) + address(destination, 4)
    return ethernet(type: 0x0800) + ip + l4
  }

  public static func icmpEcho(_ source: String, _ destination: String, id: UInt16, reply: Bool) -> [UInt8] {
    var frame = ipv4(source, destination, proto: icmp, sport: id)
    if reply { frame[14 + 20] = 0 }
    return frame
  }

  public static func ipv6TCP(_ source: String, _ destination: String, sport: UInt16, dport: UInt16, tcpFlags: UInt8 = syn) -> [UInt8] {
    var l4 = [UInt8](repeating: 0, count: 20)
    l4[0] = UInt8(sport >> 8)
    l4[1] = UInt8(sport & 0xff)
    l4[2] = UInt8(dport >> 8)
    l4[3] = UInt8(dport & 0xff)
    l4[12] = 0x50
    l4[13] = tcpFlags
    let header: [UInt8] = [0x60, 0, 0, 0, 0, UInt8(l4.count), tcp, 64]
    return ethernet(type: 0x86DD) + header + address(source, 16) + address(destination, 16) + l4
  }

  public static func arp() -> [UInt8] {
    ethernet(type: 0x0806) + [0, 1, 8, 0, 6, 4, 0, 1] + [UInt8](repeating: 0, count: 20)
  }

  private static func ethernet(type: UInt16) -> [UInt8] {
    [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, UInt8(type >> 8), UInt8(type & 0xff)]
  }

  private static func address(_ text: String, _ size: Int) -> [UInt8] {
    let prefix = IPPrefix(text)
    precondition(prefix?.bytes.count == size, "not an IPv\(size == 4 ? 4 : 6) address: \(text)")
    return prefix!.bytes
  }
}
