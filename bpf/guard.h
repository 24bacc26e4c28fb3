/* SPDX-License-Identifier: Apache-2.0 */
/*
 * guard.h - whom the reflector answers: allow-list, per-sender rate limit,
 * and the addresses no reply may go to.
 *
 * TC ingress runs before netfilter, so a host firewall does not protect the
 * reflector; these checks do. User space (services/reflector/datapath.py,
 * set_guard() and set_addresses()) fills the maps from --allow/--allow-file,
 * --max-rate/--burst and the host's addresses, and changes them in place on
 * a reload: no program is detached, no session lost. docs/security.md says
 * what each refusal does and why.
 *
 * Compile-time knob (bcc cflags):
 *   GUARD_RATE_SOURCES  entries of the rate limiter's LRU map (--rate-sources)
 */
#ifndef STAMP_GUARD_H
#define STAMP_GUARD_H

#include "maps.h"

/* services/reflector/guard.py DEFAULT_RATE_SOURCES: 16,384 senders, many more
 * than the sessions a reflector records (--max-sessions), since a sender
 * pushed out of the LRU map starts again with a full bucket; about 1.5 MiB. */
#ifndef GUARD_RATE_SOURCES
#define GUARD_RATE_SOURCES 16384
#endif
/* Prefixes in the allow-list: services/reflector/guard.py MAX_PREFIXES (1024)
 * per family, refused beyond in one line, and both families share the trie.
 * Far more than an operator writes by hand; the trie stays under 256 KiB. */
#define GUARD_ALLOW_PREFIXES 2048
/* Compare-and-swap attempts on one sender's bucket. Each failure means another
 * CPU took a token of the same sender in between; four CPUs racing for one
 * sender's last tokens is already a flood, so the packet then counts as over. */
#define GUARD_CAS_TRIES 4
/* An IPv4 prefix of length n is the IPv4-mapped IPv6 prefix of length 96 + n. */
#define GUARD_V4_MAPPED_BITS 96

/* Runtime settings, key 0; written by user space. */
struct guard_config {
	__u64 interval_ns;	/* 1e9 / --max-rate; 0: no rate limit */
	__u64 tolerance_ns;	/* (--burst - 1) * interval_ns; guard.py bounds it
				 * under 2^62, so the sums below cannot overflow */
	__u8 allow_on;		/* 1: answer only senders in allow_prefixes */
	__u8 on_loopback;	/* 1: attached to lo, see guard_bad_source() */
	__u8 pad[6];
};

/*
 * An address as the guard keys it: IPv6, with IPv4 as the IPv4-mapped IPv6
 * address ::ffff:a.b.c.d (RFC 4291 2.5.5.2), so one trie and one rate map
 * serve both families; the same 16 octets as struct stamp_addr (stamp.h), so
 * the reflector copies a packet's source address in as it is.
 */
struct guard_addr {
	__u8 addr[16];
};

/* LPM trie key: prefix length in bits (of the 128), then the address. */
struct guard_lpm {
	__u32 prefixlen;
	struct guard_addr a;
};

/* key: 0; value: the settings above. */
BPF_ARRAY(guard_config, struct guard_config, 1);
/* key: an allowed prefix; value: 1. */
BPF_LPM_TRIE(allow_prefixes, struct guard_lpm, __u8, GUARD_ALLOW_PREFIXES);
/* key: a sender; value: its bucket, as the CLOCK_MONOTONIC time in ns at which
 * it would be full again (GCRA's theoretical arrival time, tat). LRU: a
 * sender pushed out by newer ones starts again with a full bucket. */
BPF_TABLE("lru_hash", struct guard_addr, __u64, rate_buckets, GUARD_RATE_SOURCES);

/**
 * guard_allows() - is a sender on the allow-list?
 * @g: guard_config
 * @src: the sender
 *
 * Return: 1 when there is no allow-list or the address is in one of its
 * prefixes, 0 when the packet must pass on unanswered (STAT_NOT_ALLOWED).
 */
static __always_inline int guard_allows(const struct guard_config *g,
					const struct guard_addr *src)
{
	struct guard_lpm k = { .prefixlen = 128 };

	if (!g->allow_on)
		return 1;
	k.a = *src;
	return allow_prefixes.lookup(&k) != NULL;
}

/**
 * guard_rate_ok() - take one packet from a sender's token bucket.
 * @g: guard_config
 * @src: the sender
 *
 * GCRA, which is a token bucket of 1/interval_ns packets per ns and
 * tolerance_ns / interval_ns + 1 packets deep: a packet moves the sender's
 * tat on by interval_ns, and is over the limit when tat would then lie more
 * than tolerance_ns past now. One 64-bit word per sender, so one
 * compare-and-swap updates it without a lock (LRU hash values cannot hold a
 * bpf_spin_lock). CLOCK_MONOTONIC (bpf_ktime_get_ns), not the TAI clock the
 * timestamps use: a step of the wall clock must not empty or fill buckets.
 *
 * Overflow: now counts ns since boot (2^64 ns is 584 years). tat is only
 * ever set to max(tat, now) + interval_ns with max(tat, now) - now <=
 * tolerance_ns, so tat <= now + tolerance_ns + interval_ns, which guard.py
 * keeps under 2^62 + 2^40 past now: no sum here wraps, and tat - now is
 * taken only when tat >= now. Every value is a plain u64: the verifier sees
 * no pointer arithmetic and no variable offsets.
 * Call only for packets about to be reflected, so a refused one takes no token.
 * Return: 1 within the limit (or no limit), 0 over it (STAT_RATE_LIMITED).
 */
static __always_inline int guard_rate_ok(const struct guard_config *g,
					 const struct guard_addr *src)
{
	__u64 now, old, tat, *slot;

	if (!g->interval_ns)
		return 1;
	now = bpf_ktime_get_ns();
	slot = rate_buckets.lookup((void *)src);
	if (!slot) {
		tat = now + g->interval_ns;
		if (rate_buckets.insert((void *)src, &tat) == 0)
			return 1;	/* a new sender: a full bucket, less this packet */
		slot = rate_buckets.lookup((void *)src);	/* another CPU made it */
		if (!slot)
			return 1;
	}
	/* Bounded: GUARD_CAS_TRIES, see above. */
	for (int i = 0; i < GUARD_CAS_TRIES; i++) {
		old = *(volatile __u64 *)slot;
		tat = old > now ? old : now;
		if (tat - now > g->tolerance_ns)
			return 0;
		if (__sync_val_compare_and_swap(slot, old, tat + g->interval_ns) == old)
			return 1;
	}
	return 0;
}

/* What local_addrs holds for an address (reflector_maps.h). */
#define LOCAL_REFLECT	1	/* an address of the interface: test packets to it are reflected */
#define LOCAL_OTHER	2	/* this host's too (another interface, a subnet broadcast):
				 * never a test packet's destination or a reply's */

/**
 * guard_bad_source() - would a reply to this sender go where none may go?
 * @p: the test packet (parse_stamp())
 * @local: local_addrs' value for its source address, or NULL
 *
 * A reply goes to the request's source MAC, address and port. None goes to a
 * group MAC, to port 0, to this host itself (a spoofed request from one of its
 * addresses or subnet broadcasts, which user space lists in local_addrs), or
 * to an address no unicast host has. IPv4: 0.0.0.0/8, 127.0.0.0/8, multicast
 * 224.0.0.0/4, and 240.0.0.0/4 (class E) with the limited broadcast
 * 255.255.255.255. IPv6 (RFC 4291 2.5.2, 2.5.3, 2.7): the unspecified
 * address ::, the loopback ::1 and multicast ff00::/8 (IPv4-mapped ones
 * never get here: parse_udp6()). The destination is always one of the
 * interface's own unicast addresses and STAMP_PORT (checked before), so
 * never unspecified, a broadcast, multicast or port 0.
 *
 * On the loopback interface (@g->on_loopback) every frame was sent by this
 * host, as no other host can put one there: a sender on one of its own
 * addresses or in 127.0.0.0/8 or ::1 is then the local sender it seems
 * (stamp-sender lo 127.0.0.1), and is answered.
 * Return: 1 when the packet must not be answered (STAT_BAD_SOURCE), else 0.
 */
static __always_inline int guard_bad_source(const struct guard_config *g,
					    const struct stamp_pkt *p, const __u8 *local)
{
	const __be32 *w = p->saddr.w;
	__u32 a;

	if (!p->sport || (p->smac[0] & 1))
		return 1;
	if (local && !g->on_loopback)
		return 1;
	if (p->family == 6) {
		if ((bpf_ntohl(w[0]) >> 24) == 0xff)
			return 1;			/* multicast */
		if (w[0] | w[1] | w[2])
			return 0;
		return !w[3] || (w[3] == bpf_htonl(1) && !g->on_loopback);
	}
	a = bpf_ntohl(w[3]);
	if ((a >> 24) == 127)
		return !g->on_loopback;
	return (a >> 24) == 0 || (a >> 28) >= 0xe;
}

#endif /* STAMP_GUARD_H */
