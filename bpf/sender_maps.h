/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sender_maps.h - maps shared by sender_egress.c and sender_ingress.c.
 *
 * Compile-time knobs (bcc cflags, set by services/sender/datapath.py):
 *   SENDER_SRC_PORT  our UDP source port (host order)
 *   SENDER_DST_PORT  the reflectors' UDP port (host order)
 * The ring buffer carries struct stamp_sender_event, one per reply.
 */
#ifndef STAMP_SENDER_MAPS_H
#define STAMP_SENDER_MAPS_H

#include "maps.h"

/* key: reflector address, either family (IPv4 ones IPv4-mapped); value: the
 * address our test packets to it leave from (all zeros while there is no
 * route), the only one its replies are taken at. One per session; 65536
 * sessions. */
BPF_HASH(sessions, struct stamp_addr, struct stamp_addr, 65536);

#endif /* STAMP_SENDER_MAPS_H */
