/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sender_maps.h - maps shared by sender_egress.c and sender_ingress.c.
 *
 * Compile-time knobs (bcc cflags, set by services/sender/bpfprog.py):
 *   SENDER_SRC_PORT  our UDP source port (host order)
 *   SENDER_DST_PORT  the reflectors' UDP port (host order)
 *   RINGBUF_PAGES    size of the event ring buffer, in pages (power of two)
 */
#ifndef STAMP_SENDER_MAPS_H
#define STAMP_SENDER_MAPS_H

#include "parse.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif

/* key: 0; value: runtime settings written by user space. */
BPF_ARRAY(config, struct stamp_config, 1);
/* key: reflector IPv4 address (network order); value: 1. One per session. */
BPF_HASH(sessions, __be32, __u8, 65536);
/* key: enum stamp_stat; value: per-CPU packet count. */
BPF_PERCPU_ARRAY(stats, __u64, STAT_MAX);
/* struct stamp_sender_event, one per reply. */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline void stat_inc(int idx)
{
	__u64 *v = stats.lookup(&idx);

	if (v)
		*v += 1;
}

#endif /* STAMP_SENDER_MAPS_H */
