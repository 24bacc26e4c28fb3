/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tlv.h - RFC 8972 section 4: the TLVs after the base packet, as a
 * Session-Reflector answers them.
 *
 * The one C definition of the TLV formats; services/common/wire.py is the
 * Python one, and tests/test_wire_layout.py compares the two.
 *
 * What the reflector does with each type (docs/rfc8972.md):
 *   1 Extra Padding          handled (U=M=0), octets left as they came
 *   2 Location               ports and, per sub-TLV asked for, the source MAC
 *                            and the IPv4 or IPv6 addresses, all as received
 *   3 Timestamp Information  the clock's sync source, kernel software
 *                            timestamps (SW Local) for T2 and T3
 *   4 Class of Service       DSCP and ECN as received; the reply leaves with
 *                            the DSCP the sender asked for (no policy refuses
 *                            one, so RP stays 0)
 *   5 Direct Measurement     the session's receive and transmit counts
 *                            (stateful mode; U=1 when stateless)
 *   anything else            U=1, left as it came (HMAC, 8, included)
 * A TLV whose length runs past the packet or is wrong for its type gets M=1
 * and ends the walk: it and the rest are left as they came (section 4).
 * Octets past the base are taken for TLVs when the first has a non-zero type
 * and the flags every sender must send (0x80) or a length that fits;
 * otherwise they are padding (zeros from RFC 8762 senders).
 */
#ifndef STAMP_TLV_H
#define STAMP_TLV_H

#include "maps.h"		/* stat_inc() */

/* Figure 5: every TLV starts with this header; Length counts the Value only. */
struct stamp_tlv {
	__u8 flags;
	__u8 type;
	__be16 len;
} __attribute__((packed));

/* Figure 6: STAMP TLV Flags; bit 0 of the figure is the most significant. */
#define TLV_U		0x80	/* Unrecognized */
#define TLV_M		0x40	/* Malformed */
#define TLV_I		0x20	/* Integrity check failed (HMAC: not supported) */

/* Table 2: TLV types. */
#define TLV_EXTRA_PADDING	1
#define TLV_LOCATION		2
#define TLV_TIMESTAMP_INFO	3
#define TLV_CLASS_OF_SERVICE	4
#define TLV_DIRECT_MEASUREMENT	5

/* Table 5: Location sub-TLV types the sender asks with, and those answered. */
#define LOC_SRC_MAC		1	/* answered with LOC_SRC_EUI48 */
#define LOC_SRC_EUI48		2
#define LOC_DST_IP		4	/* answered with LOC_DST_IPV4 or LOC_DST_IPV6 */
#define LOC_DST_IPV4		5
#define LOC_DST_IPV6		6
#define LOC_SRC_IP		7	/* answered with LOC_SRC_IPV4 or LOC_SRC_IPV6 */
#define LOC_SRC_IPV4		8
#define LOC_SRC_IPV6		9
#define LOC_MAC_LEN		8	/* section 4.2.1: Length of the MAC sub-TLVs */
#define LOC_IP_LEN		16	/* section 4.2.1: Length of the IP sub-TLVs */

/* Table 7 and Table 9: synchronisation sources and timestamping methods. */
#define SYNC_SRC_NTP		1
#define SYNC_SRC_PTP		2
#define SYNC_SRC_FREE_RUNNING	5
#define TS_METHOD_SW_LOCAL	2	/* T2 and T3 are kernel software timestamps */

/* Section 4.2: Location Value: the ports, then sub-TLVs. */
struct stamp_tlv_location {
	__be16 dst_port;
	__be16 src_port;
} __attribute__((packed));

/* Section 4.3, Figure 11: Timestamp Information Value (before any sub-TLVs). */
struct stamp_tlv_timestamp_info {
	__u8 sync_src_in;
	__u8 ts_in;
	__u8 sync_src_out;
	__u8 ts_out;
} __attribute__((packed));

/* Section 4.4, Figure 12: DSCP1(6) DSCP2(6) ECN(2) RP(2), then 16 reserved bits. */
struct stamp_tlv_cos {
	__be16 bits;
	__be16 reserved;
} __attribute__((packed));
#define COS_LEN			4

/* Section 4.5, Figure 13: Direct Measurement Value. */
struct stamp_tlv_direct {
	__be32 sender_tx;
	__be32 reflector_rx;
	__be32 reflector_tx;
} __attribute__((packed));

/*
 * The walk's bounds, for the verifier (a loop must have a fixed limit):
 * TLV_WALK_MAX TLVs after the base packet are answered; a TLV past them is
 * left as it came, and so carries the U=1 its sender set (section 4: "A
 * Session-Sender MUST set the U flag to 1"). 16 is well above what any
 * test asks for: one TLV of each of the five supported types and padding.
 * LOC_SUB_MAX sub-TLVs of one Location TLV are answered: the three that
 * section 4.2.1 lets a sender ask with, and one more.
 */
#define TLV_WALK_MAX		16
#define LOC_SUB_MAX		4

/* What the walk needs to know about the test packet, taken before it was
 * rewritten, and what it leaves behind. */
struct tlv_ctx {
	__u32 plen;		/* UDP payload length */
	__u32 poff;		/* the UDP payload's offset in the frame (the family's) */
	struct stamp_addr saddr; /* as received; IPv4 ones IPv4-mapped */
	struct stamp_addr daddr;
	__u8 family;		/* 4 or 6 */
	__be16 sport;
	__be16 dport;
	__u8 smac[ETH_ALEN];
	__u8 tos;		/* DSCP and ECN as received (TOS or Traffic Class) */
	__u8 sync_src;		/* Table 7 value, from struct stamp_config */
	__u8 have_counts;	/* stateful: rx and tx below are the session's */
	__u8 set_dscp;		/* out: a Class of Service TLV asked for dscp */
	__u8 dscp;
	__u8 pad;
	__u32 rx;		/* the session's packets received, this one included */
	__u32 tx;		/* and transmitted, this one included */
	__u32 csum;		/* out: the UDP checksum difference of the changes */
};

static __always_inline __u32 csum_add32(__u32 a, __u32 b)
{
	a += b;
	return a + (a < b);
}

/**
 * tlv_put() - write @n octets at UDP payload offset @off, keeping the checksum.
 * @val: the new octets, in a buffer of @n rounded up to 4 and zero padded
 * @n: a constant, at most 20; the octets are within the payload (walk checks)
 *
 * The change is summed with bpf_csum_diff() over the old and new octets,
 * zero padded alike to a multiple of 4 (the padding cancels out). That sum
 * is the change as if @off were even; at an odd offset every octet sits in
 * the other half of its 16-bit word, so the folded sum is byte-swapped
 * (RFC 1071 2(B): the sum is independent of byte order). TLVs after Extra
 * Padding of odd length start at odd offsets.
 * NOTE: bpf_skb_store_bytes() invalidates packet pointers.
 * Return: 0, or -1 when a helper failed (the packet is then not reflected).
 */
static __always_inline int tlv_put(struct __sk_buff *skb, struct tlv_ctx *c, __u32 off,
				   const void *val, const __u32 n)
{
	__u32 old[5] = {};
	__s64 d;
	__u32 s;

	if (bpf_skb_load_bytes(skb, c->poff + off, old, n))
		return -1;
	if (bpf_skb_store_bytes(skb, c->poff + off, (void *)val, n, 0))
		return -1;
	d = bpf_csum_diff(old, (n + 3) & ~3, (__be32 *)val, (n + 3) & ~3, 0);
	if (d < 0)
		return -1;
	s = (__u32)d;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	if (off & 1)
		s = ((s & 0xff) << 8) | (s >> 8);
	c->csum = csum_add32(c->csum, s);
	return 0;
}

/* Write a TLV header with new flags; type and length as they came. */
static __always_inline int tlv_flag(struct __sk_buff *skb, struct tlv_ctx *c, __u32 off,
				    struct stamp_tlv h, __u8 flags)
{
	h.flags = flags;
	if (flags & TLV_U)
		stat_inc(STAT_TLV_UNRECOGNIZED);
	if (flags & TLV_M)
		stat_inc(STAT_TLV_MALFORMED);
	return tlv_put(skb, c, off, &h, sizeof(h));
}

/* Section 4.2.1: answer one sub-TLV asked for; its header is at @off. */
static __always_inline int loc_sub_answer(struct __sk_buff *skb, struct tlv_ctx *c, __u32 off,
					  struct stamp_tlv h)
{
	struct {
		struct stamp_tlv h;
		__u8 v[16];
	} a = {};

	switch (h.type) {
	case LOC_SRC_MAC:
		/* Ethernet source addresses are EUI-48: Figure 9, then 2 MBZ. */
		a.h.type = LOC_SRC_EUI48;
		a.h.len = bpf_htons(LOC_MAC_LEN);
		__builtin_memcpy(a.v, c->smac, ETH_ALEN);
		return tlv_put(skb, c, off, &a, sizeof(a.h) + LOC_MAC_LEN);
	case LOC_DST_IP:
	case LOC_SRC_IP:
		a.h.len = bpf_htons(LOC_IP_LEN);
		if (c->family == 6) {
			/* The 16-octet IPv6 address fills the Value. */
			a.h.type = h.type == LOC_DST_IP ? LOC_DST_IPV6 : LOC_SRC_IPV6;
			__builtin_memcpy(a.v, h.type == LOC_DST_IP ? &c->daddr : &c->saddr, 16);
		} else {
			/* Figure 10: the IPv4 address, then 12 MBZ. */
			a.h.type = h.type == LOC_DST_IP ? LOC_DST_IPV4 : LOC_SRC_IPV4;
			__builtin_memcpy(a.v, h.type == LOC_DST_IP ? &c->daddr.w[3] : &c->saddr.w[3], 4);
		}
		return tlv_put(skb, c, off, &a, sizeof(a.h) + LOC_IP_LEN);
	}
	return tlv_flag(skb, c, off, h, TLV_U);
}

static __always_inline int loc_sub_len_ok(__u8 type, __u32 len)
{
	if (type == LOC_SRC_MAC)
		return len == LOC_MAC_LEN;
	if (type == LOC_DST_IP || type == LOC_SRC_IP)
		return len == LOC_IP_LEN;
	return 1;		/* not ours to judge: flagged U */
}

/**
 * tlv_location() - answer a Location TLV (section 4.2) whose header is at @off.
 * @end: payload offset just past its Value
 * Return: 1 when it is well formed (answered), 0 when malformed, -1 on a
 * helper failure. A malformed sub-TLV gets M=1 (the caller flags the TLV).
 */
static __always_inline int tlv_location(struct __sk_buff *skb, struct tlv_ctx *c, __u32 off,
					__u32 end)
{
	struct stamp_tlv_location ports = { c->dport, c->sport };
	struct stamp_tlv sh;
	__u32 sub = off + sizeof(struct stamp_tlv) + sizeof(ports), send;

	if (end < sub)
		return 0;	/* Length below the two ports */
	if (tlv_put(skb, c, off + sizeof(struct stamp_tlv), &ports, sizeof(ports)))
		return -1;
	for (int i = 0; i < LOC_SUB_MAX; i++) {
		if (sub >= end)
			return 1;
		if (end - sub < sizeof(sh))
			return 0;
		if (bpf_skb_load_bytes(skb, c->poff + sub, &sh, sizeof(sh)))
			return -1;
		send = sub + sizeof(sh) + bpf_ntohs(sh.len);
		if (send > end || !loc_sub_len_ok(sh.type, bpf_ntohs(sh.len))) {
			if (tlv_flag(skb, c, sub, sh, TLV_M))
				return -1;
			return 0;
		}
		if (loc_sub_answer(skb, c, sub, sh))
			return -1;
		sub = send;
	}
	return 1;		/* sub-TLVs past LOC_SUB_MAX are left as they came */
}

/**
 * tlv_answer() - fill in one TLV of a supported type, in bounds; header at @off.
 * Return: the flags to send (0, TLV_U or TLV_M), or -1 on a helper failure.
 */
static __always_inline int tlv_answer(struct __sk_buff *skb, struct tlv_ctx *c, __u32 off,
				      struct stamp_tlv h, __u32 len)
{
	__u32 val = off + sizeof(h);
	int rc;

	switch (h.type) {
	case TLV_EXTRA_PADDING:
		return 0;
	case TLV_LOCATION:
		rc = tlv_location(skb, c, off, val + len);
		return rc < 0 ? -1 : rc ? 0 : TLV_M;
	case TLV_TIMESTAMP_INFO: {
		struct stamp_tlv_timestamp_info ti = {
			c->sync_src, TS_METHOD_SW_LOCAL, c->sync_src, TS_METHOD_SW_LOCAL };

		if (len < sizeof(ti))
			return TLV_M;
		return tlv_put(skb, c, val, &ti, sizeof(ti)) ? -1 : 0;
	}
	case TLV_CLASS_OF_SERVICE: {
		struct stamp_tlv_cos cos = {};
		__u16 bits;

		if (len != COS_LEN)
			return TLV_M;
		if (bpf_skb_load_bytes(skb, c->poff + val, &cos, sizeof(cos)))
			return -1;
		/* Keep DSCP1; DSCP2 and ECN as received; RP 0: permitted. */
		bits = bpf_ntohs(cos.bits) & 0xfc00;
		bits |= (__u16)c->tos << 2;
		cos.bits = bpf_htons(bits);
		cos.reserved = 0;
		c->set_dscp = 1;
		c->dscp = bits >> 10;
		return tlv_put(skb, c, val, &cos, sizeof(cos)) ? -1 : 0;
	}
	case TLV_DIRECT_MEASUREMENT: {
		__be32 counts[2] = { bpf_htonl(c->rx), bpf_htonl(c->tx) };

		if (len != sizeof(struct stamp_tlv_direct))
			return TLV_M;
		if (!c->have_counts)
			return TLV_U;	/* stateless: no session to count */
		return tlv_put(skb, c, val + offsetof(struct stamp_tlv_direct, reflector_rx),
			       counts, sizeof(counts)) ? -1 : 0;
	}
	}
	return TLV_U;
}

/**
 * tlv_walk() - answer the TLVs after the base packet (RFC 8972 section 4).
 *
 * Return: 0, or -1 when a helper failed. c->csum then holds the UDP checksum
 * difference of everything written; c->set_dscp/dscp what a Class of
 * Service TLV asked for.
 */
static __always_inline int tlv_walk(struct __sk_buff *skb, struct tlv_ctx *c)
{
	__u32 off = STAMP_BASE_LEN, len;
	struct stamp_tlv h;
	__u8 first;
	int flags;

	/* TLVs or padding? The first TLV's type is not 0 (Reserved), and it
	 * has the flags a Session-Sender MUST send (section 4: U=1, M=0, I=0,
	 * reserved bits 0), or it fits in the packet (senders that leave the
	 * flags 0, scapy's default, are answered too). Anything else is the
	 * padding of an RFC 8762 or TWAMP-Light sender (zeros, most often) and
	 * goes back as it came (RFC 8762 4.6). */
	if (c->plen - off >= sizeof(h)) {
		if (bpf_skb_load_bytes(skb, c->poff + off, &h, sizeof(h)))
			return -1;
		if (!h.type || (h.flags != TLV_U &&
				bpf_ntohs(h.len) > c->plen - off - sizeof(h)))
			return 0;
	} else {
		if (bpf_skb_load_bytes(skb, c->poff + off, &first, 1))
			return -1;
		if (first != TLV_U)
			return 0;
	}
	for (int i = 0; i < TLV_WALK_MAX; i++) {
		if (off >= c->plen)
			return 0;
		if (c->plen - off < sizeof(h)) {
			/* 1-3 octets: a TLV whose header does not fit. Its first
			 * octet is where its flags would be: M=1 there. */
			__u8 m[4] = {};

			if (bpf_skb_load_bytes(skb, c->poff + off, m, 1))
				return -1;
			m[0] |= TLV_M;
			stat_inc(STAT_TLV_MALFORMED);
			return tlv_put(skb, c, off, m, 1);
		}
		if (bpf_skb_load_bytes(skb, c->poff + off, &h, sizeof(h)))
			return -1;
		len = bpf_ntohs(h.len);
		if (len > c->plen - off - sizeof(h)) {
			/* Runs past the packet: malformed, the walk ends. */
			flags = TLV_M | (h.type >= TLV_EXTRA_PADDING &&
					 h.type <= TLV_DIRECT_MEASUREMENT ? 0 : TLV_U);
			return tlv_flag(skb, c, off, h, flags);
		}
		flags = tlv_answer(skb, c, off, h, len);
		if (flags < 0)
			return -1;
		if (tlv_flag(skb, c, off, h, flags))
			return -1;
		if (flags & TLV_M)
			return 0;	/* section 4: stop, the rest as it came */
		off += sizeof(h) + len;
	}
	return 0;
}

#endif /* STAMP_TLV_H */
