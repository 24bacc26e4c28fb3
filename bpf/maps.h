/* SPDX-License-Identifier: Apache-2.0 */
/*
 * maps.h - the maps every stamp-bpf service has: settings, counters, records.
 *
 * bcc rewrites map accesses only in its main source, so the loader
 * (services/common/bpfprog.py) joins this file, the service's own maps
 * header and its programs into one source; the #includes below then find
 * their guards already defined, and each file still reads on its own.
 *
 * Compile-time knob: RINGBUF_PAGES, the ring buffer's size in pages (2^n).
 */
#ifndef STAMP_MAPS_H
#define STAMP_MAPS_H

#include "parse.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif

/* key: 0; value: runtime settings written by user space. */
BPF_ARRAY(config, struct stamp_config, 1);
/* key: enum stamp_stat; value: per-CPU packet count. */
BPF_PERCPU_ARRAY(stats, __u64, STAT_MAX);
/* The service's records to user space (struct stamp_*_event). */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline void stat_inc(int idx)
{
	__u64 *v = stats.lookup(&idx);

	if (v)
		*v += 1;
}

#endif /* STAMP_MAPS_H */
