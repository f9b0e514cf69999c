/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * maps.h - the fastdp maps. Layouts come from fdp_abi.h.
 *
 * With FDP_PIN_DIR defined (the loader passes the host's bpffs directory as a
 * string literal) every map is pinned there, so a restarted router finds the
 * same maps and the programs already attached keep forwarding meanwhile.
 * Without it (BPF tests) the maps are private to the load.
 */
#ifndef FDP_LIB_MAPS_H
#define FDP_LIB_MAPS_H

#include "../fdp_abi.h"

#ifdef FDP_PIN_DIR
#define FDP_MAP(type, key, val, name, max) \
	BPF_TABLE_PINNED(type, key, val, name, max, FDP_PIN_DIR "/" #name)
#else
#define FDP_MAP(type, key, val, name, max) BPF_TABLE(type, key, val, name, max)
#endif

FDP_MAP("array", u32, struct fdp_config, fdp_config, 1);
FDP_MAP("hash", struct fdp_mac_key, struct fdp_mac_entry, fdp_macs, FDP_MAX_LOCAL_MACS);
FDP_MAP("lru_hash", struct fdp_mac_key, struct fdp_mac_entry, fdp_learned, FDP_MAX_MACS);
FDP_MAP("array", u32, u32, fdp_learn_count, FDP_MAX_PEERS);
FDP_MAP("hash", u32, struct fdp_port_addrs, fdp_port_addrs, FDP_MAX_LOCAL_PORTS);
FDP_MAP("array", u32, struct fdp_peer, fdp_peers, FDP_MAX_PEERS);
FDP_MAP("array", u32, struct fdp_bcast, fdp_bcast, FDP_MAX_PEERS);
FDP_MAP("array", u32, struct fdp_ports, fdp_ports, 1);
FDP_MAP("percpu_array", u32, u64, fdp_drops, FDP_DROP_MAX);
FDP_MAP("percpu_array", u32, struct fdp_peer_stats, fdp_peer_stats, FDP_MAX_PEERS);
FDP_MAP("array", u32, struct fdp_underlay, fdp_underlay, FDP_MAX_PEERS);
FDP_MAP("hash", u32, struct fdp_neigh, fdp_neigh, FDP_MAX_PEERS);
FDP_MAP("lru_percpu_hash", struct fdp_flow_key, struct fdp_flow_stats, fdp_flows, FDP_MAX_FLOWS);
FDP_MAP("percpu_array", u32, struct fdp_flow_slot, fdp_flow_slots, FDP_FLOW_SLOTS);
FDP_MAP("array", u32, struct fdp_dns_config, fdp_dns_config, 1);
FDP_MAP("hash", struct fdp_dns_key, struct fdp_dns_entry, fdp_dns_names, FDP_DNS_MAX_NAMES);
FDP_MAP("lru_hash", u32, u64, fdp_dns_sources, FDP_DNS_MAX_SOURCES);
FDP_MAP("percpu_array", u32, u64, fdp_dns_stats, FDP_DNS_STAT_MAX);

#endif
