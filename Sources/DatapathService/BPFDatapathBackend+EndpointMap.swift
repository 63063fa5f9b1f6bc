import CTesseraBPF
import TesseraCore

/// The endpoint map (`tessera_endpoints`): each endpoint's identity, addresses, device and flags.
extension BPFDatapathBackend {
  func readInfo(_ id: UInt64) throws(DatapathError) -> endpoint_info? {
    try LibBPF.lookup(
      loader.endpointsFD, id, as: endpoint_info.self, "reading endpoint \(id) from the endpoint map"
    )
  }

  func writeInfo(_ id: UInt64, _ info: endpoint_info) throws(DatapathError) {
    try LibBPF.update(loader.endpointsFD, id, info, "writing endpoint \(id) to the endpoint map")
  }

  func makeInfo(_ endpoint: DatapathEndpoint, previous: endpoint_info?) throws(DatapathError)
    -> endpoint_info
  {
    var info = endpoint_info()
    info.identity = endpoint.identity.rawValue
    var flags: UInt32 = 0
    if endpoint.policy.ingressEnforced { flags |= UInt32(TESSERA_EP_F_INGRESS_ENFORCED) }
    if endpoint.policy.egressEnforced { flags |= UInt32(TESSERA_EP_F_EGRESS_ENFORCED) }
    if let previous, Self.string(fromIfname: previous.ifname) == endpoint.hostInterface {
      flags |= previous.flags & UInt32(TESSERA_EP_F_HOOK_CREATED)
      info.ifindex = previous.ifindex
    }
    info.flags = flags
    info.policy_revision = endpoint.policy.revision
    withUnsafeMutableBytes(of: &info.ifname) { raw in
      raw.initializeMemory(as: UInt8.self, repeating: 0)
      for (i, byte) in endpoint.hostInterface.utf8.prefix(raw.count - 1).enumerated() {
        raw[i] = byte
      }
    }
    info.nr_ips = UInt32(endpoint.ips.count)
    withUnsafeMutableBytes(of: &info.ips) { raw in
      let slots = raw.bindMemory(to: endpoint_ip.self)
      for (i, ip) in endpoint.ips.enumerated() {
        var slot = endpoint_ip()
        slot.family = ip.family.rawValue
        slot.prefixlen = ip.length
        withUnsafeMutableBytes(of: &slot.addr) { addr in
          for (j, byte) in ip.bytes.prefix(16).enumerated() { addr[j] = byte }
        }
        slots[i] = slot
      }
    }
    return info
  }

  static func ips(of info: endpoint_info) -> [IPPrefix] {
    var info = info
    let count = min(Int(info.nr_ips), Int(TESSERA_EP_MAX_IPS))
    return withUnsafeBytes(of: &info.ips) { raw in
      let slots = raw.bindMemory(to: endpoint_ip.self)
      return (0..<count).compactMap { i -> IPPrefix? in
        var slot = slots[i]
        let family: IPPrefix.Family = slot.family == IPPrefix.Family.v6.rawValue ? .v6 : .v4
        return IPPrefix("\(addressText(family: family, &slot.addr))/\(slot.prefixlen)")
      }
    }
  }
}
