/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures shared by the BPF programs (bpf/endpoint.bpf.c) and the libbpf
 * loader (the C files beside bpf/, and Swift through include/tessera_bpf.h).
 *
 * Every struct is explicitly padded: keys are compared byte for byte, so a
 * padding byte left uninitialised on either side would be a silent miss.
 */
#ifndef TESSERA_MAPS_TYPES_H
#define TESSERA_MAPS_TYPES_H

#include <linux/types.h>

/* Reserved identities (docs/architecture.md §3, Cilium's numbers). */
#define TESSERA_ID_UNKNOWN 0
#define TESSERA_ID_HOST 1
#define TESSERA_ID_WORLD 2
#define TESSERA_ID_WORLD_IPV4 9
#define TESSERA_ID_WORLD_IPV6 10
#define TESSERA_ID_REMOTE_NODE 6
/* Identities from 2^24 on are the CIDR identities (TesseraCore CIDRIdentity). */
#define TESSERA_ID_LOCAL_SCOPE (1U << 24)

/* Directions, relative to the endpoint; same values as Swift's TrafficDirection. */
#define TESSERA_DIR_INGRESS 1
#define TESSERA_DIR_EGRESS 2
/* The other direction of `dir`: that of a flow's replies. */
#define TESSERA_DIR_OPPOSITE(dir)                                                                  \
	((dir) == TESSERA_DIR_INGRESS ? TESSERA_DIR_EGRESS : TESSERA_DIR_INGRESS)

/* Policy verdicts; same values as Swift's PolicyVerdict. */
#define TESSERA_VERDICT_ALLOW 1
#define TESSERA_VERDICT_DENY 2

#define TESSERA_FAMILY_V4 4
#define TESSERA_FAMILY_V6 6

/* ---- ipcache: LPM trie, IP prefix -> identity ---------------------------- */

/* prefixlen counts the family byte and the 3 pad bytes (32 bits) plus the IP prefix. */
#define TESSERA_IPCACHE_STATIC_PREFIX 32

struct ipcache_key {
	__u32 prefixlen;
	__u8 family; /* TESSERA_FAMILY_V4 / _V6 */
	__u8 pad[3];
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;
};

/* ---- policy: LPM trie, all endpoints ---------------------------------------
 * The key leads with the endpoint id, then a `deny` byte: the trie is looked
 * up separately for deny and allow entries, so a deny range is found even
 * when a more specific allow range overlaps it (the longest match is only
 * taken among entries of the same verdict). Peer identity 0 and protocol 0
 * are wildcards stored as such and looked up explicitly, so a new flow costs
 * at most 8 lookups; established flows take the conntrack fast path.
 */
/* pad0, endpoint id, deny, direction, proto, pad, peer */
#define TESSERA_POLICY_STATIC_PREFIX 160
#define TESSERA_POLICY_FULL_PREFIX (TESSERA_POLICY_STATIC_PREFIX + 16)

struct policy_key {
	__u32 prefixlen;
	__u32 pad0;
	__u64 endpoint_id;
	__u8 deny;	/* 1 for deny entries, 0 for allow entries */
	__u8 direction; /* TESSERA_DIR_* */
	__u8 proto;	/* IANA number; 0 = any protocol */
	__u8 pad;
	__u32 peer;   /* numeric identity; 0 = any peer */
	__be16 dport; /* network order so the port prefix is its high bits */
	__u16 pad2;
};

#define TESSERA_POLICY_F_NONE 0

struct policy_value {
	__u8 verdict; /* TESSERA_VERDICT_* (redundant with key.deny, kept for readers) */
	__u8 flags;
	__u16 pad;
	/* The port range this prefix was decomposed from (host order), so the
	 * loader can merge prefixes back into the ranges it was given. */
	__u16 port_first;
	__u16 port_last;
	/* The entry's slot in tessera_policy_stats (TESSERA_POLICY_STATS_NONE:
	 * not counted). Every prefix of one port range shares it. */
	__u32 stats_slot;
};

/* ---- policy counters: per-CPU array, slot -> packets and bytes -------------
 * Each policy entry (one port range of one endpoint, all its prefixes) has
 * a slot, handed out by the loader. A new flow adds to the slot of the entry
 * that decided it (a deny entry: its dropped packets); an allowed flow's
 * conntrack entry remembers the slot, and every later packet of the
 * connection, in both directions, adds to it with one array lookup (the
 * established path never looks at the policy map). A slot handed out again
 * after its entry was deleted gets a new generation: connections of the
 * former entry, whose conntrack entries carry the old one, stop counting.
 * Default-deny drops have no entry (tessera_metrics counts them).
 */
#define TESSERA_POLICY_STATS_NONE 0
/* Slots, slot 0 included (24 bytes per slot and possible CPU). */
#define TESSERA_POLICY_STATS_MAX 65536

struct policy_stats {
	__u64 packets;
	__u64 bytes;
	__u32 generation; /* written by the loader when it hands the slot out */
	__u32 pad;
};

/* ---- endpoint map: endpoint id -> configuration that changes without reload */

#define TESSERA_EP_F_INGRESS_ENFORCED (1U << 0)
#define TESSERA_EP_F_EGRESS_ENFORCED (1U << 1)
/* The loader created the clsact qdisc on the device (and may destroy it). */
#define TESSERA_EP_F_HOOK_CREATED (1U << 2)
/* The policy kind bits below are maintained (a loader that predates them
 * leaves this clear, and the programs then make every policy lookup). */
#define TESSERA_EP_F_POLICY_KINDS (1U << 3)
/* Policy kinds: which kinds of entries the endpoint has in the policy map,
 * one byte per direction at TESSERA_EP_POLICY_KINDS_SHIFT + (direction - 1) * 8;
 * in the byte, bit (allow ? 4 : 0) + (any peer ? 2 : 0) + (any protocol ? 1 : 0).
 * The programs skip the lookups that no entry can answer (a new flow of an
 * endpoint without deny entries or wildcards takes one policy lookup instead
 * of eight). The loader keeps the bits a superset of the map's entries at
 * every moment: kinds are added before their entries are written and
 * removed after their entries are deleted. */
#define TESSERA_EP_POLICY_KINDS_SHIFT 8
#define TESSERA_POLICY_KIND_ALLOW 4
#define TESSERA_POLICY_KIND_ANY_PEER 2
#define TESSERA_POLICY_KIND_ANY_PROTO 1

#define TESSERA_EP_MAX_IPS 8
#define TESSERA_IFNAMSIZ 16

struct endpoint_ip {
	__u8 family; /* 0 = unused slot */
	__u8 prefixlen;
	__u8 pad[2];
	__u8 addr[16];
};

struct endpoint_info {
	__u32 identity;
	__u32 flags;	       /* TESSERA_EP_F_* */
	__u64 policy_revision; /* realised revision */
	__u32 ifindex;	       /* host-side device, 0 when none */
	char ifname[TESSERA_IFNAMSIZ];
	__u32 nr_ips;
	struct endpoint_ip ips[TESSERA_EP_MAX_IPS];
};

/* ---- conntrack: LRU hash --------------------------------------------------
 * One entry per flow and endpoint, found with one lookup by the packets of
 * both directions: the key holds the tuple in its canonical orientation (the
 * side with the lower address, then port, first; tessera_ct_tuple_reversed)
 * and the direction of traffic from the key's source side to its destination
 * side (0 for a tuple that is its own reverse, whose two directions share the
 * entry). The entry remembers the direction and orientation of the packet
 * that created it: a packet of the entry's direction is the flow itself
 * (established), one of the other direction is a reply.
 */

#define TESSERA_CT_F_CLOSING (1U << 0) /* FIN or RST seen */
/* Keyed as above (the programs set it on every entry they create; the
 * loader's listing shows such an entry as the packet that created it). */
#define TESSERA_CT_F_CANONICAL (1U << 1)

struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order; ICMP echo id for echo request (sport) / reply (dport) */
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 direction; /* of traffic from saddr to daddr; 0 for a tuple equal to its reverse */
	__u8 pad;
	__u64 endpoint_id;
};

struct ct_entry {
	__u64 created_ns;   /* CLOCK_MONOTONIC: bpf_ktime_get_coarse_ns(), within a tick */
	__u64 last_seen_ns; /* written at most every TESSERA_CT_REFRESH_NS */
	__u64 expires_ns;
	__u64 packets_fwd;
	__u64 packets_rev;
	__u32 flags;	/* TESSERA_CT_F_* */
	__u8 direction; /* of the packet that created the entry (TESSERA_DIR_*) */
	__u8 reversed;	/* 1 when that packet's tuple is the key's reversed */
	__u16 pad;
	/* The counters of the policy entry that allowed the flow (maps_types.h,
	 * policy counters); 0 when none did (default allow). */
	__u32 stats_slot;
	__u32 stats_generation;
};

/* Whether the tuple (s, sport) -> (d, dport) is the reverse of its canonical
 * orientation. Addresses are compared as two native 64-bit words each: any
 * total order does, as long as the programs and the loader use the same one. */
static inline __attribute__((always_inline)) int
tessera_ct_tuple_reversed(__u64 s0, __u64 s1, __u64 d0, __u64 d1, __u16 sport, __u16 dport)
{
	if (s0 != d0)
		return s0 > d0;
	if (s1 != d1)
		return s1 > d1;
	return sport > dport;
}

/* The conntrack table's capacity in flows unless the loader is given another
 * (tessera_bpf_open, tessera-datapathd --conntrack-max-entries). */
#define TESSERA_CT_DEFAULT_MAX 65536

/* Lifetimes, as Cilium's defaults. */
#define TESSERA_CT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)
#define TESSERA_CT_LIFETIME_NONTCP_NS (60ULL * 1000000000ULL)
#define TESSERA_CT_LIFETIME_SYN_NS (60ULL * 1000000000ULL)
#define TESSERA_CT_LIFETIME_CLOSE_NS (10ULL * 1000000000ULL)
/* Longest time an established flow's packets go without writing its expiry. */
#define TESSERA_CT_REFRESH_NS (1ULL * 1000000000ULL)

/* ---- fragments: LRU hash ----------------------------------------------------
 * A datagram's first fragment (the one with the L4 header) is judged like any
 * packet; when it passes, its (endpoint, direction, addresses, protocol,
 * fragment id) is recorded, and later fragments pass only when their
 * datagram is recorded (as Cilium's IPv4 fragment tracking). The entry
 * expires after the kernel's default reassembly timeout.
 */
#define TESSERA_FRAG_LIFETIME_NS (30ULL * 1000000000ULL)

struct frag_key {
	__u64 endpoint_id;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id; /* IPv4: the 16-bit identification; IPv6: the fragment header's */
	__u8 proto;
	__u8 family;
	__u8 direction;
	__u8 pad;
};

struct frag_value {
	__u64 expires_ns;
	__u16 sport; /* the first fragment's ports (host order), for inspection */
	__u16 dport;
	__u32 pad;
};

/* ---- metrics: per-CPU hash, endpoint id -> counters -----------------------
 * counters[(direction - 1) * TESSERA_REASON_MAX + reason].
 */
enum tessera_reason {
	/* Forwarded. */
	TESSERA_FWD_POLICY = 0,		/* new flow allowed by policy */
	TESSERA_FWD_CT_ESTABLISHED = 1, /* established flow, forward direction */
	TESSERA_FWD_CT_REPLY = 2,	/* reply of a flow allowed the other way */
	TESSERA_FWD_NON_IP =
		3, /* ARP (every other ethertype is dropped: TESSERA_DROP_UNKNOWN_L3) */
	TESSERA_FWD_ICMP6_ND = 4, /* IPv6 neighbour discovery / MLD */
	/* Dropped. */
	TESSERA_DROP_POLICY_DENY = 5,	     /* matched a deny entry */
	TESSERA_DROP_POLICY_DEFAULT = 6,     /* no allow entry in an enforced direction */
	TESSERA_DROP_INVALID_PACKET = 7,     /* truncated or malformed header */
	TESSERA_DROP_FRAG_NOT_SUPPORTED = 8, /* non-first fragment without flow state */
	TESSERA_DROP_NO_ENDPOINT = 9,	     /* endpoint missing from the endpoint map */
	TESSERA_DROP_CT_CREATE_FAILED = 10,  /* conntrack entry could not be created */
	TESSERA_DROP_MISSED_TAIL_CALL = 11,  /* no shared handler installed */
	/* Reasons added later are appended, whatever their kind, so that the
	 * counters of older reasons keep their index
	 * (tessera_reason_is_drop says which are drops). */
	TESSERA_DROP_INVALID_SOURCE =
		12,		      /* from the container: IP source or ARP sender not its own */
	TESSERA_DROP_UNKNOWN_L3 = 13, /* not IPv4, IPv6 or ARP; VLAN-tagged */
	TESSERA_DROP_EXT_HEADERS =
		14, /* IPv6 extension headers not parsed to the end, or unsupported */
	TESSERA_FWD_CT_RELATED = 15, /* ICMP error about a tracked flow (PMTU discovery) */
	TESSERA_FWD_FRAGMENT =
		16, /* non-first fragment of a datagram whose first fragment passed */
	TESSERA_REASON_MAX = 17,
};

#define TESSERA_REASON_FIRST_DROP TESSERA_DROP_POLICY_DENY

static inline __attribute__((always_inline)) int tessera_reason_is_drop(__u32 reason)
{
	return reason >= TESSERA_REASON_FIRST_DROP && reason != TESSERA_FWD_CT_RELATED &&
	       reason != TESSERA_FWD_FRAGMENT;
}
#define TESSERA_METRICS_ENTRIES (2 * TESSERA_REASON_MAX)

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

struct endpoint_metrics {
	struct metrics_value counters[TESSERA_METRICS_ENTRIES];
};

/* ---- events: ring buffer of verdicts ---------------------------------------
 * One event per dropped packet and per connection allowed by policy (its
 * first packet); packets of established flows and replies emit none, which
 * is the aggregation Cilium's monitor does by default. When the ring is full
 * the event is lost (counted in tessera_events_lost), never the packet.
 */

/* Which kind of policy entry decided (TESSERA_MATCH_*). */
#define TESSERA_MATCH_NONE 0	/* not a policy verdict (conntrack, parser, source) */
#define TESSERA_MATCH_L3_L4 1	/* peer identity and protocol/port */
#define TESSERA_MATCH_L3_ONLY 2 /* peer identity, any protocol */
#define TESSERA_MATCH_L4_ONLY 3 /* any peer, protocol/port */
#define TESSERA_MATCH_ALL 4	/* any peer, any protocol */
#define TESSERA_MATCH_DEFAULT 5 /* no entry: the direction's default */

struct tessera_event {
	__u64 time_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 endpoint_id;
	__u32 src_identity; /* 0 when not looked up */
	__u32 dst_identity;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host order; 0 for portless protocols */
	__u16 dport;
	__u8 family; /* 4 or 6; 0 for non-IP (ARP, unknown L3) */
	__u8 proto;
	__u8 direction; /* TESSERA_DIR_* */
	__u8 reason;	/* enum tessera_reason */
	__u8 match;	/* TESSERA_MATCH_* */
	__u8 deny;	/* the matched entry is a deny entry */
	__u8 state;	/* TESSERA_EVENT_STATE_*: what the event says of the connection */
	__u8 icmp_type; /* ICMP and ICMPv6: the message's type; else 0 */
	__u32 length;	/* bytes of the packet */
};

#define TESSERA_EVENT_STATE_NONE 0  /* a drop */
#define TESSERA_EVENT_STATE_NEW 1   /* a connection policy allowed: its first packet */
#define TESSERA_EVENT_STATE_CLOSE 2 /* a tracked connection began to close (FIN or RST) */

/* ---- shared handlers ------------------------------------------------------ */

/* Slots of the tessera_handlers program array. */
#define TESSERA_HANDLER_FROM_CONTAINER 0 /* egress policy */
#define TESSERA_HANDLER_TO_CONTAINER 1	 /* ingress policy */
#define TESSERA_HANDLER_MAX 2

/* skb->cb words carrying the endpoint id from a stub to a handler. */
#define TESSERA_CB_ENDPOINT_LO 0
#define TESSERA_CB_ENDPOINT_HI 1

struct loader_state {
	__u64 object_hash;  /* FNV-1a of the object file the handlers came from */
	__u64 installed_ns; /* CLOCK_MONOTONIC when installed */
	__u32 handler_ids[TESSERA_HANDLER_MAX];
};

#endif /* TESSERA_MAPS_TYPES_H */
