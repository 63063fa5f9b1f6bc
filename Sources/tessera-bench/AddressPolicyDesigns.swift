import Foundation

/// An IP-based design the comparison builds itself, in the router namespace:
/// the selected group is a list of peer addresses allowed to the server's
/// port on the policy path; everything else to the server there is dropped.
/// Established traffic is accepted first (as every production ruleset does),
/// so the policy is paid once per connection.
struct AddressPolicyDesign: Sendable {
  /// Key prefix in bench-results.json and label in the table.
  var name: String
  /// Writes the whole ruleset for `members` (files under `scratch`) and returns
  /// the commands that install it in a fresh namespace.
  var install:
    @Sendable (_ members: [String], _ port: UInt16, _ scratch: String) throws -> [[String]]
  /// The command that applies "one more pod joins the selected group".
  var join: @Sendable (_ member: String, _ port: UInt16) -> [String]
  /// p50 of the kernel write of one join done in process through the design's own
  /// library (µs), one address each; nil where the design has none (iptables).
  var inProcessJoin: (@Sendable (_ router: NetworkNamespace, _ members: [String]) throws -> Double)?
  /// Writes a full resync of `members` and returns the one command that applies it.
  var resync: @Sendable (_ members: [String], _ port: UInt16, _ scratch: String) throws -> [String]
  /// How many members the kernel holds now (to check a resync did what it says).
  var memberCount: @Sendable (_ router: NetworkNamespace) throws -> Int

  static let chain = "TB-SEL"
  static let set = "tb-sel"
  static let server = ComparisonTopology.policyServerLink

  /// Stateful policy needs connection tracking, and netfilter tracks every
  /// packet of a namespace once any rule uses it. The reference path is
  /// exempted (raw table), so it pays neither rules nor tracking, just as it
  /// pays no eBPF program in Tessera's run: each design's figure is the cost
  /// of stateful policy, tracking included.
  static let untrackedReferencePath = """
    *raw
    :PREROUTING ACCEPT [0:0]
    -A PREROUTING -i vc2 -j CT --notrack
    -A PREROUTING -i vs2 -j CT --notrack
    COMMIT

    """

  static func write(_ text: String, _ path: String) throws -> String {
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  /// (a) One iptables rule per peer address, in a chain jumped to for the server.
  static let iptables = AddressPolicyDesign(
    name: "iptables",
    install: { members, port, scratch in
      var rules =
        untrackedReferencePath + """
          *filter
          :FORWARD ACCEPT [0:0]
          :\(chain) - [0:0]
          -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
          -A FORWARD -o \(server) -j \(chain)
          -A FORWARD -o \(server) -j DROP

          """
      for member in members {
        rules += "-A \(chain) -s \(member)/32 -p tcp -m tcp --dport \(port) -j ACCEPT\n"
      }
      rules += "COMMIT\n"
      return [[tool("iptables-restore"), try write(rules, scratch + "/iptables.rules")]]
    },
    join: { member, port in
      [
        tool("iptables"), "-w", "-A", chain, "-s", "\(member)/32", "-p", "tcp", "-m", "tcp",
        "--dport", "\(port)", "-j", "ACCEPT",
      ]
    },
    inProcessJoin: nil,
    resync: { members, port, scratch in
      // A declared chain is flushed and refilled even with --noflush: kube-proxy's resync.
      var rules = "*filter\n:\(chain) - [0:0]\n"
      for member in members {
        rules += "-A \(chain) -s \(member)/32 -p tcp -m tcp --dport \(port) -j ACCEPT\n"
      }
      rules += "COMMIT\n"
      return [
        tool("iptables-restore"), "--noflush", try write(rules, scratch + "/iptables.resync"),
      ]
    },
    memberCount: { router in
      try execute(router.exec([tool("iptables"), "-w", "-S", chain]), keepErrors: true)
        .checkedOutput().split(separator: "\n").filter { $0.hasPrefix("-A ") }.count
    })

  /// (b) One `hash:ip` set per selector, matched by a single rule (Calico's design).
  static let ipset = AddressPolicyDesign(
    name: "ipset",
    install: { members, port, scratch in
      var entries = "create \(set) hash:ip family inet hashsize 1024 maxelem 1048576\n"
      for member in members { entries += "add \(set) \(member)\n" }
      let rules =
        untrackedReferencePath + """
          *filter
          :FORWARD ACCEPT [0:0]
          -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
          -A FORWARD -o \(server) -p tcp -m tcp --dport \(port) -m set --match-set \(set) src -j ACCEPT
          -A FORWARD -o \(server) -j DROP
          COMMIT

          """
      return [
        [tool("ipset"), "restore", "-file", try write(entries, scratch + "/ipset.entries")],
        [tool("iptables-restore"), try write(rules, scratch + "/ipset.rules")],
      ]
    },
    join: { member, _ in [tool("ipset"), "add", set, member] },
    inProcessJoin: { router, members in
      try InProcessSetUpdates.ipsetJoinMicroseconds(in: router, set: set, addresses: members)
    },
    resync: { members, _, scratch in
      // Calico's resync: fill a shadow set, swap it in, drop the old one.
      var entries =
        "create \(set)-next hash:ip family inet hashsize 1024 maxelem 1048576 -exist\nflush \(set)-next\n"
      for member in members { entries += "add \(set)-next \(member)\n" }
      entries += "swap \(set)-next \(set)\ndestroy \(set)-next\n"
      return [tool("ipset"), "restore", "-file", try write(entries, scratch + "/ipset.resync")]
    },
    memberCount: { router in
      let listing = try execute(router.exec([tool("ipset"), "list", set]), keepErrors: true)
        .checkedOutput()
      return listing.split(separator: "\n").drop { !$0.hasPrefix("Members:") }.dropFirst().count
    })

  /// (c) An nftables set matched by one rule; updates are atomic transactions.
  static let nftables = AddressPolicyDesign(
    name: "nft",
    install: { members, port, scratch in
      let ruleset = """
        table inet tb {
          set sel {
            type ipv4_addr
            elements = { \(members.joined(separator: ", ")) }
          }
          chain raw {
            type filter hook prerouting priority raw; policy accept;
            iifname { "vc2", "vs2" } notrack
          }
          chain forward {
            type filter hook forward priority filter; policy accept;
            ct state established,related accept
            oifname "\(server)" ip saddr @sel tcp dport \(port) accept
            oifname "\(server)" drop
          }
        }

        """
      return [[tool("nft"), "-f", try write(ruleset, scratch + "/nft.rules")]]
    },
    join: { member, _ in [tool("nft"), "add", "element", "inet", "tb", "sel", "{ \(member) }"] },
    inProcessJoin: { router, members in
      try InProcessSetUpdates.nftJoinMicroseconds(
        in: router, table: "tb", set: "sel", addresses: members)
    },
    resync: { members, _, scratch in
      let script =
        "flush set inet tb sel\nadd element inet tb sel { \(members.joined(separator: ", ")) }\n"
      return [tool("nft"), "-f", try write(script, scratch + "/nft.resync")]
    },
    memberCount: { router in
      let listing = try execute(
        router.exec([tool("nft"), "list", "set", "inet", "tb", "sel"]), keepErrors: true
      ).checkedOutput()
      return listing.components(separatedBy: "elements = {").dropFirst().first.map {
        $0.prefix { $0 != "}" }.split(separator: ",").count
      } ?? 0
    })

  static let all = [iptables, ipset, nftables]

  /// The tools every design needs, missing ones named.
  static func missingTools() -> [String] {
    ["iptables", "iptables-restore", "ipset", "nft", "nsenter"].filter { toolPath($0) == nil }
  }

  private static func tool(_ name: String) -> String { toolPath(name) ?? name }
}
