/* SPDX-License-Identifier: Apache-2.0 */
/*
 * parse.h - find a plain IPv4/UDP or IPv6/UDP packet in a TC skb.
 *
 * Everything a STAMP program does starts here, and every packet that is not a
 * STAMP test packet leaves here, so the checks are ordered cheapest first.
 * parse_stamp() takes either family and describes the packet the same way
 * for both (struct stamp_pkt); docs/ipv6.md is the contract of the IPv6 path.
 */
#ifndef STAMP_PARSE_H
#define STAMP_PARSE_H

#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>

#include "stamp.h"

/* From include/net/ip.h, which is not UAPI. */
#define IP_MF		0x2000
#define IP_OFFSET	0x1fff

/* Byte offsets of the headers in a frame we accept (IPv4 without options). */
#define L3_OFF		(sizeof(struct ethhdr))
#define L4_OFF		(L3_OFF + sizeof(struct iphdr))
#define PAYLOAD_OFF	(L4_OFF + sizeof(struct udphdr))
#define IP_CSUM_OFF	(L3_OFF + offsetof(struct iphdr, check))
#define UDP_CSUM_OFF	(L4_OFF + offsetof(struct udphdr, check))

/* parse_udp4() return values other than 0. */
#define PARSE_NOT_OURS		-1	/* not a packet for this program: pass it on */
#define PARSE_BAD_IP_CSUM	-2	/* ours by its headers, but the IPv4 header
					 * checksum is wrong: the stack drops it */
#define PARSE_MALFORMED		-3	/* ours by its ports, but the UDP length
					 * disagrees with the IP one, the frame is
					 * truncated, or under TWAMP_LIGHT_MIN_LEN */

/**
 * ip4_csum_ok() - does a 20-octet IPv4 header sum to 0xffff (RFC 791, RFC 1071)?
 *
 * ip_rcv() drops a frame whose header checksum is wrong; TC ingress runs
 * before it, so a program that acted on such a frame would answer what the
 * stack throws away, and a reflector would patch the checksum for its new
 * TTL and send the corruption on. The five 32-bit words are summed here
 * rather than with bpf_csum_diff(): no helper call on the path of every
 * STAMP packet. One's complement sums do not depend on byte order.
 */
static __always_inline int ip4_csum_ok(const struct iphdr *ip)
{
	const __u32 *w = (const __u32 *)ip;
	__u64 s = (__u64)w[0] + w[1] + w[2] + w[3] + w[4];

	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s == 0xffff;
}

struct udp4 {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 payload_len;	/* from the UDP header, checked against the IP header */
};

/**
 * parse_udp4() - point @p at the headers of an IPv4/UDP packet.
 * @skb: the packet
 * @sport: wanted UDP source port in network order, or 0 for any
 * @dport: wanted UDP destination port in network order, or 0 for any
 *
 * Return: 0 when the frame is untagged IPv4 without options, not a fragment,
 * UDP between the wanted ports, with a UDP length that agrees with the IP
 * total length, at least TWAMP_LIGHT_MIN_LEN octets of payload and a valid
 * IPv4 header checksum; PARSE_BAD_IP_CSUM when all holds but the checksum;
 * PARSE_MALFORMED when the ports and the IPv4 header are right but the
 * lengths are not; PARSE_NOT_OURS for anything else. The caller passes all
 * three on untouched; after the two last, @p's header pointers are set (its
 * payload_len is not). The checksum is summed last, so packets of other ports
 * never pay for it.
 */
static __always_inline int parse_udp4(struct __sk_buff *skb, __be16 sport,
				      __be16 dport, struct udp4 *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + L3_OFF;
	struct udphdr *udp = data + L4_OFF;
	__u32 ulen;

	/* Ethernet, a 20-octet IPv4 header and the UDP header are in the linear
	 * area: this one check covers every header field read below. */
	if (data + PAYLOAD_OFF > data_end)
		return PARSE_NOT_OURS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || skb->vlan_present)
		return PARSE_NOT_OURS;
	if (ip->protocol != IPPROTO_UDP)
		return PARSE_NOT_OURS;
	if (dport && udp->dest != dport)
		return PARSE_NOT_OURS;
	if (sport && udp->source != sport)
		return PARSE_NOT_OURS;
	/* IP options would move the UDP header; fragments carry a partial datagram. */
	if (ip->version != 4 || ip->ihl != 5)
		return PARSE_NOT_OURS;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_NOT_OURS;
	p->eth = eth;
	p->ip = ip;
	p->udp = udp;
	ulen = bpf_ntohs(udp->len);
	if (ulen != bpf_ntohs(ip->tot_len) - sizeof(*ip))
		return PARSE_MALFORMED;
	/* The frame must hold the whole datagram the headers announce (it may be
	 * longer: Ethernet padding). IP would drop a truncated one; so do we. */
	if (skb->len < L3_OFF + bpf_ntohs(ip->tot_len))
		return PARSE_MALFORMED;
	if (ulen < sizeof(*udp) + TWAMP_LIGHT_MIN_LEN)
		return PARSE_MALFORMED;
	if (!ip4_csum_ok(ip))
		return PARSE_BAD_IP_CSUM;

	p->payload_len = ulen - sizeof(*udp);
	return 0;
}

/* A frame whose headers and first STAMP_BASE_LEN payload octets are linear. */
struct stamp_frame {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	__u8 *payload;
};

/**
 * stamp_frame() - point @f at a frame's headers and its 44-octet STAMP base.
 *
 * Call after parse_udp4() has accepted the frame and the payload is known to
 * be at least STAMP_BASE_LEN long. Return: 0, or -1 when the payload cannot
 * be made linear. NOTE: bpf_skb_pull_data() invalidates every packet pointer
 * taken before, so parse_udp4()'s pointers must not be used after this.
 */
static __always_inline int stamp_frame(struct __sk_buff *skb, struct stamp_frame *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + PAYLOAD_OFF + STAMP_BASE_LEN > data_end) {
		/* Non-linear skb (GRO, paged frags): pull the base packet in. */
		if (bpf_skb_pull_data(skb, PAYLOAD_OFF + STAMP_BASE_LEN))
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	/* Headers and the 44-octet base are linear: covers every access via @f. */
	if (data + PAYLOAD_OFF + STAMP_BASE_LEN > data_end)
		return -1;
	f->eth = data;
	f->ip = data + L3_OFF;
	f->udp = data + L4_OFF;
	f->payload = data + PAYLOAD_OFF;
	return 0;
}

/**
 * stamp_csum_replace2() - fix an RFC 1071 checksum for one changed 16-bit word.
 *
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). One's complement sums do not
 * depend on byte order, so the words are used as they sit in the packet.
 * Used for the IPv4 header, which never has a partial (offloaded) checksum.
 */
static __always_inline void stamp_csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	__u32 s = (__u16)~*sum + (__u16)~from + (__u16)to;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*sum = (__sum16)~s;
}

/* Byte offsets in an IPv6 frame we accept: UDP right after the fixed
 * 40-octet header (no extension header is walked). */
#define L4_OFF6		(L3_OFF + sizeof(struct ipv6hdr))
#define PAYLOAD_OFF6	(L4_OFF6 + sizeof(struct udphdr))
#define UDP_CSUM_OFF6	(L4_OFF6 + offsetof(struct udphdr, check))

static __always_inline int stamp_in6_v4mapped(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1]) == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0xffff);
}

/**
 * parse_udp6() - the IPv6 twin of parse_udp4(): point @ip6 and @udph at the headers.
 *
 * Return: 0 when the frame is untagged IPv6 whose Next Header is UDP
 * (any extension header, a fragment header included, makes it foreign: STAMP
 * senders send none, and walking them would cost every IPv6 packet a loop),
 * between the wanted ports, with no IPv4-mapped address, a UDP length equal
 * to the Payload Length (a jumbogram's 0 never is), the whole datagram in the
 * frame and at least TWAMP_LIGHT_MIN_LEN octets of payload; PARSE_MALFORMED
 * when all holds but the lengths (@ip6 and @udph are set then);
 * PARSE_NOT_OURS for anything else. The UDP checksum, mandatory over IPv6,
 * is checked by udp_csum_ok().
 */
static __always_inline int parse_udp6(struct __sk_buff *skb, __be16 sport,
				      __be16 dport, struct ipv6hdr **ip6, struct udphdr **udph)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip = data + L3_OFF;
	struct udphdr *udp = data + L4_OFF6;
	__u32 ulen;

	/* Ethernet, the fixed IPv6 header and the UDP header are linear: this
	 * one check covers every header field read below. */
	if (data + PAYLOAD_OFF6 > data_end)
		return PARSE_NOT_OURS;
	if (eth->h_proto != bpf_htons(ETH_P_IPV6) || skb->vlan_present)
		return PARSE_NOT_OURS;
	if (ip->nexthdr != IPPROTO_UDP)
		return PARSE_NOT_OURS;
	if (dport && udp->dest != dport)
		return PARSE_NOT_OURS;
	if (sport && udp->source != sport)
		return PARSE_NOT_OURS;
	if (ip->version != 6)
		return PARSE_NOT_OURS;
	/* An IPv4-mapped address (::ffff:a.b.c.d) never travels in an IPv6
	 * header (RFC 4291 2.5.5.2); the maps key IPv4 addresses that way, so
	 * such a packet must not pass for an IPv4 peer's. */
	if (stamp_in6_v4mapped(&ip->saddr) || stamp_in6_v4mapped(&ip->daddr))
		return PARSE_NOT_OURS;
	*ip6 = ip;
	*udph = udp;
	ulen = bpf_ntohs(udp->len);
	if (ulen != bpf_ntohs(ip->payload_len))
		return PARSE_MALFORMED;
	if (skb->len < L4_OFF6 + ulen)
		return PARSE_MALFORMED;
	if (ulen < sizeof(*udp) + TWAMP_LIGHT_MIN_LEN)
		return PARSE_MALFORMED;
	return 0;
}

/* A STAMP packet of either family, as the programs use it. */
struct stamp_pkt {
	struct stamp_addr saddr;	/* IPv4 ones IPv4-mapped (stamp.h) */
	struct stamp_addr daddr;
	__be16 sport;
	__be16 dport;
	__u16 payload_len;	/* UDP payload, checked against the IP header */
	__u16 check;		/* the UDP checksum field */
	__u8 family;		/* 4 or 6 */
	__u8 ttl;		/* IPv4 TTL or IPv6 Hop Limit */
	__u8 tos;		/* IPv4 TOS or IPv6 Traffic Class: DSCP and ECN */
	__u8 smac[ETH_ALEN];	/* the Ethernet source */
	__u8 pad[3];
};

static __always_inline void stamp_addr_v4(struct stamp_addr *a, __be32 v4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0xffff);
	a->w[3] = v4;
}

static __always_inline int stamp_addr_eq(const struct stamp_addr *a, const struct stamp_addr *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] &&
	       a->w[3] == b->w[3];
}

/* The unspecified address of either family (:: or ::ffff:0.0.0.0). */
static __always_inline int stamp_addr_is_any(const struct stamp_addr *a)
{
	return !(a->w[0] | a->w[1] | a->w[3]) && (!a->w[2] || a->w[2] == bpf_htonl(0xffff));
}

/* The Traffic Class of an IPv6 header: the 8 bits after the version. */
static __always_inline __u8 ip6_tclass(const struct ipv6hdr *ip6)
{
	return (__u8)(bpf_ntohs(*(const __be16 *)ip6) >> 4);
}

/**
 * parse_stamp() - parse_udp4() or parse_udp6(), by EtherType, and fill in @p.
 *
 * Return: as parse_udp4(), for either family; after PARSE_MALFORMED only
 * @p's addresses are set. One EtherType check sends each frame to its
 * family's parser, so neither family pays for the other.
 */
static __always_inline int parse_stamp(struct __sk_buff *skb, __be16 sport, __be16 dport,
				       struct stamp_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6;
	struct udphdr *udp;
	struct udp4 p4;
	int rc;

	if (data + L3_OFF > data_end)
		return PARSE_NOT_OURS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		rc = parse_udp4(skb, sport, dport, &p4);
		if (rc == PARSE_NOT_OURS)
			return rc;
		/* Verifier: p4's pointers are set for every other value. */
		stamp_addr_v4(&p->saddr, p4.ip->saddr);
		stamp_addr_v4(&p->daddr, p4.ip->daddr);
		if (rc)
			return rc;
		p->sport = p4.udp->source;
		p->dport = p4.udp->dest;
		p->payload_len = p4.payload_len;
		p->check = p4.udp->check;
		p->family = 4;
		p->ttl = p4.ip->ttl;
		p->tos = p4.ip->tos;
		__builtin_memcpy(p->smac, p4.eth->h_source, ETH_ALEN);
		return 0;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IPV6))
		return PARSE_NOT_OURS;
	rc = parse_udp6(skb, sport, dport, &ip6, &udp);
	if (rc == PARSE_NOT_OURS)
		return rc;
	__builtin_memcpy(&p->saddr, &ip6->saddr, sizeof(p->saddr));
	__builtin_memcpy(&p->daddr, &ip6->daddr, sizeof(p->daddr));
	if (rc)
		return rc;
	p->sport = udp->source;
	p->dport = udp->dest;
	p->payload_len = bpf_ntohs(udp->len) - sizeof(*udp);
	p->check = udp->check;
	p->family = 6;
	p->ttl = ip6->hop_limit;
	p->tos = ip6_tclass(ip6);
	__builtin_memcpy(p->smac, eth->h_source, ETH_ALEN);
	return 0;
}

/* Where a family's UDP header and payload start in the frames we accept. */
static __always_inline __u32 stamp_l4_off(const struct stamp_pkt *p)
{
	return p->family == 6 ? L4_OFF6 : L4_OFF;
}

static __always_inline __u32 stamp_payload_off(const struct stamp_pkt *p)
{
	return p->family == 6 ? PAYLOAD_OFF6 : PAYLOAD_OFF;
}

/* An IPv6 frame whose headers and first STAMP_BASE_LEN payload octets are linear. */
struct stamp_frame6 {
	struct ethhdr *eth;
	struct ipv6hdr *ip6;
	struct udphdr *udp;
	__u8 *payload;
};

/* stamp_frame() for IPv6; the same NOTE on bpf_skb_pull_data() applies. */
static __always_inline int stamp_frame6(struct __sk_buff *skb, struct stamp_frame6 *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + PAYLOAD_OFF6 + STAMP_BASE_LEN > data_end) {
		if (bpf_skb_pull_data(skb, PAYLOAD_OFF6 + STAMP_BASE_LEN))
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	/* Headers and the 44-octet base are linear: covers every access via @f. */
	if (data + PAYLOAD_OFF6 + STAMP_BASE_LEN > data_end)
		return -1;
	f->eth = data;
	f->ip6 = data + L3_OFF;
	f->udp = data + L4_OFF6;
	f->payload = data + PAYLOAD_OFF6;
	return 0;
}

/**
 * stamp_payload() - point @payload at the 44-octet base of a packet that
 * parse_stamp() accepted, linear (pulled in if need be).
 * Return: 0, or -1 when it cannot be made linear.
 * NOTE: as stamp_frame(): earlier packet pointers are invalid after it.
 */
static __always_inline int stamp_payload(struct __sk_buff *skb, const struct stamp_pkt *p,
					 __u8 **payload)
{
	struct stamp_frame6 f6;
	struct stamp_frame f;

	if (p->family == 6) {
		if (stamp_frame6(skb, &f6))
			return -1;
		*payload = f6.payload;
		return 0;
	}
	if (stamp_frame(skb, &f))
		return -1;
	*payload = f.payload;
	return 0;
}

#endif /* STAMP_PARSE_H */
