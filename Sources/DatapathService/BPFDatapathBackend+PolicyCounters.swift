import CTesseraBPF
import TesseraCore

/// The policy entries' counter slots (`tessera_policy_stats`, see
/// `maps_types.h`): handed out when an entry is written, given back when
/// its last block is deleted, rebuilt from the policy map at startup.
extension BPFDatapathBackend {
  static let noCounterSlot = UInt32(TESSERA_POLICY_STATS_NONE)

  /// A counter slot for a new entry, its counters zeroed under a new
  /// generation (so connections the slot's former entry allowed stop
  /// counting on it); ``noCounterSlot`` when every slot is in use (the entry
  /// is enforced, only not counted).
  func claimCounterSlot() throws(DatapathError) -> UInt32 {
    guard let slot = state.withLock({ $0.counterSlots.allocate() }) else {
      let warn = state.withLock { state in
        defer { state.counterSlotsExhaustedWarned = true }
        return !state.counterSlotsExhaustedWarned
      }
      if warn {
        logger.warning(
          "every policy counter slot is in use: new policy entries are enforced but not counted",
          metadata: ["slots": "\(TESSERA_POLICY_STATS_MAX - 1)"])
      }
      return Self.noCounterSlot
    }
    do {
      let current = try LibBPF.lookupPerCPU(
        loader.policyStatsFD, slot, as: policy_stats.self,
        "reading the counters of policy slot \(slot)")
      var fresh = policy_stats()
      fresh.generation = (current?.first?.generation ?? 0) &+ 1
      try LibBPF.updatePerCPU(
        loader.policyStatsFD, slot, fresh, "resetting the counters of policy slot \(slot)")
    } catch {
      state.withLock { $0.counterSlots.release(slot) }
      throw error
    }
    return slot
  }

  func releaseCounterSlots(_ slots: Set<UInt32>) {
    guard !slots.isEmpty else { return }
    state.withLock { state in
      for slot in slots { state.counterSlots.release(slot) }
      state.counterSlotsExhaustedWarned = false
    }
  }

  /// Gives a counter slot to every entry without one: entries copied from
  /// the policy map of older programs (`map_upgrade.c`), or written while
  /// every slot was in use. Each block is rewritten in place (an LPM
  /// update replaces the value atomically).
  func assignMissingCounterSlots() throws(DatapathError) {
    let slices = state.withLock { $0.slices }
    for (id, slice) in slices {
      for (group, blocks) in slice {
        let unslotted = Set(blocks.values.filter { $0.slot == Self.noCounterSlot }.map(\.cluster))
        for cluster in unslotted {
          let slot = try claimCounterSlot()
          guard slot != Self.noCounterSlot else { return }
          for (prefix, block) in blocks
          where block.slot == Self.noCounterSlot && block.cluster == cluster {
            let slotted = PolicyBlock(cluster: cluster, slot: slot)
            try LibBPF.update(
              loader.policyFD, PolicyEncoding.key(endpointID: id, group: group, prefix: prefix),
              PolicyEncoding.value(group: group, block: slotted),
              "giving a counter slot to a policy entry of endpoint \(id)")
            state.withLock { $0.slices[id]?[group]?[prefix] = slotted }
          }
        }
      }
    }
  }
}
