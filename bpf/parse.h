/* SPDX-License-Identifier: Apache-2.0 */
/*
 * parse.h - find a plain IPv4/UDP packet in a TC skb.
 *
 * Everything a STAMP program does starts here, and every packet that is not a
 * STAMP test packet leaves here, so the checks are ordered cheapest first.
 */
#ifndef STAMP_PARSE_H
#define STAMP_PARSE_H

#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
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

#endif /* STAMP_PARSE_H */
