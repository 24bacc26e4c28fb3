/* SPDX-License-Identifier: Apache-2.0 */
/*
 * maps.h - the maps every stamp-bpf service has: settings, counters, records.
 *
 * bcc rewrites map accesses only in its main source, so the loader
 * (services/common/bpfprog.py) joins this file, the service's own maps
 * header and its programs into one source; the #includes below then find
 * their guards already defined, and each file still reads on its own.
 *
 * Compile-time knob: RINGBUF_PAGES, the ring buffer's size in pages (2^n).
 */
#ifndef STAMP_MAPS_H
#define STAMP_MAPS_H

#include "parse.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif

/* key: 0; value: runtime settings written by user space. */
BPF_ARRAY(config, struct stamp_config, 1);
/* key: enum stamp_stat; value: per-CPU packet count. */
BPF_PERCPU_ARRAY(stats, __u64, STAT_MAX);
/* The service's records to user space (struct stamp_*_event). */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

/* key: 0; value: scratch space for udp_csum_ok(), one per CPU. */
#define CSUM_CHUNK	256		/* octets summed per step */
#define CSUM_CHUNKS	36		/* datagrams up to 9216 octets (jumbo frames) */
struct csum_scratch {
	__u32 w[2 * CSUM_CHUNK / 4];	/* twice a step: see the masks below */
};
BPF_PERCPU_ARRAY(csum_scratch, struct csum_scratch, 1);

/**
 * csum_partial_probe() - is the skb's UDP checksum a partial (offloaded) one?
 * @csum_off: the offset of its UDP checksum field (the family's)
 * @check: its UDP checksum field as read
 *
 * A local sender on a veth with TX checksum offload leaves only the folded
 * pseudo-header sum in the field (CHECKSUM_PARTIAL), which the kernel's UDP
 * accepts; the same field value on any other frame is a wrong checksum. TC
 * programs cannot read skb->ip_summed (bcc 0.26 has no kfuncs), but
 * bpf_l4_csum_replace() tells: without BPF_F_PSEUDO_HDR it leaves the field
 * of a CHECKSUM_PARTIAL skb alone and changes any other's
 * (inet_proto_csum_replace4()). The field is then written back as it was;
 * skb->csum is touched by neither call, so the frame leaves as it came.
 * Only called when the field equals the pseudo-header sum: one frame in
 * 65,536 with a full checksum, and every offloaded one.
 * NOTE: invalidates the caller's packet pointers.
 * Return: 1 when partial, 0 otherwise (also when a helper fails: the full
 * sum decides then).
 */
static __always_inline int csum_partial_probe(struct __sk_buff *skb, __u32 csum_off,
					      __u16 check)
{
	__u16 after;

	if (bpf_l4_csum_replace(skb, csum_off, 0, bpf_htons(1), 2))
		return 0;
	if (bpf_skb_load_bytes(skb, csum_off, &after, sizeof(after)))
		return 0;
	if (after == check)
		return 1;
	bpf_skb_store_bytes(skb, csum_off, &check, sizeof(check), 0);
	return 0;
}

/**
 * udp_csum_ok() - does a datagram's UDP checksum hold (RFC 768, RFC 1071)?
 * @skb: the frame, already accepted by parse_stamp()
 * @p: what parse_stamp() found: addresses, UDP length and checksum field
 *
 * TC ingress runs before UDP, which would "silently discard" a datagram
 * whose checksum is wrong (RFC 1122 4.1.3.4); we must not reflect or
 * measure one either. Over IPv6 the checksum is mandatory and a receiver
 * discards a zero one (RFC 8200 section 8.1): zero fails there. The
 * pseudo-header is RFC 768's over IPv4 (12 octets) and RFC 8200 8.1's over
 * IPv6 (both addresses, the length, the Next Header: 40 octets).
 * Zero passes over IPv4 (no checksum); frames the NIC verified
 * (CHECKSUM_UNNECESSARY) pass; so does a partial checksum offloaded by a
 * local sender (veth with TX offload on), as the kernel's UDP accepts it,
 * but only when the skb really is CHECKSUM_PARTIAL (csum_partial_probe()):
 * a frame whose field merely equals the pseudo-header sum is summed in full.
 * Otherwise the RFC 1071 sum of pseudo-header, header (with the field) and
 * data must be 0xffff, one's complement -0. A sender whose computed checksum
 * is 0 sends 0xffff (RFC 768): it sums to 0xffff the same way; the sum of a
 * pseudo-header (protocol 17) is never +0, so 0x0000 never passes.
 * NOTE: may invalidate the caller's packet pointers (csum_partial_probe()).
 * Return: 1 when the checksum holds or cannot be checked, 0 when it is wrong.
 */
static __always_inline int udp_csum_ok(struct __sk_buff *skb, const struct stamp_pkt *p)
{
	__u32 ulen = p->payload_len + sizeof(struct udphdr), l4_off = L4_OFF;
	__u16 check = p->check;
	__be32 pseudo[10];
	struct csum_scratch *buf;
	__u32 key = 0, sum, partial, len, words, tail;
	__s64 s;

	if (!check)
		return p->family == 4;
	if (bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY) >= 0)
		return 1;
	if (ulen > CSUM_CHUNK * CSUM_CHUNKS)
		return 1;
	buf = csum_scratch.lookup(&key);
	if (!buf)
		return 1;
	if (p->family == 6) {
		__builtin_memcpy(pseudo, &p->saddr, 16);
		__builtin_memcpy(pseudo + 4, &p->daddr, 16);
		pseudo[8] = bpf_htonl(ulen);
		pseudo[9] = bpf_htonl(IPPROTO_UDP);
		s = bpf_csum_diff(NULL, 0, pseudo, 40, 0);
		l4_off = L4_OFF6;
	} else {
		pseudo[0] = p->saddr.w[3];
		pseudo[1] = p->daddr.w[3];
		pseudo[2] = bpf_htonl((IPPROTO_UDP << 16) | ulen);
		s = bpf_csum_diff(NULL, 0, pseudo, 12, 0);
	}
	if (s < 0)
		return 1;
	partial = (__u32)s;
	partial = (partial & 0xffff) + (partial >> 16);
	partial = (partial & 0xffff) + (partial >> 16);
	if ((__u16)partial == check &&
	    csum_partial_probe(skb, l4_off + offsetof(struct udphdr, check), check))
		return 1;		/* offloaded partial checksum */
	sum = (__u32)s;
	for (int i = 0; i < CSUM_CHUNKS; i++) {
		__u32 off = i * CSUM_CHUNK;

		if (off >= ulen)
			break;
		len = ulen - off;
		if (len > CSUM_CHUNK)
			len = CSUM_CHUNK;
		/* Verifier workaround: "R4 min value is negative, either use
		 * unsigned or 'var &= const'": clang turns the bound check above
		 * into one the verifier cannot follow, so the lengths are masked
		 * after an empty asm that stops clang from dropping the masks. */
		asm volatile("" : "+r"(len));
		words = len & (2 * CSUM_CHUNK - 4);	/* whole 32-bit words */
		tail = len & 3;
		if (words) {
			if (bpf_skb_load_bytes(skb, l4_off + off, buf, words))
				return 1;
			s = bpf_csum_diff(NULL, 0, (__be32 *)buf, words, sum);
			if (s < 0)
				return 1;
			sum = (__u32)s;
		}
		if (tail) {
			/* The odd end is summed as if padded with zeros (RFC 1071).
			 * It goes to a fixed place: a variable offset into a map
			 * value needs CAP_PERFMON, which the services do without. */
			buf->w[0] = 0;
			if (bpf_skb_load_bytes(skb, l4_off + off + words, buf, tail))
				return 1;
			s = bpf_csum_diff(NULL, 0, (__be32 *)buf, 4, sum);
			if (s < 0)
				return 1;
			sum = (__u32)s;
		}
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum == 0xffff;
}

static __always_inline void stat_inc(int idx)
{
	__u64 *v = stats.lookup(&idx);

	if (v)
		*v += 1;
}

#endif /* STAMP_MAPS_H */
