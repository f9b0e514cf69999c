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

/* The slot of fdp_flow_slots that @k hashes to (word by word, order-dependent, so a
 * flow and its reply usually land apart). */
static __always_inline __u32 fdp_flow_slot_of(const struct fdp_flow_key *k)
{
	const __u32 *w = (const void *)k;
	__u32 h = w[0];

	h = h * 31 + w[1];
	h = h * 31 + w[2];
	h = h * 31 + w[3];
	h = h * 31 + w[4];
	h = h * 31 + w[5];
	h = h * 31 + w[6];
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	return h & (FDP_FLOW_SLOTS - 1);
}

static __always_inline int fdp_flow_key_eq(const struct fdp_flow_key *a, const struct fdp_flow_key *b)
{
	const __u32 *x = (const void *)a, *y = (const void *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]) |
		(x[5] ^ y[5]) | (x[6] ^ y[6])) == 0;
}

/* Add @st (a slot's counts, this CPU's) to @key's entry of fdp_flows. */
static __always_inline void fdp_flow_spill(const struct fdp_flow_key *key, const struct fdp_flow_stats *st)
{
	struct fdp_flow_stats *cur = fdp_flows.lookup((void *)key);

	if (!cur) {
		fdp_flows.update((void *)key, (void *)st);
		return;
	}
	cur->packets += st->packets;
	cur->bytes += st->bytes;
	if (st->last_seen_ns >= cur->last_seen_ns) {
		cur->last_seen_ns = st->last_seen_ns;
		cur->path = st->path;
		cur->via_peer = st->via_peer;
	}
}

static __always_inline void fdp_flow_set(struct fdp_flow_stats *st, __u64 packets, __u64 bytes,
					 __u64 now, __u8 path, __u16 via)
{
	st->packets = packets;
	st->bytes = bytes;
	st->last_seen_ns = now;
	st->path = path;
	st->via_peer = via;
}

/* Count one frame of @key (fdp_abi.h, struct fdp_flow_slot: its slot, else fdp_flows). */
static __always_inline void fdp_flow_account(struct fdp_flow_key *key, __u32 len,
					     __u8 path, __u16 via)
{
	struct fdp_flow_stats *st, init = {};
	struct fdp_flow_slot *slot;
	__u64 now = fdp_now_ns();
	__u32 idx = fdp_flow_slot_of(key);

	slot = fdp_flow_slots.lookup(&idx);
	if (slot) {
		if (slot->st.packets && fdp_flow_key_eq(&slot->key, key)) {
			fdp_flow_set(&slot->st, slot->st.packets + 1, slot->st.bytes + len, now, path, via);
			return;
		}
		if (!slot->st.packets || now - slot->st.last_seen_ns >= FDP_FLOW_SLOT_IDLE_NS) {
			if (slot->st.packets)
				fdp_flow_spill(&slot->key, &slot->st);
			__builtin_memcpy(&slot->key, key, sizeof(*key));
			fdp_flow_set(&slot->st, 1, len, now, path, via);
			return;
		}
	}
	st = fdp_flows.lookup(key);
	if (st) {
		fdp_flow_set(st, st->packets + 1, st->bytes + len, now, path, via);
		return;
	}
	fdp_flow_set(&init, 1, len, now, path, via);
	fdp_flows.update(key, &init);
}

#endif
