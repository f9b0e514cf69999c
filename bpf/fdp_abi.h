/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * fdp_abi.h - THE ABI between the fastdp BPF programs and Python.
 *
 * Every struct, enum, map key/value and drop reason that both the kernel side
 * (bpf/ programs) and the Python side (weave_fdp/datapath/fastdp/abi.py) see lives
 * here and only here. abi.py mirrors it field by field and
 * tests/bpf/test_abi_layout.py proves (sizeof/offsetof measured by a BPF
 * program) that the two agree. Bump FDP_ABI_VERSION on any layout change.
 *
 * Byte order: fields named *_ip hold IPv4 addresses in network order (as they
 * appear on the wire); ethertype is network order; ports are network order;
 * everything else is host order.
 *
 * Wire (RFC 7348 VXLAN on UDP 6784): VNI = src_peer | dst_peer << 12, where
 * src_peer is the short ID of the peer where the frame entered the overlay and
 * dst_peer the short ID of the peer it must reach. A flooded frame (broadcast,
 * multicast, unknown unicast) carries dst_peer == src_peer: a peer never sends
 * unicast to itself over the network, so the pair is free to mean "follow
 * src_peer's broadcast tree" without reserving a short ID.
 */
#ifndef FDP_ABI_H
#define FDP_ABI_H

#define FDP_ABI_VERSION 8

/* --- tunables: name, default, unit. Only the loader passes -D flags. ----- */
#ifndef FDP_MAX_PEERS
#define FDP_MAX_PEERS 4096        /* peers: short IDs are 12 bits */
#endif
#ifndef FDP_MAX_MACS
#define FDP_MAX_MACS 16384        /* learned MAC entries (fdp_learned, LRU: the least recently used go) */
#endif
#ifndef FDP_MAX_LOCAL_MACS
#define FDP_MAX_LOCAL_MACS 256    /* local MAC entries (fdp_macs: containers of this host only) */
#endif
#ifndef FDP_MAX_MACS_PER_PEER
#define FDP_MAX_MACS_PER_PEER 4096  /* learned MACs one peer may hold here; more are not learned */
#endif
#ifndef FDP_MAX_PORT_IPS
#define FDP_MAX_PORT_IPS 8        /* IPv4 addresses a container may send from */
#endif
#ifndef FDP_MAX_FLOWS
#define FDP_MAX_FLOWS 16384       /* flow counter entries, LRU-evicted */
#endif
#ifndef FDP_FLOW_SLOTS
#define FDP_FLOW_SLOTS 256        /* per-CPU flow counter slots in front of fdp_flows (a power of 2) */
#endif
#ifndef FDP_FLOW_SLOT_IDLE_NS
#define FDP_FLOW_SLOT_IDLE_NS 2000000000  /* ns: a slot idle this long goes to a flow that hashes to it */
#endif
#ifndef FDP_MAX_BCAST_HOPS
#define FDP_MAX_BCAST_HOPS 16     /* next hops per broadcast tree at one peer */
#endif
#ifndef FDP_MAX_LOCAL_PORTS
#define FDP_MAX_LOCAL_PORTS 256   /* host-side veths per host: its containers and the host's own port */
#endif
#ifndef FDP_DNS_NAME_MAX
#define FDP_DNS_NAME_MAX 128      /* bytes: a name the kernel answers, in wire format (labels and root) */
#endif
#ifndef FDP_DNS_MAX_ADDRS
#define FDP_DNS_MAX_ADDRS 16      /* IPv4 addresses of a name the kernel answers; more: userspace answers */
#endif
#ifndef FDP_DNS_MAX_NAMES
#define FDP_DNS_MAX_NAMES 8192    /* names in fdp_dns_names; beyond that userspace answers the rest */
#endif
#ifndef FDP_DNS_MAX_SOURCES
#define FDP_DNS_MAX_SOURCES 8192  /* per-source rate-limit entries (fdp_dns_sources, LRU) */
#endif
#ifndef FDP_MAC_REFRESH_NS
#define FDP_MAC_REFRESH_NS 1000000000  /* ns: a learned MAC's last-seen time is rewritten at most this often */
#endif

/*
 * MAC ageing, as a Linux bridge does it: a learned entry's updated_ns is the last
 * time a frame from that MAC arrived (refreshed in the kernel at most once per
 * FDP_MAC_REFRESH_NS, so a busy flow does not write the entry's cache line per
 * packet); the router's sweep (HostDatapath.age_macs) deletes learned entries not
 * seen for the ageing time. Local entries (attach) never age.
 */
#define FDP_MAC_AGEING_S 300              /* seconds: default ageing time of learned MACs (the sweep's) */

#define FDP_VXLAN_PORT 6784               /* UDP port of the fastdp VXLAN */
#define FDP_SHORT_ID_BITS 12              /* bits of a short peer ID */
#define FDP_SHORT_ID_MASK 0xfff
#define FDP_VNI_MAX 0xffffff              /* VNI is 24 bits on the wire */
#define FDP_TUNNEL_TTL 64                 /* outer IPv4 TTL, hops */
#define FDP_HEARTBEAT_ETHERTYPE 0x88b5    /* IEEE local experimental: fastdp heartbeats */
/* Heartbeat payload after the inner Ethernet header (heartbeat.py has the rest):
 * "FDPH" magic, version u8, kind u8, src short ID be16, seq be32, echo time be64. */
#define FDP_HB_MAGIC 0x46445048           /* "FDPH" read as a big-endian u32 */
#define FDP_HB_KIND_OFF 5                 /* bytes after the Ethernet header */
#define FDP_HB_SRC_OFF 6
#define FDP_HB_PING 1
#define FDP_HB_PONG 2

/* Direct path (FDP_CONFIG_DIRECT): the programs write the outer headers themselves. */
#define FDP_VXLAN_HLEN 8                  /* VXLAN header, bytes */
#define FDP_ENCAP_LEN 50                  /* outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 */
#define FDP_VXLAN_FLAG_I 0x08             /* first byte of a VXLAN header: "VNI valid" */
#define FDP_SPORT_MIN 49152               /* outer UDP source port: 49152 + (flow hash & mask), RFC 7348 */
#define FDP_SPORT_MASK 0x3fff

/*
 * weaveDNS fast path (lib/dns.h, docs/DNS.md "Answers in the kernel"): a standard
 * query (one question, A, IN) from a local container to the DNS listen address, for
 * a name of fdp_dns_names, is answered at the container's veth; anything else goes on
 * to the userspace server unchanged. The answer is the one that server gives.
 */
#define FDP_DNS_CONFIG_ENABLED 1          /* fdp_dns_config.flags: answer from fdp_dns_names */
#define FDP_DNS_UDP_MIN 512               /* bytes a UDP reply may always use (RFC 1035) */
#define FDP_DNS_EDNS_SIZE 4096            /* the UDP buffer size our OPT record announces */
#define FDP_DNS_REPLY_TTL 64              /* IPv4 TTL of an answer, hops (the host stack's default) */

/* Mode of the connection to a next-hop peer, set by the overlay switch. */
enum fdp_mode {
	FDP_MODE_NONE = 0,    /* no usable connection: frames to it are dropped (no route) */
	FDP_MODE_FASTDP = 1,  /* encapsulate in the kernel */
	FDP_MODE_SLEEVE = 2,  /* hand the frame to the bridge; the sleeve carries it */
};

/*
 * fdp_mac_entry.flags. Local entries (attach) live in fdp_macs, learned ones in
 * fdp_learned (an LRU hash): however many MACs peers announce, they can never
 * crowd out a local container. A peer holds at most FDP_MAX_MACS_PER_PEER learned
 * entries (fdp_learn_count, recounted exactly by the router's ageing sweep);
 * a MAC beyond that is not learned (counted as learn-limit; its frames still
 * arrive, and frames toward it are flooded as unknown unicast).
 */
enum fdp_mac_flags {
	FDP_MAC_LOCAL = 1,    /* a container on this host (from attach); never overwritten by learning */
	FDP_MAC_LEARNED = 2,  /* learned from a received frame's source MAC */
};

/* fdp_peer.flags */
enum fdp_peer_flags {
	FDP_PEER_KNOWN = 1,   /* the slot holds a peer of the mesh */
};

/*
 * fdp_neigh.flags. Who may send what over UDP 6784 (docs/SECURITY.md): a frame
 * is taken only when the outer source address is a direct neighbour's
 * (fdp_neigh), the VNI's source peer is that neighbour (or, for a relayed or
 * flooded frame, a peer behind it), and that neighbour's connection is in
 * fastdp mode and may carry plain VXLAN.
 */
enum fdp_neigh_flags {
	FDP_NEIGH_KNOWN = 1,  /* a direct neighbour with an established connection: heartbeats accepted */
	FDP_NEIGH_SEALED = 2, /* its connection must be encrypted: plain VXLAN data is never accepted */
	FDP_NEIGH_XFRM = 4,   /* encrypted fastdp (IPsec ESP transport on UDP 6784): the kernel's inbound
	                       * xfrm policy (level required) refused anything that did not come in ESP
	                       * before the VXLAN device, so fdp_from_tunnel accepts its frames even when
	                       * SEALED; fdp_from_underlay never takes them (it runs before xfrm) */
};

/* fdp_flow_stats.path: where the last frame of the flow went */
enum fdp_path {
	FDP_PATH_LOCAL = 0,   /* stayed on this host (bridge) */
	FDP_PATH_TX = 1,      /* encapsulated toward a peer */
	FDP_PATH_RX = 2,      /* received from a peer, delivered here */
	FDP_PATH_RELAY = 3,   /* received from a peer, sent on toward another */
	FDP_PATH_SLEEVE = 4,  /* handed to the bridge for the sleeve */
	FDP_PATH_FLOOD = 5,   /* broadcast / multicast / unknown unicast */
};

/* Named drop reasons: index of fdp_drops. Keep abi.DROP_REASONS in step. */
enum fdp_drop_reason {
	FDP_DROP_NONE = 0,           /* unused: index 0 stays zero */
	FDP_DROP_TRUNCATED = 1,      /* frame shorter than the headers it announces */
	FDP_DROP_NOT_ETHERNET_II = 2,/* 802.3 length-field frame (STP, LLC): not carried */
	FDP_DROP_BAD_SRC_MAC = 3,    /* source MAC is multicast/broadcast */
	FDP_DROP_NO_CONFIG = 4,      /* datapath not configured yet (no local short ID) */
	FDP_DROP_NO_TUNNEL_KEY = 5,  /* received without tunnel metadata */
	FDP_DROP_BAD_VNI = 6,        /* VNI wider than 24 bits */
	FDP_DROP_UNKNOWN_PEER = 7,   /* VNI names a short ID that is not in the mesh */
	FDP_DROP_LOOP = 8,           /* frame claims to come from this very peer */
	FDP_DROP_NO_ROUTE = 9,       /* no next hop toward the destination peer */
	FDP_DROP_NOT_FASTDP = 10,    /* relay needed but the next hop is not in fastdp mode */
	FDP_DROP_TUNNEL_KEY = 11,    /* bpf_skb_set_tunnel_key failed */
	FDP_DROP_CLONE = 12,         /* bpf_clone_redirect failed: one copy of a flood lost */
	FDP_DROP_ENCAP = 13,         /* direct path: headers pushed but not written (frame half-built) */
	FDP_DROP_DECAP = 14,         /* direct path: headers stripped but the frame not rebuilt */
	FDP_DROP_UNKNOWN_SOURCE = 15,/* UDP 6784 from an address that is no neighbour's (a stranger) */
	FDP_DROP_WRONG_SOURCE = 16,  /* VNI names a direct neighbour, but it came from another one's address */
	FDP_DROP_SOURCE_NOT_FASTDP = 17, /* the sending neighbour's connection is not in fastdp mode */
	FDP_DROP_SEALED_PEER = 18,   /* plain VXLAN data from a neighbour whose connection must be encrypted */
	FDP_DROP_BAD_VXLAN = 19,     /* UDP 6784 that is no RFC 7348 VXLAN (short, flags, reserved bits) */
	FDP_DROP_UNKNOWN_PORT = 20,  /* frame from a container veth with no fdp_port_addrs entry */
	FDP_DROP_SPOOFED_MAC = 21,   /* a container sent from a source MAC not its own */
	FDP_DROP_SPOOFED_IP = 22,    /* a container sent IPv4 from a source address not its own */
	FDP_DROP_SPOOFED_ARP = 23,   /* a container's ARP names a sender MAC or IPv4 not its own */
	FDP_DROP_LEARN_LIMIT = 24,   /* event, not a drop: a MAC not learned, its peer holds FDP_MAX_MACS_PER_PEER */
	FDP_DROP_MAX = 25,
};

/* fdp_dns_stats[what]: queries to the DNS listen address seen by the fast path (per CPU). */
enum fdp_dns_stat {
	FDP_DNS_ANSWERED = 0,        /* answered in the kernel */
	FDP_DNS_RATE_LIMITED = 1,    /* dropped: the source is over its --dns-rate-limit */
	FDP_DNS_PASS_MISS = 2,       /* passed on: name not in fdp_dns_names */
	FDP_DNS_PASS_HEADER = 3,     /* passed on: not a standard query (QR, opcode, TC, section counts) */
	FDP_DNS_PASS_QUESTION = 4,   /* passed on: type other than A or class other than IN */
	FDP_DNS_PASS_NAME = 5,       /* passed on: name longer than FDP_DNS_NAME_MAX, compressed or malformed */
	FDP_DNS_PASS_EDNS = 6,       /* passed on: additional record that is not one OPT record */
	FDP_DNS_PASS_SIZE = 7,       /* passed on: the answer does not fit the client's UDP buffer */
	FDP_DNS_PASS_PACKET = 8,     /* passed on: IPv4 options, fragment, lengths that disagree, trailing bytes */
	FDP_DNS_ERROR = 9,           /* a helper failed: passed on before the rewrite, dropped after it */
	FDP_DNS_STAT_MAX = 10,
};

/* fdp_dns_config[0]: written by the router's DNS service; flags 0 (the default) = off. */
struct fdp_dns_config {
	__u32 flags;          /* FDP_DNS_CONFIG_ENABLED */
	__u32 listen_ip;      /* --dns-listen-address (network order) */
	__u16 listen_port;    /* its port (network order) */
	__u16 pad;
	__u32 pad2;
	__u64 rate_interval_ns;  /* --dns-rate-limit as ns between queries of one source (0: no limit) */
	__u64 rate_burst_ns;     /* how far a source's schedule may run ahead of now: (burst - 1) * interval */
};

/* fdp_dns_names key: the name as asked, lower-cased, in wire format (length-prefixed
 * labels, then the root's 0), zero-filled to the end. */
struct fdp_dns_key {
	__u8 name[FDP_DNS_NAME_MAX];
};

/* fdp_dns_names value: the live addresses of the name (answered in a random order). */
struct fdp_dns_entry {
	__u32 count;          /* valid entries of addrs[], 1..FDP_DNS_MAX_ADDRS */
	__u32 ttl;            /* seconds (--dns-ttl) */
	__u32 addrs[FDP_DNS_MAX_ADDRS];  /* network order */
};

/* fdp_config[0]: written by the loader. */
struct fdp_config {
	__u32 abi_version;    /* FDP_ABI_VERSION of the loader that wrote it */
	__u16 local_peer;     /* this peer's short ID */
	__u16 flags;          /* FDP_CONFIG_READY once everything below is valid */
	__u32 vxlan_ifindex;  /* the collect_md VXLAN device */
	__u32 mtu;            /* overlay MTU, bytes (informational) */
	__u32 host_ifindex;   /* the weave bridge: the host's own port (0: none). fdp_from_container
	                       * runs at its tc egress (frames the host sends); frames for it are
	                       * delivered with bpf_redirect(BPF_F_INGRESS), never redirect_peer */
};
#define FDP_CONFIG_READY 1
#define FDP_CONFIG_DIRECT 2   /* direct path on: encapsulate/strip in tc, bypass the VXLAN device */

struct fdp_mac_key {
	__u8 mac[6];
	__u16 pad;            /* must be zero */
};

struct fdp_mac_entry {
	__u16 peer;           /* short ID of the peer that has the MAC */
	__u8 flags;           /* enum fdp_mac_flags */
	__u8 pad;
	__u32 ifindex;        /* host-side veth when FDP_MAC_LOCAL (the bridge: the host's own port) */
	__u64 updated_ns;     /* last seen as a source (learned entries): CLOCK_MONOTONIC ns, tick
	                       * resolution (bpf_ktime_get_coarse_ns), refreshed every FDP_MAC_REFRESH_NS */
};

/* fdp_peers[short ID]: how to reach that destination peer. */
struct fdp_peer {
	__u32 nexthop_ip;     /* underlay IPv4 of the next hop (network order) */
	__u16 nexthop_peer;   /* short ID of the next hop (== index when direct) */
	__u8 mode;            /* enum fdp_mode of the connection to the next hop */
	__u8 flags;           /* enum fdp_peer_flags */
};

struct fdp_hop {
	__u32 ip;             /* underlay IPv4 (network order) */
	__u16 peer;           /* short ID */
	__u8 mode;            /* enum fdp_mode */
	__u8 pad;
};

/* fdp_bcast[source short ID]: this peer's next hops on that source's tree. */
struct fdp_bcast {
	__u32 count;          /* valid entries in hops[] */
	__u32 pad;
	struct fdp_hop hops[FDP_MAX_BCAST_HOPS];
};

/* fdp_ports[0]: host-side veths of local containers (flood targets; the host's own
 * port, fdp_config.host_ifindex, gets its copy apart). */
struct fdp_ports {
	__u32 count;
	__u32 ifindex[FDP_MAX_LOCAL_PORTS];
};

/*
 * fdp_underlay[next-hop short ID]: how the direct path reaches that next hop,
 * written by the loader from the host's routes (ifindex 0: no entry, the frame
 * goes through the VXLAN device). The outer MACs come from the kernel's
 * neighbour table at transmit (bpf_redirect_neigh), so they are never stale.
 */
struct fdp_underlay {
	__u32 ifindex;        /* underlay device the route to the next hop leaves by */
	__u32 src_ip;         /* outer source IPv4 (the route's preferred source, network order) */
	__u32 gw_ip;          /* neighbour to send to: the route's gateway, else the next hop (network order) */
	__u32 pad;
};

/*
 * fdp_port_addrs[host-side veth ifindex]: what the container behind it may send
 * from (Cilium's lxc source checks): its ethwe MAC as the Ethernet source of
 * every frame and the ARP sender MAC; for IPv4 one of ips[] as the source, and
 * for ARP one of them (or 0.0.0.0: RFC 5227 probes) as the sender address.
 * The host's own port (the weave bridge) has an entry too: the bridge's MAC and
 * IPv4 addresses (those of expose, weaveDNS's).
 */
struct fdp_port_addrs {
	__u8 mac[6];
	__u16 count;          /* valid entries of ips[] */
	__u32 ips[FDP_MAX_PORT_IPS];  /* network order */
};

/* fdp_neigh[outer IPv4 of a direct neighbour, network order]: who may send from there. */
struct fdp_neigh {
	__u16 peer;           /* short ID of the neighbour at that address */
	__u8 mode;            /* enum fdp_mode of the connection to it */
	__u8 flags;           /* enum fdp_neigh_flags */
};

/* Flow = MACs plus the IPv4 5-tuple where present (zeros otherwise). */
struct fdp_flow_key {
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__u16 ethertype;      /* network order */
	__u8 proto;           /* IP protocol, 0 when not IPv4 */
	__u8 pad;
	__u32 src_ip;         /* network order */
	__u32 dst_ip;         /* network order */
	__u16 sport;          /* network order */
	__u16 dport;          /* network order */
};

struct fdp_flow_stats {
	__u64 packets;
	__u64 bytes;
	__u64 last_seen_ns;   /* CLOCK_MONOTONIC ns, tick resolution (bpf_ktime_get_coarse_ns) */
	__u16 via_peer;       /* next hop (tx/relay) or source peer (rx) */
	__u8 path;            /* enum fdp_path */
	__u8 pad[5];
};

/*
 * fdp_flow_slots[fdp_flow_slot_of(key)], per CPU: one flow's counters (packets 0: an
 * empty slot), one cache line. The programs count a flow in its slot while it owns
 * it, else in fdp_flows; a flow that finds its slot held by one idle for
 * FDP_FLOW_SLOT_IDLE_NS moves that one's counts to fdp_flows and takes the slot.
 * A flow's figures are the sum of both maps over the CPUs (loader.flows): exact,
 * as fdp_flows alone was, for a fraction of the cost (an array slot in place of a
 * hash walk, measured in docs/PERFORMANCE.md).
 */
struct fdp_flow_slot {
	struct fdp_flow_key key;
	__u32 pad;
	struct fdp_flow_stats st;
};

/* fdp_peer_stats[short ID]: tx toward / rx from that peer (per CPU). */
struct fdp_peer_stats {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
};

/*
 * Test builds only (FDP_TEST_MODE): BPF_PROG_TEST_RUN cannot attach tunnel
 * metadata nor perform redirects, so test builds read the received tunnel key
 * from skb->cb[] and record every tunnel key set and every redirect/clone in
 * fdp_test_events (slot 0 .count = number of events recorded after it).
 * cb[0] = VNI, cb[1] = remote underlay IPv4 (host order), cb[2] = 1 if present.
 */
#define FDP_TEST_MAX_EVENTS 32
enum fdp_test_kind {
	FDP_EV_TUNNEL_KEY = 1,    /* bpf_skb_set_tunnel_key(vni, ip) */
	FDP_EV_REDIRECT = 2,      /* bpf_redirect(ifindex, 0) */
	FDP_EV_REDIRECT_PEER = 3, /* bpf_redirect_peer(ifindex, 0) */
	FDP_EV_CLONE = 4,         /* bpf_clone_redirect(ifindex, 0) */
	FDP_EV_REDIRECT_NEIGH = 5,/* bpf_redirect_neigh(ifindex, {AF_INET, ip}) */
	FDP_EV_REDIRECT_INGRESS = 6, /* bpf_redirect(ifindex, BPF_F_INGRESS): up the host's stack */
	FDP_EV_CLONE_INGRESS = 7, /* bpf_clone_redirect(ifindex, BPF_F_INGRESS) */
};
struct fdp_test_event {
	__u32 kind;           /* enum fdp_test_kind; in slot 0: the event count */
	__u32 vni;
	__u32 ip;             /* network order */
	__u32 ifindex;
};

#endif /* FDP_ABI_H */
