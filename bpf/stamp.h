/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stamp.h - STAMP test packet formats (RFC 8762) and timestamp conversion.
 *
 * The one C definition of the base wire format (bpf/tlv.h has RFC 8972's
 * TLVs). services/common/wire.py is the one
 * Python definition; tests/test_wire_layout.py compiles this header with bcc
 * and checks that both agree on every field's offset and size.
 *
 * Compile-time knobs (bcc cflags):
 *   STAMP_TS_PTP    1: our timestamps use the truncated PTPv2 format (Z=1),
 *                   0: NTP 64-bit format (Z=0, the RFC 8762 default).
 */
#ifndef STAMP_H
#define STAMP_H

#include <linux/types.h>

#ifndef STAMP_TS_PTP
#define STAMP_TS_PTP 0
#endif

#define STAMP_BASE_LEN		44	/* unauthenticated base packet, both directions */
#define TWAMP_LIGHT_MIN_LEN	14	/* seq + timestamp + error estimate (RFC 5357 4.1.2) */
#define STAMP_NSEC_PER_SEC		1000000000ULL
/* Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01), RFC 5905. */
#define NTP_UNIX_OFFSET		2208988800ULL

/* RFC 8762 section 4.2.1: a timestamp is two 32-bit words in network order.
 * NTP: seconds since 1900 (UTC) and a binary fraction of a second.
 * PTP (truncated, RFC 8186): seconds since 1970 in TAI and nanoseconds. */
struct stamp_ts {
	__be32 sec;
	__be32 frac;
} __attribute__((packed));

/* RFC 8762 section 4.2.1, Figure 2: Session-Sender test packet, unauthenticated;
 * RFC 8972 section 3, Figure 1, names octets 14-15 the SSID (0: none). */
struct stamp_sender_pkt {
	__be32 seq;
	struct stamp_ts ts;
	__be16 error_estimate;		/* Figure 3: S|Z|Scale(6)|Multiplier(8) */
	__be16 ssid;			/* STAMP Session Identifier */
	__u8 mbz[28];
} __attribute__((packed));

/* RFC 8762 section 4.3.1, Figure 5: Session-Reflector test packet, unauthenticated;
 * RFC 8972 section 3, Figure 2: the SSID copied from the test packet. */
struct stamp_reflector_pkt {
	__be32 seq;
	struct stamp_ts ts;		/* T3: when the reflector sent it */
	__be16 error_estimate;
	__be16 ssid;
	struct stamp_ts rx_ts;		/* T2: when the reflector received it */
	__be32 sender_seq;
	struct stamp_ts sender_ts;	/* T1: when the sender sent it */
	__be16 sender_error_estimate;
	__be16 mbz2;
	__u8 sender_ttl;		/* IPv4 TTL of the received test packet */
	__u8 mbz3[3];
} __attribute__((packed));

/* Error Estimate bits (RFC 4656 section 4.1.2, RFC 8186 section 2.3). */
#define STAMP_EE_S	0x8000		/* clock synchronised to UTC/TAI */
#define STAMP_EE_Z	0x4000		/* 1: PTP format, 0: NTP format */

/* Runtime settings written by user space into the one-entry `config` array. */
struct stamp_config {
	__s64 tai_offset_ns;	/* TAI - UTC as the kernel reports it (adjtimex) */
	__u64 sock_cookie;	/* sender: the cookie of the socket whose packets we stamp */
	__be16 error_estimate;	/* Error Estimate for our timestamps, wire order */
	__u8 sync_src;		/* reflector: RFC 8972 Table 7 value for the
				 * Timestamp Information TLV (clock state) */
	__u8 pad[5];
	__u64 session_timeout_ns; /* stateful reflector: idle time that ends a session */
};

/**
 * stamp_ts_from_tai() - encode a CLOCK_TAI reading in our timestamp format.
 * @tai_ns: bpf_ktime_get_tai_ns()
 * @cfg: runtime settings (for the TAI-UTC offset)
 *
 * PTP is TAI already. NTP counts UTC seconds, so the kernel's TAI-UTC offset is
 * taken off first; the fraction is (ns << 32) / 1e9, exact to 0.23 ns.
 * (ns < 2^30, so ns << 32 cannot overflow 64 bits.)
 */
static __always_inline struct stamp_ts stamp_ts_from_tai(__u64 tai_ns,
							 const struct stamp_config *cfg)
{
	struct stamp_ts ts;
	__u64 ns, sec, sub;

	ns = STAMP_TS_PTP ? tai_ns : tai_ns - (__u64)cfg->tai_offset_ns;
	sec = ns / STAMP_NSEC_PER_SEC;
	sub = ns % STAMP_NSEC_PER_SEC;
	if (STAMP_TS_PTP) {
		ts.sec = bpf_htonl((__u32)sec);
		ts.frac = bpf_htonl((__u32)sub);
	} else {
		ts.sec = bpf_htonl((__u32)(sec + NTP_UNIX_OFFSET));
		ts.frac = bpf_htonl((__u32)((sub << 32) / STAMP_NSEC_PER_SEC));
	}
	return ts;
}

/**
 * stamp_is_reflection() - does a packet have the Session-Reflector format?
 *
 * A reflected packet (Figure 5) carries a Receive Timestamp, a non-zero
 * Session-Sender TTL and zero MBZ octets 38-39 and 41-43. A STAMP sender's
 * packet has zeros in all of 16..43 (MBZ); a TWAMP-Light sender's padding
 * may be pseudo-random (RFC 5357 4.1.2) and matches this by chance with odds
 * of about 2^-48. Octets 14-15 are left out: RFC 8972 puts the SSID there.
 */
static __always_inline int stamp_is_reflection(const struct stamp_reflector_pkt *p)
{
	return (p->rx_ts.sec || p->rx_ts.frac) && p->sender_ttl && !p->mbz2 &&
	       !p->mbz3[0] && !p->mbz3[1] && !p->mbz3[2];
}

/**
 * stamp_rx_tai() - the receive time of a frame at TC ingress, as TAI ns.
 * @skb: the frame
 * @now_tai: bpf_ktime_get_tai_ns() taken on entry to the program
 * @cfg: runtime settings (for the TAI-UTC offset)
 *
 * The kernel's software receive timestamp (skb->tstamp, CLOCK_REALTIME) is
 * taken when the driver hands the frame to the stack, before any backlog
 * queueing; it is set while any socket on the host asks for timestamps, and
 * our services keep one such socket open. Used when present and within the
 * last second; otherwise the time at TC ingress. tc-bpf at ingress reads a
 * delivery time (mono) as 0, so only real receive timestamps come through.
 */
static __always_inline __u64 stamp_rx_tai(struct __sk_buff *skb, __u64 now_tai,
					  const struct stamp_config *cfg)
{
	__u64 rx = skb->tstamp;

	if (rx) {
		rx += (__u64)cfg->tai_offset_ns;
		if (rx <= now_tai && now_tai - rx < STAMP_NSEC_PER_SEC)
			return rx;
	}
	return now_tai;
}

/*
 * Records handed to user space through the ring buffer; every multi-octet
 * field is in network byte order. services/common/events.py is their Python
 * twin, checked against this header by tests/test_wire_layout.py.
 */

/* The first octets past the base that a sender record carries: room for the
 * TLVs a sender asks with (Location with its three sub-TLVs 60, Class of
 * Service 8, Timestamp Information 8, Direct Measurement 16: 92). */
#define STAMP_EVENT_TLV_LEN	96

/*
 * An address of either family, as the maps and records carry it: an IPv6
 * address as it is, an IPv4 address IPv4-mapped, ::ffff:a.b.c.d (RFC 4291
 * 2.5.5.2), which is never an IPv6 peer of ours (services/common/addr.py).
 */
struct stamp_addr {
	__be32 w[4];
} __attribute__((packed));

/* Sender: one per reply taken at TC ingress (services/common/events.py). */
struct stamp_sender_event {
	struct stamp_addr reflector_addr;
	struct stamp_addr local_addr;
	__be16 reflector_port;
	__be16 local_port;
	__be16 payload_len;		/* UDP payload length of the reply */
	__u8 reply_ttl;			/* IPv4 TTL or IPv6 Hop Limit of the reply as it arrived */
	__u8 reply_tos;			/* and its DSCP and ECN (RFC 8972 4.4): TOS or Traffic Class */
	struct stamp_ts t4;		/* our receive timestamp, our format */
	struct stamp_reflector_pkt pkt;	/* the reply's first 44 octets, as on the wire */
	__u8 tlvs[STAMP_EVENT_TLV_LEN];	/* the octets after them, zero padded */
} __attribute__((packed));

/* Reflector: one per reflected packet, emitted at TC egress once T3 is known. */
struct stamp_reflector_event {
	struct stamp_addr sender_addr;
	struct stamp_addr local_addr;
	__be16 sender_port;
	__be16 local_port;
	__be16 payload_len;		/* UDP payload length as received */
	__u8 sender_ttl;		/* TTL or Hop Limit as received */
	__u8 pad;
	__be32 seq;			/* the Session-Sender Sequence Number */
	struct stamp_ts t1;		/* sender's timestamp, sender's format */
	struct stamp_ts t2;
	struct stamp_ts t3;
	__be16 sender_error_estimate;
	__be16 error_estimate;
} __attribute__((packed));

/*
 * Per-CPU counters of each service, index into the `stats` array. Their
 * Python names (services/common/datapath.py) are these, lower case without
 * STAT_, but for the first two, which each service names for what they count
 * there; the reflector's reasons for not reflecting (STAT_LOOP_GUARD,
 * STAT_TOO_SHORT, STAT_BAD_CHECKSUM, STAT_NOT_ALLOWED ... STAT_BAD_SOURCE)
 * are services/common/records.py DROP_REASONS. tests/test_guard_unit.py
 * checks both against this enum.
 */
enum stamp_stat {
	STAT_STAMPED = 0,	/* sender: T1 written / reflector: reflected */
	STAT_RECEIVED,		/* sender: replies taken / reflector: T3 written */
	STAT_RINGBUF_LOST,	/* records the ring buffer had no room for */
	STAT_LOOP_GUARD,	/* reflector: a reflected packet not reflected again */
	STAT_TOO_SHORT,		/* reflector: request under the 44-octet base, whose reply
				 * would be larger: not reflected */
	STAT_BAD_CHECKSUM,	/* test packets or replies with a wrong UDP or IPv4
				 * header checksum, or an IPv6 UDP checksum of 0, ignored */
	STAT_TLV_UNRECOGNIZED,	/* reflector: TLVs returned with U=1 */
	STAT_TLV_MALFORMED,	/* reflector: TLVs returned with M=1 */
	STAT_SESSIONS_CREATED,	/* stateful reflector: sessions created */
	STAT_SESSIONS_EXPIRED,	/* stateful reflector: idle sessions restarted */
	STAT_NOT_ALLOWED,	/* reflector: sender not on the allow-list (guard.h) */
	STAT_RATE_LIMITED,	/* reflector: sender over its rate limit, dropped */
	STAT_MALFORMED,		/* reflector: to our address and port, lengths wrong */
	STAT_BAD_SOURCE,	/* reflector: a reply would go where none may go */
	STAT_MAX,
};

#endif /* STAMP_H */
