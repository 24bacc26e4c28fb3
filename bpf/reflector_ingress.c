/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reflector_ingress.c - TC ingress: reflect STAMP test packets in the kernel.
 *
 * A test packet to one of the interface's addresses on STAMP_PORT gets its
 * receive timestamp T2 (the kernel's receive timestamp of the frame, see
 * stamp_rx_tai(), or the time now), is rewritten in place into the Session-Reflector
 * format (RFC 8762 section 4.3.1, the SSID copied as RFC 8972 section 3 says),
 * addressed back to its sender with IP TTL or IPv6 Hop Limit 255 (RFC 5357
 * section 4.2) and sent out of the same interface, where reflector_egress.c
 * writes T3. IPv4 and IPv6 take the same path (parse_stamp()); only the
 * header rewrites differ, in the *4 and *6 functions below.
 * Stateless (default), the Sequence Number is the sender's; stateful
 * (STAMP_STATEFUL), the session's own count (reflector_sessions.h).
 * The TLVs after the 44-octet base are answered in place (RFC 8972 section
 * 4, tlv.h), so the reply has the request's size (RFC 8762 4.6); a shorter
 * TWAMP-Light packet (14..43 octets) is not reflected, since its reply
 * would be larger than itself (amplification; docs/security.md).
 * Only senders on the allow-list are answered, each within its rate limit
 * (guard.h); nothing is sent where no reply may go (guard_bad_source()).
 *
 * Returns:
 *   TC_ACT_UNSPEC    not reflected: continue with the next filter and the
 *                    stack, untouched (not a test packet for us, or refused
 *                    and counted: not allowed, a bad source, too short,
 *                    malformed, a bad checksum, the loop guard; the local
 *                    sender's replies never reach here: its filter runs first,
 *                    and the loop guard catches them anyway)
 *   TC_ACT_SHOT      a test packet of an allowed sender over its rate limit:
 *                    dropped, since passed on it would make the host answer
 *                    the (maybe spoofed) source with an ICMP error
 *   TC_ACT_REDIRECT  reflected: out of this interface's egress
 */
#include "reflector_maps.h"

/**
 * set_dscp() - send the reply with DSCP @dscp (RFC 8972 4.4: Class of Service).
 * @tos: the TOS octet as received; its ECN bits are kept.
 * Fixes the IPv4 header checksum for the word holding version/IHL and TOS.
 * Return: 0, or -1 if the kernel refused.
 */
static __always_inline int set_dscp(struct __sk_buff *skb, __u8 tos, __u8 dscp)
{
	__u8 new_tos = (dscp << 2) | (tos & 3);
	__be16 from = bpf_htons(0x4500 | tos), to = bpf_htons(0x4500 | new_tos);

	if (bpf_skb_store_bytes(skb, L3_OFF + offsetof(struct iphdr, tos), &new_tos, 1, 0))
		return -1;
	return bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, 2) ? -1 : 0;
}

/* set_dscp() for IPv6: the Traffic Class straddles the first two octets
 * (version, Traffic Class, Flow Label); no checksum covers it. */
static __always_inline int set_dscp6(struct __sk_buff *skb, __u8 tclass, __u8 dscp)
{
	__u16 w = 0x6000 | (((dscp << 2) | (tclass & 3)) << 4);
	__be16 word;
	__u8 old[2];

	if (bpf_skb_load_bytes(skb, L3_OFF, old, 2))
		return -1;
	word = bpf_htons(w | (old[1] & 0x0f));	/* the Flow Label's first 4 bits kept */
	return bpf_skb_store_bytes(skb, L3_OFF, &word, 2, 0) ? -1 : 0;
}

/* The reply goes back the way the request came: MACs and UDP ports swapped. */
static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
}

static __always_inline void swap_ports(struct udphdr *udp)
{
	__be16 port = udp->source;

	udp->source = udp->dest;
	udp->dest = port;
}

/**
 * turn_around4() - address an IPv4 frame back to its sender: MACs, addresses
 * and ports swapped, which leaves both checksums as they are; TTL 255, which
 * changes the IP header's. Return: 0, or -1 when the headers are not linear
 * (they are: the caller made the payload so).
 */
static __always_inline int turn_around4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + L3_OFF;
	struct udphdr *udp = data + L4_OFF;
	__be32 addr;
	__be16 ttl_word;

	if (data + PAYLOAD_OFF > data_end)
		return -1;
	swap_macs(eth);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	swap_ports(udp);
	ttl_word = *(__be16 *)&ip->ttl;		/* TTL and protocol share a word */
	ip->ttl = 255;
	stamp_csum_replace2(&ip->check, ttl_word, *(__be16 *)&ip->ttl);
	return 0;
}

/* turn_around4() for IPv6: Hop Limit 255; no header checksum, and the
 * swapped addresses leave the UDP pseudo-header's sum as it was. */
static __always_inline int turn_around6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + L3_OFF;
	struct udphdr *udp = data + L4_OFF6;
	struct in6_addr addr;

	if (data + PAYLOAD_OFF6 > data_end)
		return -1;
	swap_macs(eth);
	addr = ip6->saddr;
	ip6->saddr = ip6->daddr;
	ip6->daddr = addr;
	swap_ports(udp);
	ip6->hop_limit = 255;
	return 0;
}

int reflector_ingress(struct __sk_buff *skb)
{
	struct stamp_reflector_pkt old, new;
	struct stamp_sender_pkt *req = (struct stamp_sender_pkt *)&old;
	struct reflect_handoff *h;
	struct stamp_config *cfg;
	struct guard_config *g;
	struct guard_addr src;
	struct tlv_ctx tc;
	struct stamp_pkt p;
	__u8 *payload;
	__u32 key = 0, plen;
	int rc;
	__s64 diff;
	__u64 now;

	rc = parse_stamp(skb, 0, bpf_htons(STAMP_PORT), &p);
	if (rc) {
		if (rc == PARSE_BAD_IP_CSUM && skb->pkt_type == PACKET_HOST)
			stat_inc(STAT_BAD_CHECKSUM);	/* ip_rcv() will drop it */
		else if (rc == PARSE_MALFORMED && skb->pkt_type == PACKET_HOST &&
			 is_reflect_addr(&p.daddr))
			stat_inc(STAT_MALFORMED);	/* the stack will drop it */
		return TC_ACT_UNSPEC;
	}
	/* Only frames addressed to this host: not broadcast, multicast or another
	 * host's MAC seen in promiscuous mode (the stack would drop those), and
	 * only to the interface's own addresses (not a subnet broadcast). */
	if (skb->pkt_type != PACKET_HOST)
		return TC_ACT_UNSPEC;
	if (!is_reflect_addr(&p.daddr))
		return TC_ACT_UNSPEC;
	g = guard_config.lookup(&key);
	if (!g)
		return TC_ACT_UNSPEC;
	/* Whom we answer, cheapest first: no checksum is summed for a refusal.
	 * Where no reply may go comes before the allow-list: it holds whatever
	 * the list says (and is the cheaper test). */
	if (guard_bad_source(g, &p, local_addrs.lookup(&p.saddr))) {
		stat_inc(STAT_BAD_SOURCE);
		return TC_ACT_UNSPEC;
	}
	__builtin_memcpy(&src, &p.saddr, sizeof(src));	/* the same 16 octets */
	if (!guard_allows(g, &src)) {
		stat_inc(STAT_NOT_ALLOWED);
		return TC_ACT_UNSPEC;	/* the stack and its firewall decide */
	}
	plen = p.payload_len;
	if (plen < STAMP_BASE_LEN) {
		stat_inc(STAT_TOO_SHORT);	/* a reply would be larger than it */
		return TC_ACT_UNSPEC;
	}
	now = bpf_ktime_get_tai_ns();		/* T2 */
	if (!udp_csum_ok(skb, &p)) {
		stat_inc(STAT_BAD_CHECKSUM);
		return TC_ACT_UNSPEC;	/* UDP will discard it, silently */
	}
	cfg = config.lookup(&key);
	h = handoff.lookup(&key);
	if (!cfg || !h)
		return TC_ACT_UNSPEC;
	if (stamp_payload(skb, &p, &payload))
		return TC_ACT_UNSPEC;
	__builtin_memcpy(&old, payload, sizeof(old));

	if (p.sport == bpf_htons(STAMP_PORT) && stamp_is_reflection(&old)) {
		/* Loop guard: reflecting a reflection from a peer's reflector would
		 * bounce one packet between two reflectors for ever (both on port
		 * 862, the peer's sender gone). */
		stat_inc(STAT_LOOP_GUARD);
		return TC_ACT_UNSPEC;
	}
	/* Last: only a packet about to be reflected takes a token. */
	if (!guard_rate_ok(g, &src)) {
		stat_inc(STAT_RATE_LIMITED);
		return TC_ACT_SHOT;
	}

	/* Zeroed here, not where declared: the frames that leave above never
	 * pay for it. */
	__builtin_memset(&new, 0, sizeof(new));
	__builtin_memset(&tc, 0, sizeof(tc));
	tc.plen = plen;
#if STAMP_STATEFUL
	{
		struct stamp_session_key sk = {
			.sender_addr = p.saddr, .reflector_addr = p.daddr,
			.sender_port = p.sport, .reflector_port = p.dport,
			.ssid = req->ssid,
		};
		__s64 seq = session_step(&sk, now, cfg, &tc.rx, &tc.tx);

		if (seq < 0)
			return TC_ACT_UNSPEC;
		new.seq = bpf_htonl((__u32)seq);
		tc.have_counts = 1;
	}
#else
	new.seq = req->seq;
#endif

	/* The Session-Reflector packet, Figure 5. Timestamp (T3) is written at
	 * egress; the MBZ fields stay zero from the memset. */
	new.ssid = req->ssid;
	new.error_estimate = cfg->error_estimate;
	new.rx_ts = stamp_ts_from_tai(stamp_rx_tai(skb, now, cfg), cfg);
	new.sender_seq = req->seq;
	new.sender_ts = req->ts;
	new.sender_error_estimate = req->error_estimate;
	new.sender_ttl = p.ttl;		/* RFC 8762 4.3.1: TTL or Hop Limit received */
	__builtin_memcpy(payload, &new, sizeof(new));
	diff = bpf_csum_diff((__be32 *)&old, sizeof(old), (__be32 *)&new, sizeof(new), 0);

	/* What the TLVs report is the packet as it came in. */
	tc.poff = stamp_payload_off(&p);
	tc.saddr = p.saddr;
	tc.daddr = p.daddr;
	tc.family = p.family;
	tc.sport = p.sport;
	tc.dport = p.dport;
	__builtin_memcpy(tc.smac, p.smac, ETH_ALEN);
	tc.tos = p.tos;
	tc.sync_src = cfg->sync_src;

	/* Back to the sender. NOTE: the packet pointers are taken anew there. */
	if (p.family == 6 ? turn_around6(skb) : turn_around4(skb))
		return TC_ACT_UNSPEC;

	h->valid = 0;		/* set again once the packet is ready */
	h->sender_addr = p.saddr;
	h->local_addr = p.daddr;
	h->sender_port = p.sport;
	h->family = p.family;
	h->payload_len = plen;
	h->seq = new.seq;
	h->sender_seq = new.sender_seq;
	h->t1 = new.sender_ts;
	h->t2 = new.rx_ts;
	h->sender_error_estimate = new.sender_error_estimate;
	h->sender_ttl = new.sender_ttl;
	/* NOTE: the TLV walk and everything after it invalidate packet pointers. */
	if (tc.plen > STAMP_BASE_LEN && tlv_walk(skb, &tc))
		return TC_ACT_UNSPEC;
	if (tc.set_dscp && (p.family == 6 ? set_dscp6(skb, tc.tos, tc.dscp)
					  : set_dscp(skb, tc.tos, tc.dscp)))
		return TC_ACT_UNSPEC;
	h->valid = 1;
	bpf_l4_csum_replace(skb, p.family == 6 ? UDP_CSUM_OFF6 : UDP_CSUM_OFF, 0,
			    csum_add32((__u32)diff, tc.csum), BPF_F_MARK_MANGLED_0);
	stat_inc(STAT_STAMPED);
	return bpf_redirect(skb->ifindex, 0);
}
