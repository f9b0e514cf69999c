/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * dns.h - weaveDNS answers in the kernel, at the container's veth.
 *
 * A UDP frame a local container sends to the host's own port (the bridge's MAC) for the
 * DNS listen address (fdp_dns_config) is looked at here, after the source guard (so
 * its source address is the container's own). Each one is first charged to its source's rate limit (the userspace server's
 * token bucket, here as GCRA on one timestamp per source): over the limit it is
 * dropped, as the server would drop it. Then a standard query
 *
 *   QR 0, opcode 0, TC 0, one question, no answer/authority record, no additional
 *   record or exactly one OPT record (EDNS), QTYPE A, QCLASS IN, a name of at most
 *   FDP_DNS_NAME_MAX bytes without compression,
 *
 * whose lower-cased name is in fdp_dns_names, and whose answer fits the client's UDP
 * buffer, is rewritten in place into the answer the userspace server gives (ID and
 * question as sent, QR AA RA set, RD echoed, every address once in a random order,
 * each answer pointing at the question's name, the entry's TTL, a plain OPT record
 * announcing FDP_DNS_EDNS_SIZE when the query had one) and sent back out of the veth
 * it came in by. Anything else goes on unchanged (counted by reason in fdp_dns_stats):
 * NXDOMAIN, NOERROR without data, PTR, other types, truncation and forwarding stay
 * the userspace server's.
 */
#ifndef FDP_LIB_DNS_H
#define FDP_LIB_DNS_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/udp.h>
#include "maps.h"
#include "tunnel.h"
#include "parse.h"
#include "forward.h"
#include "csum.h"

#define FDP_DNS_IP_OFF ETH_HLEN                  /* the IPv4 header (no options: checked) */
#define FDP_DNS_UDP_OFF (ETH_HLEN + 20)
#define FDP_DNS_OFF (ETH_HLEN + 20 + 8)          /* the DNS header */
#define FDP_DNS_HLEN 12
#define FDP_DNS_RR_A_LEN 16                      /* name pointer, type, class, TTL, rdlength, IPv4 */
#define FDP_DNS_OPT_LEN 11                       /* root name, type, class, TTL, rdlength 0 */
#define FDP_DNS_TYPE_A 1
#define FDP_DNS_TYPE_OPT 41
#define FDP_DNS_CLASS_IN 1
#define FDP_DNS_PASS (-1)                        /* not answered here: carry on */
/* bytes: the largest answer's UDP datagram (8 + 12 + FDP_DNS_NAME_MAX + 4 + 16 answers of
 * 16 + OPT 11 = 419), rounded up to 4, and 4 more for the zero padding */
#define FDP_DNS_CSUM_BUF 424

struct fdp_dns_hdr {
	__be16 id;
	__u8 flags1;          /* QR, opcode (4 bits), AA, TC, RD */
	__u8 flags2;          /* RA, Z, AD, CD, rcode (4 bits) */
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

struct fdp_dns_rr_a {
	__be16 name;          /* 0xc00c: the question's name */
	__be16 type;
	__be16 class;
	__be32 ttl;
	__be16 rdlength;
	__be32 addr;
} __attribute__((packed));

/* What one answer is built in. verifier: the program's stack (512 bytes) has no room
 * for it, so it lives in a per-CPU array of its own (private to the load, never pinned:
 * nothing outlives the packet). */
struct fdp_dns_work {
	struct fdp_dns_key key;
	__u32 addrs[FDP_DNS_MAX_ADDRS];
	struct iphdr ip;
	struct udphdr udp;
	struct fdp_dns_hdr h;
	struct fdp_dns_rr_a rr;
	__u8 opt[FDP_DNS_OPT_LEN + 1];
	__u8 macs[12];
	__u8 swapped[12];
	__u32 qlen;           /* the name's length, as the label walk leaves it (see there) */
	__u32 count;          /* the answers' count, as the shuffle leaves it (see there) */
	__u32 ulen;           /* the answer's UDP length, for its checksum (see there) */
	__u8 csum_buf[FDP_DNS_CSUM_BUF];   /* the UDP datagram of the answer, for its checksum */
};
BPF_TABLE("percpu_array", u32, struct fdp_dns_work, fdp_dns_work, 1);

static __always_inline void fdp_dns_count(__u32 what)
{
	u64 *cnt = fdp_dns_stats.lookup(&what);

	if (cnt)
		*cnt += 1;  /* per-CPU slot */
}

static __always_inline int fdp_dns_pass(__u32 why)
{
	fdp_dns_count(why);
	return FDP_DNS_PASS;
}

/*
 * One query from @src: within its rate? GCRA: the source's "theoretical arrival time"
 * runs interval ahead per query and may be at most burst ahead of now, which admits
 * what the userspace token bucket admits (a burst of B at once, then one per interval).
 * Updates from two CPUs at once may both pass: a query or two over, never a lock.
 */
static __always_inline int fdp_dns_allow(__u32 src, const struct fdp_dns_config *dc)
{
	__u64 now = bpf_ktime_get_ns(), tat, *slot;

	slot = fdp_dns_sources.lookup(&src);
	if (!slot) {
		tat = now + dc->rate_interval_ns;
		fdp_dns_sources.update(&src, &tat);
		return 1;
	}
	tat = *slot;
	if (tat < now)
		tat = now;
	if (tat - now > dc->rate_burst_ns)
		return 0;
	*slot = tat + dc->rate_interval_ns;
	return 1;
}

/*
 * The UDP checksum of the answer, once everything else is written (@ulen: the UDP
 * datagram's length, header included; the checksum field 0): the datagram is read back
 * into @w->csum_buf, zero-padded to 4 bytes, summed with the pseudo-header (the new
 * addresses, protocol, length) by bpf_csum_diff, folded and written. Sums of native
 * 16-bit words, stored natively: the ones' complement sum does not care for byte order.
 */
static __always_inline int fdp_dns_udp_csum(struct __sk_buff *skb, struct fdp_dns_work *w, __u32 ulen)
{
	__u32 seed, sum;
	__u64 len;
	__u16 csum;
	long got;

	/* verifier: the length is in [8, FDP_DNS_CSUM_BUF - 4]; read back from memory, so
	 * that the precision this size needs stops there (followed back, it would make the
	 * name's length and the count exact again, and the parser's ways many) */
	w->ulen = ulen;
	len = *(volatile __u32 *)&w->ulen;
	if (len > FDP_DNS_CSUM_BUF - 4)
		return -1;
	asm volatile("" : "+r"(len));   /* LLVM would fuse the two compares into one the verifier cannot use */
	if (len < 8)
		return -1;
	asm volatile("" : "+r"(len));   /* ... or pass a copy taken before this one */
	if (bpf_skb_load_bytes(skb, FDP_DNS_UDP_OFF, w->csum_buf, len) < 0)
		return -1;
	w->csum_buf[len] = 0;
	w->csum_buf[len + 1] = 0;
	w->csum_buf[len + 2] = 0;
	seed = (w->ip.saddr & 0xffff) + (w->ip.saddr >> 16) + (w->ip.daddr & 0xffff) + (w->ip.daddr >> 16) +
	       bpf_htons(IPPROTO_UDP) + bpf_htons(ulen);
	got = bpf_csum_diff(NULL, 0, (__be32 *)w->csum_buf, (len + 3) & ~3ULL, seed);
	if (got < 0)
		return -1;
	sum = (__u32)got;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	csum = ~sum & 0xffff;
	if (csum == 0)
		csum = 0xffff;   /* 0 would say "no checksum" (RFC 768) */
	return bpf_skb_store_bytes(skb, FDP_DNS_UDP_OFF + 6, &csum, sizeof(csum), 0) < 0 ? -1 : 0;
}

/*
 * The key of the name at DNS offset 12 (@dlen: bytes of DNS payload), in @w->key:
 * lower-cased, zero-filled. Returns the name's length in bytes (with its root) or 0 when it is
 * no name the kernel answers (too long, compressed, malformed).
 */
static __always_inline __u32 fdp_dns_name_key(struct __sk_buff *skb, __u32 dlen, struct fdp_dns_work *w)
{
	struct fdp_dns_key *key = &w->key;
	__u64 *words = (__u64 *)key->name;   /* 8-aligned: the key opens fdp_dns_work */
	__u32 n = dlen - FDP_DNS_HLEN, pos = 0, i;
	__u8 c = 0;

	if (n > FDP_DNS_NAME_MAX)
		n = FDP_DNS_NAME_MAX;
	/* verifier: the length is in [1, FDP_DNS_NAME_MAX] */
	if (n < 1 || n > FDP_DNS_NAME_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, FDP_DNS_OFF + FDP_DNS_HLEN, key->name, n) < 0)
		return 0;
	/* labels: a length (1-63) then its bytes, up to the root's 0; pointers (0xc0) and
	 * extended labels are refused. verifier: a constant bound, the name ends it early;
	 * the length found leaves the loop through memory (a volatile read), so all ways out
	 * of it are one state for the code after it (each left with its own range of pos,
	 * they had the rest of the parser verified once per way out: 5x the instructions) */
	w->qlen = 0;
	for (i = 0; i < FDP_DNS_NAME_MAX / 2; i++) {
		if (pos >= n)
			break;   /* runs past the message or the key */
		c = key->name[pos & (FDP_DNS_NAME_MAX - 1)];
		if (c == 0) {
			w->qlen = pos + 1;
			break;
		}
		if (c > 63)
			break;
		pos += c + 1;
	}
	pos = *(volatile __u32 *)&w->qlen;
	if (!pos)
		return 0;
	/* lower-case every byte of the name (a label length, 1-63, is never a letter) and
	 * zero the rest of the key, eight bytes at a time (SWAR: per byte, 0x80 set where
	 * it is 'A'..'Z', then 0x20 added there) */
	for (i = 0; i < FDP_DNS_NAME_MAX / 8; i++) {
		__u64 x = words[i], hept, upper;
		__u32 lo = i * 8;

		if (lo >= pos) {
			x = 0;
		} else if (lo + 8 > pos) {
			x &= ((__u64)1 << ((pos - lo) * 8)) - 1;   /* little-endian: the first bytes are the low ones */
		}
		hept = x & 0x7f7f7f7f7f7f7f7fULL;
		upper = (hept + 0x3f3f3f3f3f3f3f3fULL) ^ (hept + 0x2525252525252525ULL);
		upper &= ~x & 0x8080808080808080ULL;
		words[i] = x | (upper >> 2);
	}
	return pos;
}

/* Shuffle the first @count of @a (Fisher-Yates: every order as likely). */
static __always_inline void fdp_dns_shuffle(__u32 *a, __u32 count)
{
	__u32 i, j, k, t;

	/* verifier: constant bounds; both indexes masked into the array behind
	 * fdp_opaque_index (LLVM drops a mask it can prove redundant, the verifier cannot) */
	for (i = FDP_DNS_MAX_ADDRS - 1; i > 0; i--) {
		if (i >= count)
			continue;
		j = fdp_opaque_index(bpf_get_prandom_u32() % (i + 1)) & (FDP_DNS_MAX_ADDRS - 1);
		k = fdp_opaque_index(i) & (FDP_DNS_MAX_ADDRS - 1);
		t = a[k];
		a[k] = a[j];
		a[j] = t;
	}
}

/*
 * The query in @skb (@fk: its parsed flow key, guard passed) when it is for the DNS
 * listen address: a tc verdict (the answer sent back, or a drop), else FDP_DNS_PASS.
 */
static __always_inline int fdp_dns_answer(struct __sk_buff *skb, const struct fdp_flow_key *fk)
{
	struct fdp_dns_config *dc;
	struct fdp_dns_entry *entry;
	struct fdp_dns_work *w;
	__u32 zero = 0, dlen, qlen, qend, rest, count, max, out_dlen, i, t;
	__u16 qt[2];
	int edns = 0;

	dc = fdp_dns_config.lookup(&zero);
	if (!dc || !(dc->flags & FDP_DNS_CONFIG_ENABLED) || fk->dst_ip != dc->listen_ip ||
	    fk->dport != dc->listen_port)
		return FDP_DNS_PASS;
	/* every query counts toward its source's rate, answered here or not */
	if (dc->rate_interval_ns && !fdp_dns_allow(fk->src_ip, dc)) {
		fdp_dns_count(FDP_DNS_RATE_LIMITED);
		return TC_ACT_SHOT;
	}

	w = fdp_dns_work.lookup(&zero);
	if (!w)
		return fdp_dns_pass(FDP_DNS_ERROR);
	if (bpf_skb_load_bytes(skb, FDP_DNS_IP_OFF, &w->ip, sizeof(w->ip)) < 0 ||
	    bpf_skb_load_bytes(skb, FDP_DNS_UDP_OFF, &w->udp, sizeof(w->udp)) < 0)
		return fdp_dns_pass(FDP_DNS_PASS_PACKET);
	if (w->ip.ihl != 5 || (w->ip.frag_off & bpf_htons(FDP_IP_MF | FDP_IP_OFFSET)))
		return fdp_dns_pass(FDP_DNS_PASS_PACKET);
	dlen = bpf_ntohs(w->udp.len);
	if (bpf_ntohs(w->ip.tot_len) != 20 + dlen || ETH_HLEN + 20 + dlen > skb->len ||
	    dlen < 8 + FDP_DNS_HLEN + 1 + 4)
		return fdp_dns_pass(FDP_DNS_PASS_PACKET);
	dlen -= 8;
	if (bpf_skb_load_bytes(skb, FDP_DNS_OFF, &w->h, sizeof(w->h)) < 0)
		return fdp_dns_pass(FDP_DNS_PASS_PACKET);
	if ((w->h.flags1 & 0xfa) != 0 || w->h.qdcount != bpf_htons(1) || w->h.ancount || w->h.nscount ||
	    bpf_ntohs(w->h.arcount) > 1)
		return fdp_dns_pass(FDP_DNS_PASS_HEADER);   /* QR, opcode, TC: 0xfa; AA ignored */

	qlen = fdp_dns_name_key(skb, dlen, w);
	if (!qlen)
		return fdp_dns_pass(FDP_DNS_PASS_NAME);
	qend = FDP_DNS_HLEN + qlen + 4;
	if (qend > dlen || bpf_skb_load_bytes(skb, FDP_DNS_OFF + qend - 4, qt, sizeof(qt)) < 0)
		return fdp_dns_pass(FDP_DNS_PASS_PACKET);
	if (qt[0] != bpf_htons(FDP_DNS_TYPE_A) || qt[1] != bpf_htons(FDP_DNS_CLASS_IN))
		return fdp_dns_pass(FDP_DNS_PASS_QUESTION);
	rest = dlen - qend;
	max = FDP_DNS_UDP_MIN;
	if (w->h.arcount) {
		/* one OPT record, options of any kind (the userspace server reads none) */
		if (rest < FDP_DNS_OPT_LEN || bpf_skb_load_bytes(skb, FDP_DNS_OFF + qend, w->opt, FDP_DNS_OPT_LEN) < 0)
			return fdp_dns_pass(FDP_DNS_PASS_EDNS);
		if (w->opt[0] != 0 || w->opt[1] != 0 || w->opt[2] != FDP_DNS_TYPE_OPT ||
		    rest != FDP_DNS_OPT_LEN + ((__u32)w->opt[9] << 8 | w->opt[10]))
			return fdp_dns_pass(FDP_DNS_PASS_EDNS);
		t = (__u32)w->opt[3] << 8 | w->opt[4];
		if (t > max)
			max = t;
		edns = 1;
	} else if (rest) {
		return fdp_dns_pass(FDP_DNS_PASS_PACKET);   /* bytes after the question */
	}

	entry = fdp_dns_names.lookup(&w->key);
	if (!entry)
		return fdp_dns_pass(FDP_DNS_PASS_MISS);
	count = entry->count;
	if (count < 1 || count > FDP_DNS_MAX_ADDRS)
		return fdp_dns_pass(FDP_DNS_PASS_MISS);
	out_dlen = qend + count * FDP_DNS_RR_A_LEN + (edns ? FDP_DNS_OPT_LEN : 0);
	if (out_dlen > max)
		return fdp_dns_pass(FDP_DNS_PASS_SIZE);   /* the userspace server truncates */
	__builtin_memcpy(w->addrs, entry->addrs, sizeof(w->addrs));
	w->rr.ttl = bpf_htonl(entry->ttl);
	fdp_dns_shuffle(w->addrs, count);
	/* verifier: as the name's length, the count leaves the shuffle's ways out through memory */
	w->count = count;
	count = *(volatile __u32 *)&w->count;
	if (count < 1 || count > FDP_DNS_MAX_ADDRS)
		return fdp_dns_pass(FDP_DNS_ERROR);

	/* the rewrite: from here on a failure leaves a half-built frame, dropped */
	if (bpf_skb_change_tail(skb, FDP_DNS_OFF + out_dlen, 0) < 0)
		return fdp_dns_pass(FDP_DNS_ERROR);
	w->rr.name = bpf_htons(0xc000 | FDP_DNS_HLEN);
	w->rr.type = bpf_htons(FDP_DNS_TYPE_A);
	w->rr.class = bpf_htons(FDP_DNS_CLASS_IN);
	w->rr.rdlength = bpf_htons(4);
	/* verifier: a constant bound, count ends it early; an opaque index, or LLVM bounds the
	 * loop by count alone, which the verifier cannot see end */
	for (i = 0; i < FDP_DNS_MAX_ADDRS; i++) {
		__u32 j = fdp_opaque_index(i);

		if (j >= count || j >= FDP_DNS_MAX_ADDRS)
			break;
		w->rr.addr = w->addrs[j];
		if (bpf_skb_store_bytes(skb, FDP_DNS_OFF + qend + i * FDP_DNS_RR_A_LEN, &w->rr, sizeof(w->rr), 0) < 0)
			goto broken;
	}
	if (edns) {
		__builtin_memset(w->opt, 0, sizeof(w->opt));
		w->opt[2] = FDP_DNS_TYPE_OPT;
		w->opt[3] = FDP_DNS_EDNS_SIZE >> 8;
		w->opt[4] = FDP_DNS_EDNS_SIZE & 0xff;
		if (bpf_skb_store_bytes(skb, FDP_DNS_OFF + qend + count * FDP_DNS_RR_A_LEN, w->opt, FDP_DNS_OPT_LEN, 0) < 0)
			goto broken;
	}
	w->h.flags1 = 0x84 | (w->h.flags1 & 0x01);   /* QR, AA; RD as asked */
	w->h.flags2 = 0x80;                        /* RA; NOERROR */
	w->h.ancount = bpf_htons(count);
	w->h.arcount = bpf_htons(edns);
	/* UDP: ports swapped, the new length; the checksum is computed last (fdp_dns_udp_csum) */
	t = w->udp.source;
	w->udp.source = w->udp.dest;
	w->udp.dest = t;
	w->udp.len = bpf_htons(8 + out_dlen);
	w->udp.check = 0;
	/* IPv4: addresses swapped, the new length and checksum */
	t = w->ip.saddr;
	w->ip.saddr = w->ip.daddr;
	w->ip.daddr = t;
	w->ip.tot_len = bpf_htons(20 + 8 + out_dlen);
	w->ip.ttl = FDP_DNS_REPLY_TTL;
	w->ip.check = 0;
	w->ip.check = fdp_ip_csum(&w->ip);
	if (bpf_skb_load_bytes(skb, 0, w->macs, sizeof(w->macs)) < 0)
		goto broken;
	__builtin_memcpy(w->swapped, w->macs + 6, 6);
	__builtin_memcpy(w->swapped + 6, w->macs, 6);
	if (bpf_skb_store_bytes(skb, FDP_DNS_OFF, &w->h, sizeof(w->h), 0) < 0 ||
	    bpf_skb_store_bytes(skb, FDP_DNS_UDP_OFF, &w->udp, sizeof(w->udp), 0) < 0 ||
	    bpf_skb_store_bytes(skb, FDP_DNS_IP_OFF, &w->ip, sizeof(w->ip), 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, w->swapped, sizeof(w->swapped), 0) < 0)
		goto broken;
	if (fdp_dns_udp_csum(skb, w, 8 + out_dlen) < 0)
		goto broken;
	fdp_dns_count(FDP_DNS_ANSWERED);
	/* out of the veth it came in by: to the container */
	return fdp_redirect(skb->ifindex);

broken:
	fdp_dns_count(FDP_DNS_ERROR);
	return TC_ACT_SHOT;
}

#endif
