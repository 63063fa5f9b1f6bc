/// The identity of a CIDR a policy names (`toCIDR`, `toCIDRSet`, `ipBlock`, and the
/// prefixes of their `except` lists), as Cilium gives one to each prefix: the datapath's
/// ipcache maps the prefix to it, so an address outside every more specific entry (a pod,
/// a longer prefix) carries it (docs/architecture.md §5, CIDR peers).
///
/// Its labels are `cidr:Q` for the prefix and every shorter prefix Q that contains it,
/// plus `reserved:world-ipv4` (or `-ipv6`): a selector for `cidr:10.0.0.0/8` selects the
/// identities of 10.0.0.0/8 and of every prefix inside it, `except: [10.96.0.0/12]` is
/// `cidr:10.96.0.0/12` DoesNotExist, and `world` selects all of them. No label is a pod's,
/// so no endpoint selector and not the `cluster` entity selects one.
///
/// The number lies in the node-local scope (`1<<24` and up) and is derived from the prefix
/// alone (FNV-1a), so every policy service and every node computes the same one without a
/// store and it never changes while a policy names the prefix. Two prefixes with one number
/// cannot both be named: the import that would add the second is refused.
public enum CIDRIdentity {
  /// The label source of CIDR labels (`cidr:10.0.0.0/8`).
  public static let labelSource = "cidr"

  /// The number of `prefix`'s identity.
  public static func number(for prefix: IPPrefix) -> NumericIdentity {
    var hash: UInt32 = 0x811c_9dc5
    for byte in [prefix.family.rawValue, prefix.length] + prefix.bytes {
      hash ^= UInt32(byte)
      hash = hash &* 0x0100_0193
    }
    let scope = NumericIdentity.localScope
    return NumericIdentity(scope + hash % (UInt32.max - scope))
  }

  /// Whether `identity` is in the scope CIDR identities are numbered in.
  public static func isCIDR(_ identity: NumericIdentity) -> Bool {
    identity.rawValue >= NumericIdentity.localScope
  }

  /// `prefix` as a label key: its text, with `:` written `-` for IPv6, so the key never reads
  /// as `source:key` (Cilium does the same, and also pads a leading or trailing `-` with `0`;
  /// these keys are Tessera's own and never compared with Cilium's).
  public static func labelKey(for prefix: IPPrefix) -> String {
    prefix.description.replacingColons
  }

  /// The prefix a CIDR label key names; nil for a key that names none.
  public static func prefix(labelKey key: String) -> IPPrefix? {
    guard key.contains("/") else { return nil }
    let text = String(key.map { $0 == "-" ? ":" : $0 })
    guard let prefix = IPPrefix(text), labelKey(for: prefix) == key else { return nil }
    return prefix
  }

  /// The prefix a CIDR identity stands for (its longest `cidr:` label); nil for any other.
  public static func prefix(of identity: SecurityIdentity) -> IPPrefix? {
    guard isCIDR(identity.id) else { return nil }
    return identity.labels.compactMap {
      $0.source == labelSource ? prefix(labelKey: $0.key) : nil
    }.max { $0.length < $1.length }
  }

  /// The identity of `prefix`: its number and labels.
  public static func identity(for prefix: IPPrefix) -> SecurityIdentity {
    var labels: [Label] = []
    for length in 0...prefix.length {
      var enclosing = prefix
      enclosing.length = length
      enclosing.clearHostBits()
      labels.append(Label(source: labelSource, key: labelKey(for: enclosing), value: ""))
    }
    let world: ReservedIdentity = prefix.family == .v4 ? .worldIPv4 : .worldIPv6
    labels.append(Label(source: Label.Source.reserved, key: world.name, value: ""))
    return SecurityIdentity(id: number(for: prefix), labels: LabelSet(validated: labels))
  }
}

extension IPPrefix {
  /// Zeroes the address bits past ``length``.
  mutating func clearHostBits() {
    for bit in Int(length)..<(bytes.count * 8) { bytes[bit / 8] &= ~(0x80 >> UInt8(bit % 8)) }
  }
}

extension String {
  fileprivate var replacingColons: String { String(map { $0 == ":" ? "-" : $0 }) }
}
