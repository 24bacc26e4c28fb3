/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reflector_egress.c - TC egress: write T3 into the packets we reflected.
 *
 * reflector_ingress.c redirects each reflected packet here and leaves a
 * per-CPU hand-off describing it (either family). The packet that matches it gets the
 * Timestamp T3 (RFC 8762 section 4.3.1: "at the start of transmitting"), the
 * UDP checksum is fixed, and one struct stamp_reflector_event goes to user
 * space. Every other packet, the local sender's test packets included, is
 * left alone.
 *
 * Returns TC_ACT_UNSPEC for every packet: later filters still see it.
 */
#include "reflector_maps.h"

int reflector_egress(struct __sk_buff *skb)
{
	struct stamp_reflector_event *ev;
	struct stamp_reflector_pkt *pkt;
	struct reflect_handoff *h;
	struct stamp_config *cfg;
	struct stamp_ts old, new;
	struct stamp_pkt p;
	__u8 *payload;
	__u32 key = 0;
	__s64 diff;
	__u64 now;

	if (parse_stamp(skb, bpf_htons(STAMP_PORT), 0, &p))
		return TC_ACT_UNSPEC;
	h = handoff.lookup(&key);
	if (!h || !h->valid)
		return TC_ACT_UNSPEC;
	if (p.family != h->family || !stamp_addr_eq(&p.saddr, &h->local_addr) ||
	    !stamp_addr_eq(&p.daddr, &h->sender_addr) || p.dport != h->sender_port ||
	    p.payload_len < STAMP_BASE_LEN)
		return TC_ACT_UNSPEC;
	cfg = config.lookup(&key);
	if (!cfg || stamp_payload(skb, &p, &payload))
		return TC_ACT_UNSPEC;
	pkt = (struct stamp_reflector_pkt *)payload;
	if (pkt->seq != h->seq)
		return TC_ACT_UNSPEC;

	now = bpf_ktime_get_tai_ns();		/* T3 */
	h->valid = 0;
	old = pkt->ts;
	new = stamp_ts_from_tai(now, cfg);
	pkt->ts = new;
	diff = bpf_csum_diff((__be32 *)&old, sizeof(old), (__be32 *)&new, sizeof(new), 0);

	ev = events.ringbuf_reserve(sizeof(*ev));
	if (ev) {
		ev->sender_addr = h->sender_addr;
		ev->local_addr = h->local_addr;
		ev->sender_port = h->sender_port;
		ev->local_port = bpf_htons(STAMP_PORT);
		ev->payload_len = bpf_htons(h->payload_len);
		ev->sender_ttl = h->sender_ttl;
		ev->pad = 0;
		ev->seq = h->sender_seq;
		ev->t1 = h->t1;
		ev->t2 = h->t2;
		ev->t3 = new;
		ev->sender_error_estimate = h->sender_error_estimate;
		ev->error_estimate = cfg->error_estimate;
		/* No wakeup: waking the reader here would delay the packet we just
		 * stamped by the wakeup's cost (~15 us seen on veth); user space
		 * drains the ring on its own schedule (ReflectorService). */
		events.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	} else {
		stat_inc(STAT_RINGBUF_LOST);
	}

	/* NOTE: invalidates the packet pointers; nothing reads them after. */
	bpf_l4_csum_replace(skb, p.family == 6 ? UDP_CSUM_OFF6 : UDP_CSUM_OFF, 0, diff,
			    BPF_F_MARK_MANGLED_0);
	stat_inc(STAT_RECEIVED);
	return TC_ACT_UNSPEC;
}
