/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reflector_sessions.h - the stateful Session-Reflector's sessions
 * (RFC 8762 section 4.3.1; RFC 8972 section 3 adds the SSID to the key).
 *
 * Compile-time knobs (bcc cflags, set by services/reflector/datapath.py):
 *   STAMP_STATEFUL      1: keep sessions; 0: stateless (no map at all)
 *   STAMP_MAX_SESSIONS  the map's size, --max-sessions
 *
 * One entry per (sender address and port, reflector address and port, SSID)
 * in an LRU hash: when it is full, inserting a new session evicts the least
 * recently used one, so reflection never stops and the map never grows
 * past STAMP_MAX_SESSIONS. A session idle for longer than the configured
 * timeout (struct stamp_config) starts again from 0 on its next packet.
 */
#ifndef STAMP_REFLECTOR_SESSIONS_H
#define STAMP_REFLECTOR_SESSIONS_H

#include "maps.h"

#ifndef STAMP_STATEFUL
#define STAMP_STATEFUL 0
#endif
#ifndef STAMP_MAX_SESSIONS
#define STAMP_MAX_SESSIONS 65536
#endif

struct stamp_session_key {
	struct stamp_addr sender_addr;	/* either family, IPv4 ones IPv4-mapped */
	struct stamp_addr reflector_addr;
	__be16 sender_port;
	__be16 reflector_port;
	__be16 ssid;
	__u16 pad;		/* zero: part of the hashed key */
};

struct stamp_session {
	__u64 last_ns;		/* CLOCK_TAI of the last test packet */
	__u32 rx;		/* test packets received (R_RxC) */
	__u32 tx;		/* reflected packets sent (R_TxC); the next Sequence Number */
};

#if STAMP_STATEFUL
/* key: the session; value: its counters. */
BPF_TABLE("lru_hash", struct stamp_session_key, struct stamp_session, reflector_sessions,
	  STAMP_MAX_SESSIONS);

/**
 * session_step() - count one test packet of a session and its reflection.
 * @rx: @tx: out: the session's counts, this packet included
 *
 * Return: the reflected Sequence Number (the reflector's own count of
 * packets sent in this session, from 0), or -1 when the map refused the
 * entry (the packet is then passed on, not reflected with a wrong number).
 * Counters are 32 bits, like the fields they fill, and wrap as those do.
 */
static __always_inline __s64 session_step(struct stamp_session_key *key, __u64 now,
					  const struct stamp_config *cfg, __u32 *rx, __u32 *tx)
{
	struct stamp_session *s = reflector_sessions.lookup(key);
	__u32 seq;

	if (!s) {
		struct stamp_session fresh = { .last_ns = now };

		/* insert() is BPF_NOEXIST: if another CPU made the entry just now,
		 * it fails and that entry is used. */
		if (!reflector_sessions.insert(key, &fresh))
			stat_inc(STAT_SESSIONS_CREATED);
		s = reflector_sessions.lookup(key);
		if (!s)
			return -1;
	} else if (now - s->last_ns > cfg->session_timeout_ns) {
		s->rx = 0;
		s->tx = 0;
		stat_inc(STAT_SESSIONS_EXPIRED);
	}
	s->last_ns = now;
	/* Verifier workaround: "Invalid usage of the XADD return value": bcc's
	 * clang targets a BPF ISA without atomic fetch-and-add, so the counters
	 * are added to atomically (no count is lost) and read back. Only two
	 * CPUs reflecting one session at the same instant (RSS keeps a flow on
	 * one queue) could read the same number. */
	__sync_fetch_and_add(&s->rx, 1);
	__sync_fetch_and_add(&s->tx, 1);
	*rx = s->rx;
	*tx = s->tx;
	seq = *tx - 1;
	return seq;
}
#endif

#endif /* STAMP_REFLECTOR_SESSIONS_H */
