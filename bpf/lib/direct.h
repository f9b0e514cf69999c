/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * direct.h - the direct path: RFC 7348 VXLAN headers pushed and stripped in tc,
 * bypassing the VXLAN device (FDP_CONFIG_DIRECT).
 *
 * Transmit (container veth ingress): bpf_skb_adjust_room(+50, MAC, ENCAP_L3_IPV4 |
 * ENCAP_L4_UDP | ENCAP_L2_ETH | ENCAP_L2(14) | FIXED_GSO) opens room between the
 * frame's Ethernet header and its IPv4 header and marks the skb as a UDP tunnel
 * with an Ethernet (ETH_P_TEB) inner protocol, exactly what the kernel's VXLAN
 * device produces, so TSO/GSO super-packets stay whole and are segmented (or
 * offloaded) like the device's. FIXED_GSO: the overlay MTU already leaves room
 * for the 50 bytes, so gso_size must not shrink. Outer UDP checksum 0 (as Linux
 * VXLAN devices send by default); outer IPv4 checksum computed here (GSO
 * recomputes it per segment). The outer Ethernet header is written by the
 * neighbour table (bpf_redirect_neigh).
 *
 * Receive (underlay device ingress): only the common case is taken: unicast
 * IPv4 inside VXLAN on UDP 6784, for this peer, from a known peer, to a local
 * container. GSO aggregates too: on kernels whose adjust_room cannot clear the
 * tunnel GSO state (no BPF_F_ADJ_ROOM_DECAP_L4_UDP, before 7.x) only those the
 * container itself terminates (inner destination one of its own addresses, see
 * fdp_strip). Anything else goes on to the kernel and the VXLAN device
 * unchanged, where fdp_from_tunnel handles (and counts) it as before.
 */
#ifndef FDP_LIB_DIRECT_H
#define FDP_LIB_DIRECT_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
#include "maps.h"
#include "counters.h"
#include "tunnel.h"
#include "csum.h"

/* adjust_room flags by value: bcc's bpf.h may predate them (values are uapi). */
#define FDP_ADJ_FIXED_GSO     (1ULL << 0)
#define FDP_ADJ_ENCAP_L3_IPV4 (1ULL << 1)
#define FDP_ADJ_ENCAP_L4_UDP  (1ULL << 4)
#define FDP_ADJ_ENCAP_L2_ETH  (1ULL << 6)
#define FDP_ADJ_DECAP_L3_IPV4 (1ULL << 7)    /* 6.3+: also drops a stale dst (6.16+) */
#define FDP_ADJ_DECAP_L4_UDP  (1ULL << 10)   /* clears skb->encapsulation and the tunnel GSO type */
#define FDP_ADJ_ENCAP_L2(len) (((__u64)(len) & 0xff) << 56)
#define FDP_ADJ_ROOM_MAC 1                   /* BPF_ADJ_ROOM_MAC */
#define FDP_CSUM_LEVEL_DEC 2                 /* BPF_CSUM_LEVEL_DEC */
#define FDP_PACKET_HOST 0
#define FDP_IP_DF 0x4000
#define FDP_IP_MF_OFFSET 0x3fff

#define FDP_ENCAP_FLAGS (FDP_ADJ_FIXED_GSO | FDP_ADJ_ENCAP_L3_IPV4 | FDP_ADJ_ENCAP_L4_UDP | \
			 FDP_ADJ_ENCAP_L2_ETH | FDP_ADJ_ENCAP_L2(ETH_HLEN))

struct fdp_vxlanhdr {
	__be32 flags;         /* FDP_VXLAN_FLAG_I in the first byte */
	__be32 vni;           /* VNI << 8 */
};

/* What the transmit side writes after the frame's own Ethernet header. */
struct fdp_encap_hdr {
	struct iphdr ip;
	struct udphdr udp;
	struct fdp_vxlanhdr vx;
	struct ethhdr inner;
} __attribute__((packed));

/* The received packet's outer headers, up to the inner Ethernet header. */
struct fdp_outer_hdr {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	struct fdp_vxlanhdr vx;
} __attribute__((packed));

/*
 * Outer UDP source port from the flow (RFC 7348: a hash of the inner headers,
 * in the dynamic range), so one flow keeps one underlay path and flows spread
 * over ECMP/RSS. abi.vxlan_src_port() mirrors it for the tests.
 */
static __always_inline __u16 fdp_flow_port(const struct fdp_flow_key *k)
{
	__u32 h = k->src_ip ^ k->dst_ip ^ (((__u32)k->sport << 16) | k->dport) ^ k->proto;

	/* lowbias32 finaliser: every input bit reaches the low bits we keep */
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	h ^= h >> 16;
	return FDP_SPORT_MIN + (h & FDP_SPORT_MASK);
}

/*
 * Encapsulate toward @peer's next hop and send it straight out of the underlay.
 * Returns the tc verdict, or -1 when the frame must take the VXLAN device
 * instead (nothing changed then): direct path off, not IPv4, no underlay entry
 * for the next hop, larger than the overlay MTU (the device path reports it),
 * or the kernel refused the room.
 */
static __always_inline int fdp_encap_direct(struct __sk_buff *skb, const struct fdp_config *cfg,
					    const struct fdp_flow_key *key, const struct fdp_peer *peer,
					    __u32 vni)
{
	struct fdp_encap_hdr h = {};
	struct fdp_underlay *ul;
	__u32 hop = peer->nexthop_peer & FDP_SHORT_ID_MASK;
	__u32 len = skb->len;

	if (!(cfg->flags & FDP_CONFIG_DIRECT))
		return -1;
	/* adjust_room's encap wants an IP skb; ARP and the like take the device */
	if (skb->protocol != bpf_htons(ETH_P_IP) || key->ethertype != bpf_htons(ETH_P_IP))
		return -1;
	ul = fdp_underlay.lookup(&hop);
	if (!ul || ul->ifindex == 0 || ul->src_ip == 0)
		return -1;
	if (skb->gso_size == 0 && cfg->mtu && len > cfg->mtu + ETH_HLEN)
		return -1;

	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tot_len = bpf_htons(len + sizeof(struct iphdr) + sizeof(struct udphdr) + FDP_VXLAN_HLEN);
	/* DF: the overlay MTU is sized so frames never need fragmenting */
	h.ip.frag_off = bpf_htons(FDP_IP_DF);
	h.ip.ttl = FDP_TUNNEL_TTL;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = ul->src_ip;
	h.ip.daddr = peer->nexthop_ip;
	h.ip.check = fdp_ip_csum(&h.ip);
	h.udp.source = bpf_htons(fdp_flow_port(key));
	h.udp.dest = bpf_htons(FDP_VXLAN_PORT);
	h.udp.len = bpf_htons(len + sizeof(struct udphdr) + FDP_VXLAN_HLEN);
	h.vx.flags = bpf_htonl((__u32)FDP_VXLAN_FLAG_I << 24);
	h.vx.vni = bpf_htonl(vni << 8);
	__builtin_memcpy(h.inner.h_dest, key->dst_mac, ETH_ALEN);
	__builtin_memcpy(h.inner.h_source, key->src_mac, ETH_ALEN);
	h.inner.h_proto = key->ethertype;

	if (bpf_skb_adjust_room(skb, FDP_ENCAP_LEN, FDP_ADJ_ROOM_MAC, FDP_ENCAP_FLAGS) < 0)
		return -1;  /* refused before touching the skb: the device path still works */
	/* From here on the frame is half-built: failing means dropping it. */
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0) < 0)
		return fdp_drop(FDP_DROP_ENCAP);
	return fdp_redirect_neigh(ul->ifindex, ul->gw_ip);
}

/*
 * Strip the outer headers (@inner: the inner Ethernet header to put back in
 * front). @terminates: the inner IPv4 destination is an address of the
 * receiving container itself (fdp_port_addrs), so the container's own stack
 * consumes the packet rather than forwarding it (read only for GSO aggregates:
 * callers may pass 0 for a single frame). Returns 0, or -1 when the
 * kernel refused or the aggregate must keep the device path (skb unchanged:
 * pass it on), or a drop verdict once the skb is half-rebuilt.
 */
static __always_inline int fdp_strip(struct __sk_buff *skb, const struct ethhdr *inner, int terminates)
{
	const __u64 base = FDP_ADJ_FIXED_GSO | FDP_ADJ_DECAP_L3_IPV4;
	long err;

	/* Newest kernels clear the tunnel GSO state themselves. */
	err = bpf_skb_adjust_room(skb, -FDP_ENCAP_LEN, FDP_ADJ_ROOM_MAC, base | FDP_ADJ_DECAP_L4_UDP);
	if (err < 0) {
		/* Without DECAP_L4_UDP a GSO aggregate keeps skb->encapsulation and
		 * SKB_GSO_UDP_TUNNEL (its inner header offsets then equal the outer
		 * ones). Harmless where it ends: local delivery never segments, and TCP
		 * reads only gso_size (tcp_measure_rcv_mss); its checksum state
		 * (CHECKSUM_PARTIAL from a veth, or the levels a NIC verified) does not
		 * depend on the flag. Fatal if forwarded on (a TSO/GSO of the stale
		 * tunnel type would cut wrong segments): an aggregate for any other
		 * address, which the container would route, is left to the VXLAN
		 * device, which resets them. */
		if (skb->gso_size && !terminates)
			return -1;
		err = bpf_skb_adjust_room(skb, -FDP_ENCAP_LEN, FDP_ADJ_ROOM_MAC, base);
		if (err < 0)  /* kernels before 6.3 know no DECAP flags */
			err = bpf_skb_adjust_room(skb, -FDP_ENCAP_LEN, FDP_ADJ_ROOM_MAC, FDP_ADJ_FIXED_GSO);
		if (err < 0)
			return -1;
	}
	if (bpf_skb_store_bytes(skb, 0, (void *)inner, sizeof(*inner), 0) < 0)
		return fdp_drop(FDP_DROP_DECAP);
	/* The outer UDP checksum (zero or not) was the outermost one a NIC may
	 * have verified: consume that level as udp_rcv() would, so the inner TCP
	 * checksum is not taken as verified when it was not (no-op unless
	 * CHECKSUM_UNNECESSARY). */
	bpf_csum_level(skb, FDP_CSUM_LEVEL_DEC);
	return 0;
}

#endif
