/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* forward.h - decisions shared by both attach points: floods and learning. */
#ifndef FDP_LIB_FORWARD_H
#define FDP_LIB_FORWARD_H

#include "maps.h"
#include "counters.h"
#include "tunnel.h"

static __always_inline struct fdp_config *fdp_get_config(void)
{
	u32 zero = 0;
	struct fdp_config *cfg = fdp_config.lookup(&zero);

	if (!cfg || !(cfg->flags & FDP_CONFIG_READY))
		return NULL;
	return cfg;
}

static __always_inline struct fdp_peer *fdp_get_peer(__u32 short_id)
{
	struct fdp_peer *p;

	short_id &= FDP_SHORT_ID_MASK;
	p = fdp_peers.lookup(&short_id);
	if (!p || !(p->flags & FDP_PEER_KNOWN))
		return NULL;
	return p;
}

/* The direct neighbour at outer address @remote (network order), or NULL: a stranger. */
static __always_inline struct fdp_neigh *fdp_get_neigh(__u32 remote)
{
	struct fdp_neigh *nb = fdp_neigh.lookup(&remote);

	if (!nb || !(nb->flags & FDP_NEIGH_KNOWN))
		return NULL;
	return nb;
}

/*
 * May neighbour @nb hand us a frame whose VNI names @src_peer as its origin?
 * 0 when it may, else the drop reason. Heartbeats (@data 0) only prove the path:
 * any direct neighbour may send its own, whatever the mode. Data frames need
 * the connection in fastdp mode and allowed to carry plain VXLAN (not SEALED,
 * unless ESP protected it: FDP_NEIGH_XFRM); their origin is the neighbour
 * itself, or a peer that is not a direct neighbour (relayed or flooded on by
 * @nb): a direct neighbour sends its own frames straight, never through another.
 */
static __always_inline int fdp_source_check(const struct fdp_neigh *nb, __u32 src_peer, int data)
{
	struct fdp_peer *origin;

	if (!data)
		return nb->peer == src_peer ? 0 : FDP_DROP_WRONG_SOURCE;
	if ((nb->flags & FDP_NEIGH_SEALED) && !(nb->flags & FDP_NEIGH_XFRM))
		return FDP_DROP_SEALED_PEER;
	if (nb->mode != FDP_MODE_FASTDP)
		return FDP_DROP_SOURCE_NOT_FASTDP;
	if (nb->peer == src_peer)
		return 0;
	origin = fdp_get_peer(src_peer);
	if (!origin)
		return FDP_DROP_UNKNOWN_PEER;
	if (origin->nexthop_peer == src_peer && origin->nexthop_ip != 0)
		return FDP_DROP_WRONG_SOURCE;  /* a direct neighbour's frame from another address */
	return 0;
}

/*
 * verifier: LLVM turns an indexed loop over a map value into a walking pointer
 * and a down-counter; the 6.1 verifier (Debian 12) loses the counter's bound
 * across the loop's "continue" paths and refuses the access after the last
 * element ("invalid access to map value ... off=142"). An index the compiler
 * cannot see through keeps base + bounded index, which every verifier accepts.
 */
static __always_inline __u32 fdp_opaque_index(__u32 i)
{
	asm volatile("" : "+r"(i));
	return i;
}

/*
 * Send one copy of a flooded frame to each fastdp next hop on @src_peer's
 * broadcast tree, except the underlay address it came from (@from_ip, 0 for
 * frames of local containers). Sleeve next hops are the sleeve's job: it sees
 * the frame on the bridge.
 */
static __always_inline void fdp_flood_tunnel(struct __sk_buff *skb, struct fdp_config *cfg,
					     __u32 src_peer, __u32 from_ip)
{
	u32 idx = src_peer & FDP_SHORT_ID_MASK;
	struct fdp_bcast *bc = fdp_bcast.lookup(&idx);
	__u32 vni = fdp_vni(src_peer, src_peer);
	__u32 i, count;

	if (!bc)
		return;
	count = bc->count;
	/* verifier: a constant bound on the loop, count only ends it early */
	for (i = 0; i < FDP_MAX_BCAST_HOPS; i++) {
		struct fdp_hop *hop;
		__u32 j = fdp_opaque_index(i);

		if (j >= count || j >= FDP_MAX_BCAST_HOPS)
			break;
		hop = &bc->hops[j];
		if (hop->mode != FDP_MODE_FASTDP || hop->ip == 0 || hop->ip == from_ip)
			continue;
		if (fdp_set_tunnel(skb, vni, hop->ip) < 0) {
			fdp_count_event(FDP_DROP_TUNNEL_KEY);
			continue;
		}
		if (fdp_clone(skb, cfg->vxlan_ifindex) < 0) {
			fdp_count_event(FDP_DROP_CLONE);
			continue;
		}
		fdp_peer_tx(hop->peer, skb->len);
	}
}

/* One copy to every local container (host-side veth egress = into ethwe), and
 * one up the host's stack when the host has its port (fdp_config.host_ifindex). */
static __always_inline void fdp_flood_local(struct __sk_buff *skb, const struct fdp_config *cfg)
{
	u32 zero = 0;
	struct fdp_ports *ports = fdp_ports.lookup(&zero);
	__u32 i, count;

	if (!ports)
		return;
	count = ports->count;
	for (i = 0; i < FDP_MAX_LOCAL_PORTS; i++) {
		__u32 ifindex;
		__u32 j = fdp_opaque_index(i);

		if (j >= count || j >= FDP_MAX_LOCAL_PORTS)
			break;
		ifindex = ports->ifindex[j];
		if (ifindex == 0)
			continue;
		if (fdp_clone(skb, ifindex) < 0)
			fdp_count_event(FDP_DROP_CLONE);
	}
	if (cfg->host_ifindex && fdp_clone_ingress(skb, cfg->host_ifindex) < 0)
		fdp_count_event(FDP_DROP_CLONE);
}

/*
 * Hand a unicast frame to the local port behind @dst (an fdp_macs entry): straight
 * into a container's ethwe (redirect_peer), or up the host's stack when it is the
 * host's own port (the weave bridge).
 */
static __always_inline int fdp_deliver_local(const struct fdp_config *cfg, const struct fdp_mac_entry *dst)
{
	if (dst->ifindex == cfg->host_ifindex)
		return fdp_redirect_ingress(dst->ifindex);
	return fdp_redirect_peer(dst->ifindex);
}

/*
 * Remember that @mac lives behind @peer (fdp_learned). A known entry only gets its
 * last-seen time refreshed (ageing, fdp_abi.h), at most once per
 * FDP_MAC_REFRESH_NS: a write per packet would bounce the cache line between CPUs
 * for every flow. A local container's MAC is never learned, and a peer holding
 * FDP_MAX_MACS_PER_PEER entries teaches no more (fdp_mac_flags).
 */
static __always_inline void fdp_learn(const __u8 *mac, __u32 peer)
{
	struct fdp_mac_key mk = {};
	struct fdp_mac_entry *e, ne = {};
	__u64 now = fdp_now_ns();
	__u32 idx = peer & FDP_SHORT_ID_MASK;
	__u32 *count;

	__builtin_memcpy(mk.mac, mac, 6);
	e = fdp_learned.lookup(&mk);
	if (e && e->peer == peer) {
		if (now - e->updated_ns >= FDP_MAC_REFRESH_NS)
			e->updated_ns = now;  /* racing CPUs write the same value: no atomics */
		return;
	}
	if (fdp_macs.lookup(&mk))
		return;  /* a peer claiming a local container's MAC does not steal it */
	count = fdp_learn_count.lookup(&idx);
	if (!count)
		return;
	if (*count >= FDP_MAX_MACS_PER_PEER) {
		fdp_count_event(FDP_DROP_LEARN_LIMIT);
		return;
	}
	ne.peer = peer;
	ne.flags = FDP_MAC_LEARNED;
	ne.updated_ns = now;
	if (fdp_learned.update(&mk, &ne) == 0)
		__sync_fetch_and_add(count, 1);
}

#endif
