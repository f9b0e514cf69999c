/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * guard.h - a container sends only from its own addresses (Cilium's lxc source
 * checks): the Ethernet source MAC of every frame, the IPv4 source address and
 * the ARP sender addresses must be those of fdp_port_addrs[the veth it came in
 * by]. Anything else could impersonate another container, here or on a peer
 * (whose MAC table would then send that container's traffic to the wrong host).
 */
#ifndef FDP_LIB_GUARD_H
#define FDP_LIB_GUARD_H

#include <uapi/linux/if_ether.h>
#include "maps.h"
#include "forward.h"

/* The ARP payload after struct arphdr (IPv4 over Ethernet). */
struct fdp_arp_eth {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

static __always_inline int fdp_mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

static __always_inline int fdp_port_has_ip(const struct fdp_port_addrs *p, __u32 ip)
{
	__u32 i, n = p->count;

	/* verifier: a constant bound, count only ends it early; an opaque index (see
	 * fdp_opaque_index) for the 6.1 verifier */
	for (i = 0; i < FDP_MAX_PORT_IPS; i++) {
		__u32 j = fdp_opaque_index(i);

		if (j >= n || j >= FDP_MAX_PORT_IPS)
			break;
		if (p->ips[j] == ip)
			return 1;
	}
	return 0;
}

/* 0 when the frame (@key, parsed) from the container behind skb->ifindex carries only
 * that container's addresses, else the drop reason. */
static __always_inline int fdp_port_guard(struct __sk_buff *skb, const struct fdp_flow_key *key)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct fdp_arp_eth *arp = data + ETH_HLEN;
	struct fdp_port_addrs *p;
	__u32 ifindex = skb->ifindex;

	p = fdp_port_addrs.lookup(&ifindex);
	if (!p)
		return FDP_DROP_UNKNOWN_PORT;
	if (!fdp_mac_eq(key->src_mac, p->mac))
		return FDP_DROP_SPOOFED_MAC;
	if (key->ethertype == bpf_htons(ETH_P_IP))
		return fdp_port_has_ip(p, key->src_ip) ? 0 : FDP_DROP_SPOOFED_IP;
	if (key->ethertype != bpf_htons(ETH_P_ARP))
		return 0;  /* IPv6 and the rest: the MAC is what the overlay learns from */
	if ((void *)(arp + 1) > data_end)
		return FDP_DROP_TRUNCATED;
	if (!fdp_mac_eq(arp->sha, p->mac))
		return FDP_DROP_SPOOFED_ARP;
	if (arp->spa != 0 && !fdp_port_has_ip(p, arp->spa))
		return FDP_DROP_SPOOFED_ARP;
	return 0;
}

#endif
