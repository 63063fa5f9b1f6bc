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

  /// SCTP chunk types: INIT opens an association, DATA continues one.
  public static let sctpInit: UInt8 = 1
  public static let sctpData: UInt8 = 0

  /// An IPv4 frame: a TCP segment with `tcpFlags`, a UDP datagram, an SCTP packet whose one
  /// chunk (header only) is of type `sctpChunk`, an ICMP echo request (identifier `sport`).
  public static func ipv4(
    _ source: String, _ destination: String, proto: UInt8, sport: UInt16 = 40000, dport: UInt16 = 0,
    tcpFlags: UInt8 = syn, sctpChunk: UInt8 = sctpInit
  ) -> [UInt8] {
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
      l4 = [UInt8](repeating: 0, count: 16)
      l4[12] = sctpChunk
      l4[15] = 4
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

  public static func icmpEcho(_ source: String, _ destination: String, id: UInt16, reply: Bool)
    -> [UInt8]
  {
    var frame = ipv4(source, destination, proto: icmp, sport: id)
    if reply { frame[14 + 20] = 0 }
    return frame
  }

  public static func ipv6TCP(
    _ source: String, _ destination: String, sport: UInt16, dport: UInt16, tcpFlags: UInt8 = syn
  ) -> [UInt8] {
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

  public static let icmpv6: UInt8 = 58

  /// An ARP request announcing `sender` (an IPv4 address) as the sender protocol address.
  public static func arp(sender: String, target: String) -> [UInt8] {
    ethernet(type: 0x0806) + [0, 1, 8, 0, 6, 4, 0, 1] + [0x02, 0, 0, 0, 0, 1] + address(sender, 4)
      + [UInt8](repeating: 0, count: 6) + address(target, 4)
  }

  /// A frame of any ethertype with `payload`.
  public static func frame(ethertype: UInt16, _ payload: [UInt8]) -> [UInt8] {
    ethernet(type: ethertype) + payload
  }

  /// `frame` (an Ethernet frame) with an 802.1Q tag (`tpid` 0x8100 or 0x88a8) inserted.
  public static func vlanTagged(_ frame: [UInt8], vlan: UInt16 = 100, tpid: UInt16 = 0x8100)
    -> [UInt8]
  {
    Array(frame[0..<12]) + [
      UInt8(tpid >> 8), UInt8(tpid & 0xff), UInt8(vlan >> 8), UInt8(vlan & 0xff),
    ] + Array(frame[12...])
  }

  /// The L4 header of a TCP (20 bytes, `tcpFlags`) or UDP (8 bytes) packet.
  public static func l4(proto: UInt8, sport: UInt16, dport: UInt16, tcpFlags: UInt8 = syn)
    -> [UInt8]
  {
    var header = [UInt8](repeating: 0, count: proto == tcp ? 20 : 8)
    header[0] = UInt8(sport >> 8)
    header[1] = UInt8(sport & 0xff)
    header[2] = UInt8(dport >> 8)
    header[3] = UInt8(dport & 0xff)
    if proto == tcp {
      header[12] = 0x50
      header[13] = tcpFlags
    } else {
      header[5] = 8
    }
    return header
  }

  /// An IPv4 packet (no Ethernet header) carrying `payload` as protocol
  /// `proto`; `fragmentOffset` in 8-byte units, `moreFragments` the MF flag.
  public static func ipv4Packet(
    _ source: String, _ destination: String, proto: UInt8, payload: [UInt8], id: UInt16 = 1,
    fragmentOffset: UInt16 = 0,
    moreFragments: Bool = false
  ) -> [UInt8] {
    let total = 20 + payload.count
    let flags = (moreFragments ? UInt16(0x2000) : 0) | (fragmentOffset & 0x1fff)
    var header: [UInt8] = [
      0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), UInt8(id >> 8), UInt8(id & 0xff),
    ]
    header += [UInt8(flags >> 8), UInt8(flags & 0xff), 64, proto, 0, 0]
    return header + address(source, 4) + address(destination, 4) + payload
  }

  /// An Ethernet frame of an IPv4 packet (see ``ipv4Packet(_:_:proto:payload:id:fragmentOffset:moreFragments:)``).
  public static func ipv4Frame(
    _ source: String, _ destination: String, proto: UInt8, payload: [UInt8], id: UInt16 = 1,
    fragmentOffset: UInt16 = 0,
    moreFragments: Bool = false
  ) -> [UInt8] {
    ethernet(type: 0x0800)
      + ipv4Packet(
        source, destination, proto: proto, payload: payload, id: id, fragmentOffset: fragmentOffset,
        moreFragments: moreFragments)
  }

  /// An IPv6 packet (no Ethernet header): `extensions` are (header number,
  /// body) in order, each body padded to a multiple of 8 bytes with its
  /// length field filled (the fragment header's body is used as given).
  /// Neighbour discovery is sent with hop limit 255, MLD with 1.
  public static func ipv6Packet(
    _ source: String, _ destination: String, extensions: [(UInt8, [UInt8])] = [], proto: UInt8,
    payload: [UInt8], hopLimit: UInt8 = 64
  ) -> [UInt8] {
    var chain: [UInt8] = []
    for (i, (_, body)) in extensions.enumerated() {
      let next = i + 1 < extensions.count ? extensions[i + 1].0 : proto
      var header = [next, 0] + body
      while header.count % 8 != 0 || header.count < 8 { header.append(0) }
      if extensions[i].0 != 44 { header[1] = UInt8(header.count / 8 - 1) }
      chain += header
    }
    let first = extensions.first?.0 ?? proto
    let length = chain.count + payload.count
    let header: [UInt8] = [
      0x60, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xff), first, hopLimit,
    ]
    return header + address(source, 16) + address(destination, 16) + chain + payload
  }

  public static func ipv6Frame(
    _ source: String, _ destination: String, extensions: [(UInt8, [UInt8])] = [], proto: UInt8,
    payload: [UInt8], hopLimit: UInt8 = 64
  ) -> [UInt8] {
    ethernet(type: 0x86DD)
      + ipv6Packet(
        source, destination, extensions: extensions, proto: proto, payload: payload,
        hopLimit: hopLimit)
  }

  /// The body of an IPv6 fragment header (after next header and reserved):
  /// offset in 8-byte units, M flag, identification.
  public static func ipv6FragmentHeader(offset: UInt16, more: Bool, id: UInt32) -> [UInt8] {
    let field = offset << 3 | (more ? 1 : 0)
    return [
      UInt8(field >> 8), UInt8(field & 0xff), UInt8(id >> 24), UInt8((id >> 16) & 0xff),
      UInt8((id >> 8) & 0xff), UInt8(id & 0xff),
    ]
  }

  /// An ICMP (IPv4) or ICMPv6 message: type, code, checksum 0, 4 bytes of
  /// `rest` (MTU, identifier…), then `body` (the quoted packet of an error).
  public static func icmpMessage(
    type: UInt8, code: UInt8, rest: [UInt8] = [0, 0, 0, 0], body: [UInt8] = []
  ) -> [UInt8] {
    [type, code, 0, 0] + rest.prefix(4) + body
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
