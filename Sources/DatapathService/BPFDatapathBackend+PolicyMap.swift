import CTesseraBPF
import Synchronization
import TesseraCore

/// The policy map (`tessera_policy`): the backend writes each endpoint's
/// entries from an in-memory mirror, so that a regeneration writes only what
/// changed, and announces in the endpoint map which kinds of entries exist.
extension BPFDatapathBackend {
  /// The policy-kind bits (and their validity flag) the programs read for the endpoint.
  func announcedPolicyKinds(endpointID: UInt64) throws(DatapathError) -> UInt32? {
    try readInfo(endpointID).map {
      $0.flags & (Self.policyKindsMask | UInt32(TESSERA_EP_F_POLICY_KINDS))
    }
  }

  /// The endpoint-info flag bits of the policy kinds (`TESSERA_EP_POLICY_KINDS_SHIFT`).
  static let policyKindsMask = UInt32(0xffff) << UInt32(TESSERA_EP_POLICY_KINDS_SHIFT)

  /// The policy-kind flag bits of entries of these groups: per direction,
  /// whether there are deny or allow entries for a named or any peer and
  /// protocol, so that the programs skip the lookups nothing can answer.
  static func policyKinds(of groups: [PolicyGroup]) -> UInt32 {
    var kinds: UInt32 = 0
    for group in groups {
      var kind: UInt32 = group.verdict == .deny ? 0 : UInt32(TESSERA_POLICY_KIND_ALLOW)
      if group.peer == .unknown { kind |= UInt32(TESSERA_POLICY_KIND_ANY_PEER) }
      if group.proto == .any { kind |= UInt32(TESSERA_POLICY_KIND_ANY_PROTO) }
      let byte = UInt32(TESSERA_EP_POLICY_KINDS_SHIFT) + UInt32(group.direction.rawValue - 1) * 8
      kinds |= 1 << (byte + kind)
    }
    return kinds
  }

  /// Read back from the kernel's policy map (not from memory). Ranges come
  /// back as written, except that ranges overlapping within one (verdict,
  /// direction, peer, protocol) come back as their union.
  public func policyEntries(endpointID: UInt64) throws(DatapathError) -> [PolicyEntry] {
    guard try readInfo(endpointID) != nil else {
      throw DatapathError(
        code: .notFound, message: "endpoint \(endpointID) is not in the eBPF endpoint map")
    }
    return PolicyEncoding.decode(try readSlices(only: endpointID)[endpointID] ?? [:])
  }

  /// The endpoint's entries read back from the kernel's policy map, each
  /// with the packets and bytes counted on it.
  public func countedPolicyEntries(endpointID: UInt64) throws(DatapathError)
    -> [CountedPolicyEntry]
  {
    guard try readInfo(endpointID) != nil else {
      throw DatapathError(
        code: .notFound, message: "endpoint \(endpointID) is not in the eBPF endpoint map")
    }
    let slice = try readSlices(only: endpointID)[endpointID] ?? [:]
    var counted: [CountedPolicyEntry] = []
    for (entry, slots) in PolicyEncoding.decodeWithSlots(slice) {
      var item = CountedPolicyEntry(entry: entry)
      for slot in slots {
        for cpu
          in try LibBPF.lookupPerCPU(
            loader.policyStatsFD, slot, as: policy_stats.self,
            "reading the counters of policy slot \(slot)") ?? []
        {
          item.packets += cpu.packets
          item.bytes += cpu.bytes
        }
      }
      counted.append(item)
    }
    return counted
  }

  /// Writes the new and changed blocks of the groups the change touches and
  /// returns the blocks to delete afterwards. A port range kept as it was
  /// keeps its counter slot, and so its counts; a new or changed one gets a
  /// fresh slot.
  func writePolicy(_ change: EndpointChange) throws(DatapathError) -> [(PolicyGroup, PortPrefix)] {
    let id = change.endpoint.id
    let wanted = change.endpoint.policy.entries
    var slice = state.withLock { $0.slices[id] ?? [:] }
    let slotsBefore = slice.counterSlots
    defer {
      state.withLock { [slice] in $0.slices[id] = slice }
      releaseCounterSlots(slotsBefore.subtracting(slice.counterSlots))
    }

    var affected = Set<PolicyGroup>()
    if change.isNew {
      affected.formUnion(slice.keys)
      affected.formUnion(wanted.map(PolicyGroup.init))
    } else {
      for key in change.upserts.map(\.key) + change.deletes {
        affected.formUnion(PolicyGroup.both(key))
      }
    }
    let wantedByGroup = Dictionary(
      grouping: wanted.filter { affected.contains(PolicyGroup($0)) }, by: PolicyGroup.init)

    var removals: [(PolicyGroup, PortPrefix)] = []
    for group in affected {
      let desired = PolicyEncoding.encodeGroup(wantedByGroup[group]?.map(\.ports) ?? [])
      let current = slice[group] ?? [:]
      var slots: [PortRange: UInt32] = [:]
      for block in current.values where block.slot != Self.noCounterSlot {
        slots[block.cluster] = block.slot
      }
      for (prefix, cluster) in desired {
        let slot: UInt32
        if let kept = slots[cluster] {
          slot = kept
        } else {
          slot = try claimCounterSlot()
          slots[cluster] = slot
        }
        let block = PolicyBlock(cluster: cluster, slot: slot)
        guard current[prefix] != block else { continue }
        try LibBPF.update(
          loader.policyFD, PolicyEncoding.key(endpointID: id, group: group, prefix: prefix),
          PolicyEncoding.value(group: group, block: block),
          "writing a policy entry of endpoint \(id)")
        slice[group, default: [:]][prefix] = block
      }
      for prefix in current.keys where desired[prefix] == nil { removals.append((group, prefix)) }
    }
    return removals
  }

  func deletePolicy(_ id: UInt64, _ removals: [(PolicyGroup, PortPrefix)]) throws(DatapathError) {
    guard !removals.isEmpty else { return }
    var slice = state.withLock { $0.slices[id] ?? [:] }
    let slotsBefore = slice.counterSlots
    defer {
      state.withLock { [slice] in $0.slices[id] = slice.isEmpty ? nil : slice }
      releaseCounterSlots(slotsBefore.subtracting(slice.counterSlots))
    }
    for (group, prefix) in removals {
      try LibBPF.delete(
        loader.policyFD, PolicyEncoding.key(endpointID: id, group: group, prefix: prefix),
        "deleting a policy entry of endpoint \(id)")
      slice[group]?[prefix] = nil
      if slice[group]?.isEmpty == true { slice[group] = nil }
    }
  }

  /// Every endpoint's entries as the kernel holds them (one walk of the map).
  func readSlices(only: UInt64? = nil) throws(DatapathError) -> [UInt64: PolicySlice] {
    var slices: [UInt64: PolicySlice] = [:]
    for key in try LibBPF.keys(loader.policyFD, as: policy_key.self, "listing the policy map") {
      if let only, key.endpoint_id != only { continue }
      guard
        let value = try LibBPF.lookup(
          loader.policyFD, key, as: policy_value.self, "reading the policy map"),
        let decoded = PolicyEncoding.decode(key: key, value: value)
      else { continue }
      slices[decoded.endpointID, default: [:]][decoded.group, default: [:]][decoded.prefix] =
        decoded.block
    }
    return slices
  }
}
