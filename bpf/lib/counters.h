/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* counters.h - drops by reason, per-peer and per-flow counters (all per CPU). */
#ifndef FDP_LIB_COUNTERS_H
#define FDP_LIB_COUNTERS_H

#include "maps.h"

/*
 * Now, CLOCK_MONOTONIC ns at tick resolution: plenty for last-seen times and MAC
 * ageing, and unlike bpf_ktime_get_ns() it reads no clock source per packet
 * (read_tsc under the programs was ~0.3% of a 1-stream TCP profile). Python
 * compares it with time.monotonic_ns() (same clock, finer).
 */
static __always_inline __u64 fdp_now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* Count a drop under its reason and return the tc verdict to drop. */
static __always_inline int fdp_drop(__u32 reason)
{
	u64 *cnt;

	if (reason >= FDP_DROP_MAX)
		reason = FDP_DROP_NONE;
	cnt = fdp_drops.lookup(&reason);
	if (cnt)
		*cnt += 1;  /* per-CPU slot: no atomics needed */
	return TC_ACT_SHOT;
}

/* Count a copy lost in a flood without dropping the frame itself. */
static __always_inline void fdp_count_event(__u32 reason)
{
	fdp_drop(reason);
}

static __always_inline void fdp_peer_tx(__u32 peer, __u32 len)
{
	struct fdp_peer_stats *st;

	peer &= FDP_SHORT_ID_MASK;
	st = fdp_peer_stats.lookup(&peer);
	if (st) {
		st->tx_packets += 1;
		st->tx_bytes += len;
	}
}

static __always_inline void fdp_peer_rx(__u32 peer, __u32 len)
{
	struct fdp_peer_stats *st;

	peer &= FDP_SHORT_ID_MASK;
	st = fdp_peer_stats.lookup(&peer);
	if (st) {
		st->rx_packets += 1;
		st->rx_bytes += len;
	}
}

static __always_inline void fdp_flow_account(struct fdp_flow_key *key, __u32 len,
					     __u8 path, __u16 via)
{
	struct fdp_flow_stats *st, init = {};
	__u64 now = fdp_now_ns();

	st = fdp_flows.lookup(key);
	if (st) {
		st->packets += 1;
		st->bytes += len;
		st->last_seen_ns = now;
		st->path = path;
		st->via_peer = via;
		return;
	}
	init.packets = 1;
	init.bytes = len;
	init.last_seen_ns = now;
	init.path = path;
	init.via_peer = via;
	fdp_flows.update(key, &init);
}

#endif
