/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * decap_tc.c - tc ingress of the collect_md VXLAN device (UDP 6784): frames
 * from peers, already stripped of their outer headers by the kernel, with the
 * tunnel key as metadata. VNI = src_peer | dst_peer << 12 (fdp_abi.h).
 *
 *   outer source not a neighbour's  -> drop (unknown-source): strangers on the underlay
 *   neighbour may not send this     -> drop (fdp_source_check: wrong-source,
 *                                      source-not-fastdp, sealed-peer)
 *
 *   dst_peer == this peer   -> learn src MAC, deliver: redirect_peer into the
 *                              container's ethwe (the host's own port, the weave
 *                              bridge: redirect to its ingress), or one clone per
 *                              local port
 *   dst_peer == src_peer    -> flood: on along src_peer's broadcast tree and
 *                              one clone per local port
 *   any other dst_peer      -> relay: new tunnel key toward the next hop,
 *                              redirect back out of the VXLAN device
 *   heartbeat ping          -> answered here as a pong, back through the tunnel:
 *                              fastdp health is the kernel path's health, and it
 *                              stays answered while the router restarts
 *   heartbeat pong          -> TC_ACT_OK: the router reads it (AF_PACKET)
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/counters.h"
#include "lib/tunnel.h"
#include "lib/forward.h"

/* Turn a heartbeat ping into a pong in place and send it back where it came from. */
static __always_inline int fdp_heartbeat(struct __sk_buff *skb, struct fdp_config *cfg,
					 __u32 src_peer, __u32 remote)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *hb = data + ETH_HLEN;
	__u8 pong = FDP_HB_PONG;
	__u16 me = bpf_htons(cfg->local_peer);

	if ((void *)(hb + FDP_HB_SRC_OFF + 2) > data_end)
		return fdp_drop(FDP_DROP_TRUNCATED);
	if (*(__u32 *)hb != bpf_htonl(FDP_HB_MAGIC) || hb[FDP_HB_KIND_OFF] != FDP_HB_PING)
		return TC_ACT_OK;  /* pongs (and anything newer) go up to the router */
	if (bpf_skb_store_bytes(skb, ETH_HLEN + FDP_HB_KIND_OFF, &pong, 1, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + FDP_HB_SRC_OFF, &me, 2, 0) < 0)
		return fdp_drop(FDP_DROP_TRUNCATED);
	if (fdp_set_tunnel(skb, fdp_vni(cfg->local_peer, src_peer), remote) < 0)
		return fdp_drop(FDP_DROP_TUNNEL_KEY);
	fdp_peer_tx(src_peer, skb->len);
	return fdp_redirect(cfg->vxlan_ifindex);
}

int fdp_from_tunnel(struct __sk_buff *skb)
{
	struct fdp_flow_key key = {};
	struct fdp_mac_key mk = {};
	struct fdp_mac_entry *dst;
	struct fdp_config *cfg;
	struct fdp_peer *hop;
	struct fdp_neigh *nb;
	__u32 vni, remote, src_peer, dst_peer, len = skb->len;
	int reason, is_hb;

	fdp_pull_headers(skb);
	cfg = fdp_get_config();
	if (!cfg)
		return fdp_drop(FDP_DROP_NO_CONFIG);
	if (fdp_get_tunnel(skb, &vni, &remote) < 0)
		return fdp_drop(FDP_DROP_NO_TUNNEL_KEY);
	if (vni > FDP_VNI_MAX)
		return fdp_drop(FDP_DROP_BAD_VNI);
	nb = fdp_get_neigh(remote);
	if (!nb)
		return fdp_drop(FDP_DROP_UNKNOWN_SOURCE);
	src_peer = fdp_vni_src(vni);
	dst_peer = fdp_vni_dst(vni);
	if (src_peer == cfg->local_peer)
		return fdp_drop(FDP_DROP_LOOP);
	if (!fdp_get_peer(src_peer))
		return fdp_drop(FDP_DROP_UNKNOWN_PEER);

	reason = fdp_parse_frame(skb, &key);
	if (reason)
		return fdp_drop(reason);

	is_hb = dst_peer == cfg->local_peer && key.ethertype == bpf_htons(FDP_HEARTBEAT_ETHERTYPE);
	reason = fdp_source_check(nb, src_peer, !is_hb);
	if (reason)
		return fdp_drop(reason);
	if (is_hb) {
		fdp_peer_rx(src_peer, len);
		return fdp_heartbeat(skb, cfg, src_peer, remote);
	}

	if (dst_peer != src_peer && dst_peer != cfg->local_peer) {
		/* relay toward dst_peer; the VNI stays as the origin wrote it */
		hop = fdp_get_peer(dst_peer);
		if (!hop)
			return fdp_drop(FDP_DROP_UNKNOWN_PEER);
		if (hop->mode != FDP_MODE_FASTDP)
			return fdp_drop(hop->mode == FDP_MODE_NONE ? FDP_DROP_NO_ROUTE : FDP_DROP_NOT_FASTDP);
		if (hop->nexthop_ip == 0 || hop->nexthop_ip == remote)
			return fdp_drop(FDP_DROP_NO_ROUTE);  /* would bounce straight back */
		fdp_learn(key.src_mac, src_peer);
		if (fdp_set_tunnel(skb, vni, hop->nexthop_ip) < 0)
			return fdp_drop(FDP_DROP_TUNNEL_KEY);
		fdp_peer_tx(dst_peer, len);
		fdp_flow_account(&key, len, FDP_PATH_RELAY, hop->nexthop_peer);
		return fdp_redirect(cfg->vxlan_ifindex);
	}

	fdp_peer_rx(src_peer, len);
	fdp_learn(key.src_mac, src_peer);

	if (dst_peer == src_peer) {
		fdp_flood_tunnel(skb, cfg, src_peer, remote);
		goto flood_local;
	}
	if (fdp_mac_is_group(key.dst_mac))
		goto flood_local;
	__builtin_memcpy(mk.mac, key.dst_mac, 6);
	dst = fdp_macs.lookup(&mk);
	if (!dst || !(dst->flags & FDP_MAC_LOCAL) || dst->ifindex == 0)
		goto flood_local;  /* unknown here: every local container gets a copy */
	fdp_flow_account(&key, len, FDP_PATH_RX, src_peer);
	return fdp_deliver_local(cfg, dst);

flood_local:
	fdp_flood_local(skb, cfg);
	fdp_flow_account(&key, len, FDP_PATH_FLOOD, src_peer);
	/* every copy has gone out as a clone; the original ends here */
	return TC_ACT_SHOT;
}
