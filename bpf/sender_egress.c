/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sender_egress.c - TC egress: write T1 into our outgoing STAMP test packets.
 *
 * User space sends each test packet with a zero Timestamp; this program writes
 * T1 and the Error Estimate at the last moment before the packet leaves the
 * host (RFC 8762 section 4.2.1), and fixes the UDP checksum incrementally.
 *
 * Returns TC_ACT_UNSPEC for every packet, ours included: the next filter on
 * the interface (Cilium's, say) still sees everything.
 */
#include "sender_maps.h"

int sender_egress(struct __sk_buff *skb)
{
	struct stamp_config *cfg;
	struct stamp_pkt p;
	__u8 *payload;
	__u32 key = 0;
	__s64 diff;
	__u64 now;
	/* Timestamp, Error Estimate and the next two octets (MBZ, or the SSID of
	 * RFC 8972, left as they are): 12 octets, as bpf_csum_diff() wants 4n. */
	struct {
		struct stamp_ts ts;
		__be16 error_estimate;
		__be16 next;
	} old, new;

	if (parse_stamp(skb, bpf_htons(SENDER_SRC_PORT), bpf_htons(SENDER_DST_PORT), &p))
		return TC_ACT_UNSPEC;
	if (p.payload_len < STAMP_BASE_LEN)
		return TC_ACT_UNSPEC;
	cfg = config.lookup(&key);
	if (!cfg)
		return TC_ACT_UNSPEC;
	/* Only our own socket's packets: a packet the local reflector sends back
	 * to a peer has the same ports but no socket (cookie 0). */
	if (bpf_get_socket_cookie(skb) != cfg->sock_cookie)
		return TC_ACT_UNSPEC;
	if (stamp_payload(skb, &p, &payload))
		return TC_ACT_UNSPEC;

	now = bpf_ktime_get_tai_ns();
	__builtin_memcpy(&old, payload + offsetof(struct stamp_sender_pkt, ts), sizeof(old));
	new.ts = stamp_ts_from_tai(now, cfg);
	new.error_estimate = cfg->error_estimate;
	new.next = old.next;
	__builtin_memcpy(payload + offsetof(struct stamp_sender_pkt, ts), &new, sizeof(new));

	diff = bpf_csum_diff((__be32 *)&old, sizeof(old), (__be32 *)&new, sizeof(new), 0);
	/* A zero UDP checksum means "none" on IPv4 and stays zero (MANGLED_0;
	 * over IPv6 the kernel never sends one); with a partial (offloaded)
	 * checksum the helper leaves the field alone. */
	bpf_l4_csum_replace(skb, p.family == 6 ? UDP_CSUM_OFF6 : UDP_CSUM_OFF, 0, diff,
			    BPF_F_MARK_MANGLED_0);
	stat_inc(STAT_STAMPED);
	return TC_ACT_UNSPEC;
}
