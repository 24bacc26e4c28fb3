/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sender_ingress.c - TC ingress: take T4 for replies to our sessions.
 *
 * A reply, over IPv4 or IPv6, from a reflector we measure (sessions map), to
 * the address and port our socket sends that session's test packets from,
 * gets its receive timestamp T4 here (the kernel's receive timestamp of the
 * frame, see stamp_rx_tai(), or the time now), and its first 44 octets go to
 * user space with T4 in one ring buffer record (struct stamp_sender_event).
 *
 * Returns:
 *   TC_ACT_UNSPEC  not a reply of ours: continue with the next filter, e.g.
 *                  the local reflector's, untouched
 *   TC_ACT_SHOT    a reply of ours: consumed here, it has nowhere else to go
 *                  (captures still see it: taps run before TC ingress)
 */
#include "sender_maps.h"

int sender_ingress(struct __sk_buff *skb)
{
	struct stamp_sender_event *ev;
	struct stamp_reflector_pkt *pkt;
	struct stamp_config *cfg;
	struct stamp_addr *ours;
	struct stamp_pkt p;
	__u8 *payload;
	__u32 key = 0, tlv_len;
	int rc;
	__u64 now;

	rc = parse_stamp(skb, bpf_htons(SENDER_DST_PORT), bpf_htons(SENDER_SRC_PORT), &p);
	if (rc) {
		if (rc == PARSE_BAD_IP_CSUM && skb->pkt_type == PACKET_HOST)
			stat_inc(STAT_BAD_CHECKSUM);	/* ip_rcv() will drop it */
		return TC_ACT_UNSPEC;
	}
	if (p.payload_len < STAMP_BASE_LEN || skb->pkt_type != PACKET_HOST)
		return TC_ACT_UNSPEC;
	now = bpf_ktime_get_tai_ns();		/* T4 */
	/* Only replies to our socket: its port (parse_stamp()) and the session's
	 * source address. A reply to another address of this host (or one seen
	 * in promiscuous mode, or spoofed) is not ours to measure. */
	ours = sessions.lookup(&p.saddr);
	if (!ours || stamp_addr_is_any(ours) || !stamp_addr_eq(ours, &p.daddr))
		return TC_ACT_UNSPEC;
	cfg = config.lookup(&key);
	if (!cfg || stamp_payload(skb, &p, &payload))
		return TC_ACT_UNSPEC;

	/* In a mesh the peer's sender uses the same addresses and ports as its
	 * reflector: its test packets (MBZ where a reply has its Receive
	 * Timestamp) are left to the local reflector's filter. */
	pkt = (struct stamp_reflector_pkt *)payload;
	if (!stamp_is_reflection(pkt))
		return TC_ACT_UNSPEC;
	if (!udp_csum_ok(skb, &p)) {
		stat_inc(STAT_BAD_CHECKSUM);
		return TC_ACT_UNSPEC;	/* UDP will discard it, silently */
	}
	/* NOTE: pointers checked again: nothing above changed the packet, but
	 * the verifier is told so only by a fresh bounds check. */
	if (stamp_payload(skb, &p, &payload))
		return TC_ACT_UNSPEC;
	pkt = (struct stamp_reflector_pkt *)payload;

	ev = events.ringbuf_reserve(sizeof(*ev));
	if (!ev) {
		stat_inc(STAT_RINGBUF_LOST);
		return TC_ACT_SHOT;
	}
	ev->reflector_addr = p.saddr;
	ev->local_addr = p.daddr;
	ev->reflector_port = p.sport;
	ev->local_port = p.dport;
	ev->payload_len = bpf_htons(p.payload_len);
	ev->reply_ttl = p.ttl;
	ev->reply_tos = p.tos;
	ev->t4 = stamp_ts_from_tai(stamp_rx_tai(skb, now, cfg), cfg);
	__builtin_memcpy(&ev->pkt, pkt, sizeof(ev->pkt));
	/* RFC 8972 TLVs, for user space to read what the reflector answered. */
	__builtin_memset(ev->tlvs, 0, sizeof(ev->tlvs));
	tlv_len = p.payload_len - STAMP_BASE_LEN;
	if (tlv_len > STAMP_EVENT_TLV_LEN)
		tlv_len = STAMP_EVENT_TLV_LEN;
	/* Verifier workaround, as in udp_csum_ok(): clang's bound check above is
	 * one the verifier cannot follow; the mask after an empty asm is. */
	asm volatile("" : "+r"(tlv_len));
	tlv_len &= 0x7f;
	if (tlv_len && tlv_len <= STAMP_EVENT_TLV_LEN)
		bpf_skb_load_bytes(skb, stamp_payload_off(&p) + STAMP_BASE_LEN, ev->tlvs, tlv_len);
	events.ringbuf_submit(ev, 0);
	stat_inc(STAT_RECEIVED);
	return TC_ACT_SHOT;
}
