/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * parse.h - cursor parsing of an Ethernet frame into a flow key.
 *
 * As in xdp-tools' parsing_helpers.h: bounds-check before every access,
 * advance the cursor, never dereference past data_end.
 */
#ifndef FDP_LIB_PARSE_H
#define FDP_LIB_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include "../fdp_abi.h"

#define FDP_IP_MF 0x2000
#define FDP_IP_OFFSET 0x1fff

static __always_inline int fdp_mac_is_group(const __u8 *mac)
{
	return mac[0] & 1;
}

#ifndef FDP_PULL_LEN
#define FDP_PULL_LEN 128          /* bytes: outer + inner headers the programs read */
#endif

/*
 * Make the first FDP_PULL_LEN bytes (or the whole packet) linear. A NIC such as
 * virtio-net hands tc skbs whose linear part ends before the headers (seen in
 * the VM lab: MTU-sized heartbeats dropped as truncated); veths never do.
 * Call before taking skb->data: the pull moves it.
 */
static __always_inline void fdp_pull_headers(struct __sk_buff *skb)
{
	__u32 want = skb->len < FDP_PULL_LEN ? skb->len : FDP_PULL_LEN;

	if ((long)skb->data_end - (long)skb->data < (long)want)
		bpf_skb_pull_data(skb, want);
}

/*
 * Fill @key from the Ethernet frame @off bytes into skb->data. Returns 0 or an FDP_DROP_* reason.
 * Non-IPv4 frames (ARP, IPv6, ...) keep zero L3/L4 fields and are carried.
 */
static __always_inline int fdp_parse_frame_at(struct __sk_buff *skb, __u32 off, struct fdp_flow_key *key)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data + off;  /* verifier: off is a constant at every call site */
	struct iphdr *ip;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return FDP_DROP_TRUNCATED;
	__builtin_memcpy(key->src_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(key->dst_mac, eth->h_dest, ETH_ALEN);
	key->ethertype = eth->h_proto;
	proto = bpf_ntohs(eth->h_proto);
	if (proto < ETH_P_802_3_MIN)
		return FDP_DROP_NOT_ETHERNET_II;
	if (fdp_mac_is_group(eth->h_source))
		return FDP_DROP_BAD_SRC_MAC;
	if (proto != ETH_P_IP)
		return 0;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return FDP_DROP_TRUNCATED;
	if (ip->ihl < 5)
		return FDP_DROP_TRUNCATED;
	key->src_ip = ip->saddr;
	key->dst_ip = ip->daddr;
	key->proto = ip->protocol;
	/* Only the first fragment carries ports; later ones count under port 0. */
	if (ip->frag_off & bpf_htons(FDP_IP_OFFSET))
		return 0;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		/* verifier: ihl is variable, so compute the L4 pointer and check it. */
		__u16 *ports = (void *)ip + ip->ihl * 4;
		if ((void *)(ports + 2) > data_end)
			return FDP_DROP_TRUNCATED;
		key->sport = ports[0];
		key->dport = ports[1];
	}
	return 0;
}

/* The frame at skb->data (see fdp_parse_frame_at). */
static __always_inline int fdp_parse_frame(struct __sk_buff *skb, struct fdp_flow_key *key)
{
	return fdp_parse_frame_at(skb, 0, key);
}

#endif
