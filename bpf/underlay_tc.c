/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * underlay_tc.c - tc ingress of the underlay device (eth0), direct path only
 * (FDP_CONFIG_DIRECT): VXLAN frames for a local container are stripped here and
 * handed straight to the container, skipping the outer route lookup, the UDP
 * socket, vxlan_rcv, the metadata dst and the GRO cell of the VXLAN device.
 *
 *   UDP 6784, VXLAN, VNI src=a known peer, dst=this peer, inner unicast IPv4
 *   to a local container              -> strip, learn, count, bpf_redirect_peer
 *                                        into the container's ethwe (to the
 *                                        host's own port: up its stack); a GSO
 *                                        aggregate only if a container owns its
 *                                        inner destination, on kernels before
 *                                        BPF_F_ADJ_ROOM_DECAP_L4_UDP
 *                                        (lib/direct.h, fdp_strip)
 *   UDP 6784 that is no VXLAN        -> drop (bad-vxlan)
 *   UDP 6784 from a stranger          -> drop (unknown-source): no neighbour has
 *                                        that outer address
 *   everything else (other traffic, floods, relays, heartbeats, ARP, frames
 *   for unknown MACs, malformed VXLAN) -> TC_ACT_UNSPEC: on to the next filter
 *                                        and the kernel, unchanged (the VXLAN
 *                                        device and fdp_from_tunnel handle it)
 *
 * This hook sees all of the host's traffic: it never drops what it does not
 * own (only UDP 6784 to this host is ours), and it returns TC_ACT_UNSPEC rather than TC_ACT_OK so other programs on
 * the same device still run.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/counters.h"
#include "lib/tunnel.h"
#include "lib/forward.h"
#include "lib/direct.h"
#include "lib/guard.h"

#define FDP_PASS TC_ACT_UNSPEC

int fdp_from_underlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct fdp_outer_hdr *o = data;
	struct fdp_flow_key key = {};
	struct fdp_mac_key mk = {};
	struct fdp_mac_entry *dst;
	struct fdp_port_addrs *own;
	struct fdp_config *cfg;
	struct fdp_neigh *nb;
	struct ethhdr inner;
	__u32 vni, src_peer, dst_peer, len, ifindex;
	int err, terminates;

	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->pkt_type != FDP_PACKET_HOST)
		return FDP_PASS;
	/* Headers not in the linear part (rare: GRO pulls them) are the kernel's. */
	if ((void *)&o->vx > data_end)
		return FDP_PASS;
	if (o->eth.h_proto != bpf_htons(ETH_P_IP) || o->ip.protocol != IPPROTO_UDP ||
	    o->udp.dest != bpf_htons(FDP_VXLAN_PORT))
		return FDP_PASS;
	/* no options, no fragments, a sound header: else the kernel judges it */
	if (o->ip.version != 4 || o->ip.ihl != 5 || (o->ip.frag_off & bpf_htons(FDP_IP_MF_OFFSET)) ||
	    fdp_ip_csum(&o->ip) != 0)
		return FDP_PASS;
	cfg = fdp_get_config();
	if (!cfg)
		return FDP_PASS;

	/* UDP 6784 to this host is ours: what is no VXLAN is counted here (the
	 * kernel's VXLAN device would drop it without a word). */
	if (bpf_ntohs(o->udp.len) < sizeof(struct udphdr) + FDP_VXLAN_HLEN + ETH_HLEN)
		return fdp_drop(FDP_DROP_BAD_VXLAN);
	if ((void *)(o + 1) > data_end)
		return FDP_PASS;
	if (o->vx.flags != bpf_htonl((__u32)FDP_VXLAN_FLAG_I << 24) || (o->vx.vni & bpf_htonl(0xff)))
		return fdp_drop(FDP_DROP_BAD_VXLAN);
	nb = fdp_get_neigh(o->ip.saddr);
	if (!nb)
		return fdp_drop(FDP_DROP_UNKNOWN_SOURCE);  /* a stranger: no neighbour has that address */

	if (!(cfg->flags & FDP_CONFIG_DIRECT))
		return FDP_PASS;
	/* ESP-protected neighbours: plain VXLAN from them must meet the kernel's xfrm policy */
	if (nb->flags & FDP_NEIGH_XFRM)
		return FDP_PASS;
	vni = bpf_ntohl(o->vx.vni) >> 8;
	src_peer = fdp_vni_src(vni);
	dst_peer = fdp_vni_dst(vni);
	if (dst_peer != cfg->local_peer || src_peer == cfg->local_peer || !fdp_get_peer(src_peer))
		return FDP_PASS;  /* floods, relays, loops, strangers: fdp_from_tunnel decides */
	if (fdp_source_check(nb, src_peer, 1))
		return FDP_PASS;  /* refused: fdp_from_tunnel counts it under its reason */

	if (fdp_parse_frame_at(skb, sizeof(*o), &key))
		return FDP_PASS;
	/* IPv4 only: skb->protocol stays the outer one (IPv4) across the strip */
	if (key.ethertype != bpf_htons(ETH_P_IP) || fdp_mac_is_group(key.dst_mac))
		return FDP_PASS;
	__builtin_memcpy(mk.mac, key.dst_mac, 6);
	dst = fdp_macs.lookup(&mk);
	if (!dst || !(dst->flags & FDP_MAC_LOCAL) || dst->ifindex == 0)
		return FDP_PASS;

	/* A GSO aggregate: does the container consume it (its own address) or
	 * route it on (fdp_strip)? Asked only for aggregates: a single frame needs
	 * no answer, and the lookup is a fifth hash walk per packet. The host's own
	 * port never counts: hosts DNAT their addresses onward (published ports,
	 * node ports), so its aggregates keep the device path. */
	ifindex = dst->ifindex;
	terminates = 0;
	if (skb->gso_size && ifindex != cfg->host_ifindex) {
		own = fdp_port_addrs.lookup(&ifindex);
		terminates = own && fdp_port_has_ip(own, key.dst_ip);
	}

	__builtin_memcpy(inner.h_dest, key.dst_mac, ETH_ALEN);
	__builtin_memcpy(inner.h_source, key.src_mac, ETH_ALEN);
	inner.h_proto = key.ethertype;
	len = skb->len - FDP_ENCAP_LEN;  /* the inner frame, as fdp_from_tunnel counts it */
	err = fdp_strip(skb, &inner, terminates);
	if (err < 0)
		return FDP_PASS;  /* the kernel refused: unchanged, the device path takes it */
	if (err > 0)
		return err;       /* half-rebuilt: dropped with its reason */

	fdp_peer_rx(src_peer, len);
	fdp_learn(key.src_mac, src_peer);
	fdp_flow_account(&key, len, FDP_PATH_RX, src_peer);
	return fdp_deliver_local(cfg, dst);
}
