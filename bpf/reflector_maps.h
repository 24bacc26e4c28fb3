/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reflector_maps.h - maps shared by reflector_ingress.c and reflector_egress.c.
 *
 * Compile-time knobs (bcc cflags, set by services/reflector/datapath.py):
 *   STAMP_PORT     the UDP port we reflect on (host order)
 *   STAMP_STATEFUL, STAMP_MAX_SESSIONS: see reflector_sessions.h
 *   GUARD_RATE_SOURCES: see guard.h
 * The ring buffer carries struct stamp_reflector_event, one per reflection.
 */
#ifndef STAMP_REFLECTOR_MAPS_H
#define STAMP_REFLECTOR_MAPS_H

#include "maps.h"
#include "tlv.h"
#include "reflector_sessions.h"
#include "guard.h"

/*
 * What ingress tells egress about the packet it just reflected. bpf_redirect()
 * to egress runs the egress hook synchronously on the same CPU, so a per-CPU
 * slot hands the reflected packet over; egress still checks that the packet
 * it sees is the one described before it writes T3.
 */
struct reflect_handoff {
	struct stamp_addr sender_addr;
	struct stamp_addr local_addr;
	__be16 sender_port;
	__u16 payload_len;
	__be32 seq;			/* the reflected Sequence Number */
	__be32 sender_seq;
	struct stamp_ts t1;
	struct stamp_ts t2;
	__be16 sender_error_estimate;
	__u8 sender_ttl;
	__u8 valid;
	__u8 family;			/* 4 or 6 */
	__u8 pad[3];
};

/* key: an address of this host, either family (IPv4 ones IPv4-mapped);
 * value: LOCAL_REFLECT for the interface's own (IPv6: global, unique-local
 * and link-local; the map is this interface's, which scopes the link-local
 * ones), LOCAL_OTHER for the host's others and the IPv4 subnet broadcasts
 * (guard.h). 4096: addresses of every interface of a large host. */
BPF_HASH(local_addrs, struct stamp_addr, __u8, 4096);

/* Is @addr one the interface reflects for (not another of the host's)? */
static __always_inline int is_reflect_addr(const struct stamp_addr *addr)
{
	__u8 *kind = local_addrs.lookup((void *)addr);

	return kind && *kind == LOCAL_REFLECT;
}
/* key: 0; value: the packet being reflected on this CPU. */
BPF_PERCPU_ARRAY(handoff, struct reflect_handoff, 1);

#endif /* STAMP_REFLECTOR_MAPS_H */
