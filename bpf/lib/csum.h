/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * csum.h - the IPv4 header checksum, one place for the headers the programs
 * build (the direct path's outer header, weaveDNS's answers) and check.
 */
#ifndef FDP_LIB_CSUM_H
#define FDP_LIB_CSUM_H

#include <uapi/linux/ip.h>

/* One's complement sum of a 20-byte header (no options): 0 when @ip's check is right,
 * the check to store when it is 0. */
static __always_inline __u16 fdp_ip_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

#endif
