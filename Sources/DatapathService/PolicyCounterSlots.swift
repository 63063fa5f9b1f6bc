import CTesseraBPF

/// Which counter slots of `tessera_policy_stats` policy entries hold. Slot 0
/// (`TESSERA_POLICY_STATS_NONE`) is never handed out: it means "not
/// counted". Rebuilt from the policy map at startup (the map outlives the
/// daemon), so the kernel's entries are the only record of who holds what.
struct PolicyCounterSlots: Sendable {
  /// Slots 1..<capacity can be handed out.
  let capacity: UInt32
  private var used: Set<UInt32> = []
  /// Freed slots below `next`, handed out again before new ones.
  private var free: [UInt32] = []
  /// The lowest slot never handed out.
  private var next: UInt32 = 1

  init(capacity: UInt32 = UInt32(TESSERA_POLICY_STATS_MAX), inUse: Set<UInt32> = []) {
    self.capacity = capacity
    used = inUse.filter { $0 != UInt32(TESSERA_POLICY_STATS_NONE) && $0 < capacity }
    next = (used.max() ?? 0) + 1
    free = (1..<next).filter { !used.contains($0) }.reversed()
  }

  /// Slots in use.
  var count: Int { used.count }

  func isUsed(_ slot: UInt32) -> Bool { used.contains(slot) }

  /// A free slot, now in use; nil when every slot is.
  mutating func allocate() -> UInt32? {
    let slot: UInt32
    if let reused = free.popLast() {
      slot = reused
    } else if next < capacity {
      slot = next
      next += 1
    } else {
      return nil
    }
    used.insert(slot)
    return slot
  }

  /// Gives the slot back; slots not in use are ignored.
  mutating func release(_ slot: UInt32) {
    guard used.remove(slot) != nil else { return }
    free.append(slot)
  }
}
