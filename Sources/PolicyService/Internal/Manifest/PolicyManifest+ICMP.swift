import TesseraCore

extension PolicyManifest {
  /// ICMP type names Cilium accepts in `icmps` (`pkg/policy/api/icmp.go`), per family.
  static let icmpTypeNames: [L4Protocol: [String: UInt8]] = [
    .icmp: [
      "EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "Echo": 8, "EchoRequest": 8,
      "RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
      "Timestamp": 13, "TimestampReply": 14, "Photuris": 40, "ExtendedEchoRequest": 42,
      "ExtendedEchoReply": 43,
    ],
    .icmpv6: [
      "DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
      "EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130,
      "MulticastListenerReport": 131, "MulticastListenerDone": 132, "RouterSolicitation": 133,
      "RouterAdvertisement": 134, "NeighborSolicitation": 135, "NeighborAdvertisement": 136,
      "RedirectMessage": 137, "RouterRenumbering": 138, "ICMPNodeInformationQuery": 139,
      "ICMPNodeInformationResponse": 140, "InverseNeighborDiscoverySolicitation": 141,
      "InverseNeighborDiscoveryAdvertisement": 142, "HomeAgentAddressDiscoveryRequest": 144,
      "HomeAgentAddressDiscoveryReply": 145, "MobilePrefixSolicitation": 146,
      "MobilePrefixAdvertisement": 147, "DuplicateAddressRequestCodeSuffix": 157,
      "DuplicateAddressConfirmationCodeSuffix": 158, "ExtendedEchoRequest": 160,
      "ExtendedEchoReply": 161,
    ],
  ]

  /// Reads a Cilium rule's `icmps`: each element's `fields`, each a `family` (`IPv4`, the
  /// default, or `IPv6`) and a `type` (0–255 or its name in that family). A type is stored
  /// as the port of an ICMP or ICMPv6 entry (as Cilium does), so the rule matches exactly
  /// those types of that family and nothing else.
  static func decodeCiliumICMPs(_ elements: [ManifestField]) throws(FieldError) -> [PortProtocol] {
    var types: [PortProtocol] = []
    for element in elements {
      let rule = try element.object(known: ["fields"])
      let fields = try rule.list("fields")
      // As for a port rule without ports: Cilium matches nothing, a trap in an allow or a deny.
      if fields.isEmpty {
        throw FieldError(
          path: element.childPath("fields"),
          problem: "must list at least one ICMP type (an ICMP rule without fields matches nothing)")
      }
      for field in fields { types.append(try decodeICMPField(field)) }
    }
    return types
  }

  private static func decodeICMPField(_ field: ManifestField) throws(FieldError) -> PortProtocol {
    let object = try field.object(known: ["family", "type"])
    var proto = L4Protocol.icmp
    if let familyField = object["family"] {
      switch try familyField.string() {
      case "IPv4": proto = .icmp
      case "IPv6": proto = .icmpv6
      case let other: throw familyField.error("unknown family \"\(other)\" (want IPv4 or IPv6)")
      }
    }
    let typeField = try object.required("type")
    let family = proto == .icmp ? "IPv4" : "IPv6"
    let type: Int
    switch typeField.value {
    case .string(let text):
      if let number = Int(text) {
        type = number
      } else if let named = icmpTypeNames[proto]?[text] {
        type = Int(named)
      } else {
        let names = (icmpTypeNames[proto] ?? [:]).sorted { ($0.value, $0.key) < ($1.value, $1.key) }
          .map(\.key)
        throw typeField.error(
          "unknown \(family) ICMP type \"\(text)\" (want 0-255 or one of \(names.joined(separator: ", ")))"
        )
      }
    default:
      type = try typeField.integer()
    }
    guard (0...255).contains(type) else {
      throw typeField.error("ICMP type \(type) is out of range (0-255)")
    }
    return PortProtocol(proto: proto, ports: PortRange(single: UInt16(type)))
  }
}
