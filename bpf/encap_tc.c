/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * encap_tc.c - tc ingress of every host-side container veth (vethwepl*):
 * frames a local container sends; and tc egress of the weave bridge: frames the
 * host itself sends on the weave network (the host's own port, whose MAC and
 * addresses are in fdp_macs/fdp_port_addrs like a container's; skb->ifindex is
 * the bridge's there). TC_ACT_OK at the bridge hands the frame to the bridge,
 * which switches it to local containers and the sleeve's port.
 *
 *   source MAC, IPv4 or ARP sender not the container's own
 *                                     -> drop (spoofed-mac/-ip/-arp, lib/guard.h)
 *   dst MAC of a local container      -> TC_ACT_OK, the bridge delivers it
 *   ... the host's own port, UDP to   -> a query the kernel can answer is answered
 *     the DNS listen address             back out of the veth (lib/dns.h); a source
 *     (from a container)                 over its rate is dropped; the rest carry on
 *   dst MAC of a peer in fastdp mode  -> direct path (FDP_CONFIG_DIRECT, IPv4):
 *                                        VXLAN headers pushed here, out of the
 *                                        underlay device (lib/direct.h); else
 *                                        tunnel key (next hop, VNI) + redirect
 *                                        to the collect_md VXLAN device
 *   dst MAC of a peer in sleeve mode  -> TC_ACT_OK, the bridge hands it to the sleeve
 *   broadcast / multicast / unknown   -> one clone per fastdp next hop on this
 *                                        peer's broadcast tree, then TC_ACT_OK
 *                                        so the bridge floods locally
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
#include "lib/dns.h"

int fdp_from_container(struct __sk_buff *skb)
{
	struct fdp_flow_key key = {};
	struct fdp_mac_key mk = {};
	struct fdp_mac_entry *dst, *local;
	struct fdp_config *cfg;
	struct fdp_peer *peer;
	__u32 dst_peer, len = skb->len;
	int reason, verdict;

	fdp_pull_headers(skb);
	reason = fdp_parse_frame(skb, &key);
	if (!reason)
		reason = fdp_port_guard(skb, &key);
	if (reason)
		return fdp_drop(reason);
	cfg = fdp_get_config();
	if (!cfg)
		return TC_ACT_OK;  /* not configured yet: local traffic still works */

	if (fdp_mac_is_group(key.dst_mac))
		goto flood;
	__builtin_memcpy(mk.mac, key.dst_mac, 6);
	/* Remote MACs first: fdp_learned never holds a local one (fdp_learn refuses
	 * it; attaching deletes one learned before, the ageing sweep any that raced
	 * in), so a hit there decides, and a frame for another host, the path that
	 * counts, walks one hash bucket rather than a miss in fdp_macs and then this. */
	dst = fdp_learned.lookup(&mk);
	if (dst)
		goto remote;
	local = fdp_macs.lookup(&mk);
	if (local) {
		/* to the host's own port (the bridge): a DNS query may be answered here (never
		 * one the host itself sends). verifier: here, the way on after a query passed
		 * on is short, so the parser's many ways out cost little */
		if (key.proto == IPPROTO_UDP && local->ifindex == cfg->host_ifindex &&
		    skb->ifindex != cfg->host_ifindex) {
			verdict = fdp_dns_answer(skb, &key);
			if (verdict != FDP_DNS_PASS)
				return verdict;
		}
		fdp_flow_account(&key, len, FDP_PATH_LOCAL, cfg->local_peer);
		return TC_ACT_OK;
	}
	goto flood;

remote:
	dst_peer = dst->peer;
	if (dst_peer == cfg->local_peer) {
		fdp_flow_account(&key, len, FDP_PATH_LOCAL, cfg->local_peer);
		return TC_ACT_OK;
	}
	peer = fdp_get_peer(dst_peer);
	if (!peer)
		goto flood;  /* learned from a peer that has left: treat as unknown */
	if (peer->mode == FDP_MODE_SLEEVE) {
		fdp_flow_account(&key, len, FDP_PATH_SLEEVE, peer->nexthop_peer);
		return TC_ACT_OK;
	}
	if (peer->mode != FDP_MODE_FASTDP || peer->nexthop_ip == 0)
		return fdp_drop(FDP_DROP_NO_ROUTE);
	verdict = fdp_encap_direct(skb, cfg, &key, peer, fdp_vni(cfg->local_peer, dst_peer));
	if (verdict < 0) {
		/* the VXLAN device path (also the fallback of the direct one) */
		if (fdp_set_tunnel(skb, fdp_vni(cfg->local_peer, dst_peer), peer->nexthop_ip) < 0)
			return fdp_drop(FDP_DROP_TUNNEL_KEY);
		verdict = fdp_redirect(cfg->vxlan_ifindex);
	} else if (verdict != TC_ACT_REDIRECT) {
		return verdict;  /* dropped, with its reason */
	}
	/* len: the frame as the container sent it, whichever path carries it */
	fdp_peer_tx(dst_peer, len);
	fdp_flow_account(&key, len, FDP_PATH_TX, peer->nexthop_peer);
	return verdict;

flood:
	fdp_flood_tunnel(skb, cfg, cfg->local_peer, 0);
	fdp_flow_account(&key, len, FDP_PATH_FLOOD, cfg->local_peer);
	return TC_ACT_OK;
}
