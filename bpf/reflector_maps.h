/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reflector_maps.h - maps shared by reflector_ingress.c and reflector_egress.c.
 *
 * Compile-time knobs (bcc cflags, set by services/reflector/datapath.py):
 *   STAMP_PORT     the UDP port we reflect on (host order)
 *   STAMP_STATEFUL, STAMP_MAX_SESSIONS: see reflector_sessions.h
 * The ring buffer carries struct stamp_reflector_event, one per reflection.
 */
#ifndef STAMP_REFLECTOR_MAPS_H
#define STAMP_REFLECTOR_MAPS_H

#include "maps.h"
#include "tlv.h"
#include "reflector_sessions.h"

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
	__be32 seq;			/* the reflected Sequence Number */
	__be32 sender_seq;
	struct stamp_ts t1;
	struct stamp_ts t2;
	__be16 sender_error_estimate;
	__u8 sender_ttl;
	__u8 valid;
};

/* key: an IPv4 address of the interface (network order); value: 1. */
BPF_HASH(local_addrs, __be32, __u8, 4096);
/* key: 0; value: the packet being reflected on this CPU. */
BPF_PERCPU_ARRAY(handoff, struct reflect_handoff, 1);

#endif /* STAMP_REFLECTOR_MAPS_H */
