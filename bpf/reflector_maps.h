/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reflector_maps.h - maps shared by reflector_ingress.c and reflector_egress.c.
 *
 * Compile-time knobs (bcc cflags, set by services/reflector/bpfprog.py):
 *   STAMP_PORT     the UDP port we reflect on (host order)
 *   RINGBUF_PAGES  size of the event ring buffer, in pages (power of two)
 */
#ifndef STAMP_REFLECTOR_MAPS_H
#define STAMP_REFLECTOR_MAPS_H

#include "parse.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif

/*
 * What ingress tells egress about the packet it just reflected. bpf_redirect()
 * to egress runs the egress hook synchronously on the same CPU, so a per-CPU
 * slot hands the reflected packet over; egress still checks that the packet
 * it sees is the one described before it writes T3.
 */
struct reflect_handoff {
	__be32 sender_addr;
	__be32 local_addr;
	__be16 sender_port;
	__u16 payload_len;
	__be32 seq;
	struct stamp_ts t1;
	struct stamp_ts t2;
	__be16 sender_error_estimate;
	__u8 sender_ttl;
	__u8 valid;
};

/* key: 0; value: runtime settings written by user space. */
BPF_ARRAY(config, struct stamp_config, 1);
/* key: an IPv4 address of the interface (network order); value: 1. */
BPF_HASH(local_addrs, __be32, __u8, 4096);
/* key: 0; value: the packet being reflected on this CPU. */
BPF_PERCPU_ARRAY(handoff, struct reflect_handoff, 1);
/* key: enum stamp_stat; value: per-CPU packet count. */
BPF_PERCPU_ARRAY(stats, __u64, STAT_MAX);
/* struct stamp_reflector_event, one per reflected packet. */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline void stat_inc(int idx)
{
	__u64 *v = stats.lookup(&idx);

	if (v)
		*v += 1;
}

#endif /* STAMP_REFLECTOR_MAPS_H */
