/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * tunnel.h - tunnel metadata and redirects, the only place that calls the
 * helpers BPF_PROG_TEST_RUN cannot exercise. Test builds (FDP_TEST_MODE)
 * substitute recorders (see fdp_abi.h), everything else is the same code.
 */
#ifndef FDP_LIB_TUNNEL_H
#define FDP_LIB_TUNNEL_H

#include "maps.h"

static __always_inline __u32 fdp_vni(__u32 src_peer, __u32 dst_peer)
{
	return (src_peer & FDP_SHORT_ID_MASK) | ((dst_peer & FDP_SHORT_ID_MASK) << FDP_SHORT_ID_BITS);
}

/* The two halves of a VNI (fdp_abi.h): where the frame entered the overlay, and where it goes. */
static __always_inline __u32 fdp_vni_src(__u32 vni)
{
	return vni & FDP_SHORT_ID_MASK;
}

static __always_inline __u32 fdp_vni_dst(__u32 vni)
{
	return (vni >> FDP_SHORT_ID_BITS) & FDP_SHORT_ID_MASK;
}

#ifdef FDP_TEST_MODE
BPF_TABLE("array", u32, struct fdp_test_event, fdp_test_events, FDP_TEST_MAX_EVENTS);

static __always_inline void fdp_test_record(__u32 kind, __u32 vni, __u32 ip, __u32 ifindex)
{
	u32 zero = 0, slot;
	struct fdp_test_event *head, *ev;

	head = fdp_test_events.lookup(&zero);
	if (!head)
		return;
	slot = head->kind + 1;
	if (slot >= FDP_TEST_MAX_EVENTS)
		return;
	ev = fdp_test_events.lookup(&slot);
	if (!ev)
		return;
	ev->kind = kind;
	ev->vni = vni;
	ev->ip = ip;
	ev->ifindex = ifindex;
	head->kind = slot;
}

static __always_inline int fdp_get_tunnel(struct __sk_buff *skb, __u32 *vni, __u32 *remote_be)
{
	if (skb->cb[2] != 1)
		return -1;
	*vni = skb->cb[0];
	*remote_be = bpf_htonl(skb->cb[1]);
	return 0;
}

static __always_inline int fdp_set_tunnel(struct __sk_buff *skb, __u32 vni, __u32 remote_be)
{
	fdp_test_record(FDP_EV_TUNNEL_KEY, vni, remote_be, 0);
	return 0;
}

static __always_inline int fdp_redirect(__u32 ifindex)
{
	fdp_test_record(FDP_EV_REDIRECT, 0, 0, ifindex);
	return TC_ACT_REDIRECT;
}

static __always_inline int fdp_redirect_peer(__u32 ifindex)
{
	fdp_test_record(FDP_EV_REDIRECT_PEER, 0, 0, ifindex);
	return TC_ACT_REDIRECT;
}

static __always_inline int fdp_clone(struct __sk_buff *skb, __u32 ifindex)
{
	fdp_test_record(FDP_EV_CLONE, 0, 0, ifindex);
	return 0;
}

static __always_inline int fdp_redirect_neigh(__u32 ifindex, __u32 gw_be)
{
	fdp_test_record(FDP_EV_REDIRECT_NEIGH, 0, gw_be, ifindex);
	return TC_ACT_REDIRECT;
}

static __always_inline int fdp_redirect_ingress(__u32 ifindex)
{
	fdp_test_record(FDP_EV_REDIRECT_INGRESS, 0, 0, ifindex);
	return TC_ACT_REDIRECT;
}

static __always_inline int fdp_clone_ingress(struct __sk_buff *skb, __u32 ifindex)
{
	fdp_test_record(FDP_EV_CLONE_INGRESS, 0, 0, ifindex);
	return 0;
}

#else /* production */

static __always_inline int fdp_get_tunnel(struct __sk_buff *skb, __u32 *vni, __u32 *remote_be)
{
	struct bpf_tunnel_key key = {};

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return -1;
	*vni = key.tunnel_id;
	*remote_be = bpf_htonl(key.remote_ipv4);
	return 0;
}

static __always_inline int fdp_set_tunnel(struct __sk_buff *skb, __u32 vni, __u32 remote_be)
{
	struct bpf_tunnel_key key = {};

	key.tunnel_id = vni;
	key.remote_ipv4 = bpf_ntohl(remote_be);  /* the helper wants host order */
	key.tunnel_ttl = FDP_TUNNEL_TTL;
	/* DF on the outer header: the overlay MTU is sized so frames never need
	 * fragmenting; an oversize frame must fail loudly, not crawl. */
	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_DONT_FRAGMENT);
}

static __always_inline int fdp_redirect(__u32 ifindex)
{
	return bpf_redirect(ifindex, 0);
}

static __always_inline int fdp_redirect_peer(__u32 ifindex)
{
	/* Straight into the container's ethwe ingress: skips the backlog queue
	 * and the bridge (only valid from tc ingress, which is where we run). */
	return bpf_redirect_peer(ifindex, 0);
}

static __always_inline int fdp_clone(struct __sk_buff *skb, __u32 ifindex)
{
	return bpf_clone_redirect(skb, ifindex, 0);
}

/*
 * Up the host's stack as if received on @ifindex (the weave bridge, the host's
 * own port): a bridge has no peer to redirect into, and a plain redirect would
 * transmit on it, i.e. flood the frame to every port of the bridge.
 */
static __always_inline int fdp_redirect_ingress(__u32 ifindex)
{
	return bpf_redirect(ifindex, BPF_F_INGRESS);
}

static __always_inline int fdp_clone_ingress(struct __sk_buff *skb, __u32 ifindex)
{
	return bpf_clone_redirect(skb, ifindex, BPF_F_INGRESS);
}

/*
 * Out of underlay device @ifindex to neighbour @gw_be (network order): the
 * kernel's neighbour table fills the outer Ethernet header (and resolves it
 * with ARP when needed, queueing meanwhile), so no MAC is ever cached here.
 * No route lookup: the loader resolved the route (fdp_underlay).
 */
/* bcc 0.26 declares the helper with the 5.10 three-argument signature; the
 * kernel's (5.13+) takes the params length too. */
static long (*fdp_bpf_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
				      __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

static __always_inline int fdp_redirect_neigh(__u32 ifindex, __u32 gw_be)
{
	struct bpf_redir_neigh nh = {};

	nh.nh_family = 2;  /* AF_INET */
	nh.ipv4_nh = gw_be;
	return fdp_bpf_redirect_neigh(ifindex, &nh, sizeof(nh), 0);
}

#endif /* FDP_TEST_MODE */
#endif
