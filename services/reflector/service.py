"""The reflector's main loop: attach, drain records, keep settings fresh.

Reflection itself never waits on this loop: the kernel reflects every test
packet whether or not anything reads the ring buffer. This loop turns the
ring buffer's records into exporter records, logs, and histograms.
"""

import contextlib
import time

from ..common import (delaystats, events as events_mod, histfile, netif, records, recordpipe,
                      runtime, tc, wire)
from . import datapath
from .sessions import ReflectorSessions
from .usermode import UserReflector

# reflector_egress.c does not wake us (a wakeup would delay the packet it
# just stamped), so the loop drains the ring on a timer.
DRAIN_S = 0.05


def run(args, log, hist_layout):
    ptp = args.timestamp_format == "ptp"
    pending = []
    if args.timestamping == "user":
        # Also authenticated mode: no TC program is attached then, so nothing in the
        # kernel can answer a 112-octet packet as an unauthenticated one.
        dp = UserReflector(args.interface, args.port, ptp, hmac=getattr(args, "hmac", None))
        attachment = contextlib.nullcontext()
        ts_kind = records.TS_USER

        def collect():
            dp.serve(DRAIN_S, pending)
    else:
        dp, programs = datapath.load(args.port, ptp, debug=args.debug)
        _sync_addresses(dp, args.interface, log)
        dp.open_events(pending.append)
        attachment = tc.attached(args.interface, programs, tc.REFLECTOR_PRIO,
                                 tc.REFLECTOR_HANDLE, log)
        ts_kind = records.TS_BPF

        def collect():
            time.sleep(DRAIN_S)
            dp.consume()
    state = runtime.refresh_clock(dp, None, log)

    sessions = ReflectorSessions(max_sessions=args.max_sessions)
    hist = (histfile.HistogramFile(args.histpath, hist_layout.bins, hist_layout.floor,
                                   hist_layout.ceil, log=log) if args.histpath else None)
    rx_stamps = runtime.keep_rx_timestamps_on()
    stop = runtime.StopSignals()
    every_second = runtime.Every(1.0)
    every_stats = runtime.Every(5.0)
    every_summary = runtime.Every(10.0)
    auth_failures = runtime.AuthFailures(log, "test packets")

    def flush_pending():
        if pending:
            pusher.push(_records(pending, state.tai_offset_s, sessions, hist, args, log, ts_kind))
            pending.clear()

    def push_service_stats():
        pusher.push([runtime.service_stats(records.ROLE_REFLECTOR, state, pusher,
                                           dp.stats()["ringbuf_lost"], ts_kind, ptp,
                                           sessions.overflow)])

    with recordpipe.RecordPusher(args.zmq, log=log) as pusher, attachment:
        log.info("reflecting", interface=args.interface, port=args.port,
                 timestamping=args.timestamping, timestamp_format=args.timestamp_format,
                 authenticated=getattr(args, "hmac", None) is not None,
                 zmq=args.zmq, clock_synchronized=state.synchronized,
                 clock_error_s=state.error_s, tai_offset_s=state.tai_offset_s)
        while not stop.stopped:
            collect()
            flush_pending()
            if every_second.due():
                state = runtime.refresh_clock(dp, state, log)
                if ts_kind == records.TS_BPF:
                    _sync_addresses(dp, args.interface, log)
                if hist:
                    hist.maybe_flush()
                for s in sessions.expire():
                    log.info("session_ended", sender=s.label, reflected=s.reflected)
            if every_stats.due():
                push_service_stats()
                auth_failures.check(dp.stats())
            if args.output and every_summary.due():
                for s in sessions:
                    log.info("session_stats", sender=s.label, reflected=s.reflected,
                             forward=s.forward.summary())
        if ts_kind == records.TS_BPF:
            dp.consume()
        flush_pending()
        push_service_stats()
    rx_stamps.close()
    if ts_kind == records.TS_USER:
        dp.close()
    if hist:
        hist.flush()
    log.info("summary", signal=stop.signal, counters=dp.stats(),
             sessions_overflow=sessions.overflow,
             records_sent=pusher.sent, records_dropped=pusher.dropped,
             sessions=[{"sender": s.label, "reflected": s.reflected,
                        "forward": s.forward.summary()} for s in sessions])


def _sync_addresses(dp, ifname, log):
    added, removed = dp.set_addresses(netif.ipv4_addresses(ifname))
    if added or removed:
        log.info("addresses", interface=ifname, added=sorted(added), removed=sorted(removed))


def _records(events, tai_offset_s, sessions, hist, args, log, ts_kind):
    """Exporter records for a batch of ring buffer events; updates sessions."""
    out = []
    for raw in events:
        ev = events_mod.reflector_event(raw)
        # A TWAMP-Light sender may leave its timestamp zero: T1 is then unknown.
        t1_ns = (0 if wire.ts_is_zero(ev.t1)
                 else wire.ts_to_ns(ev.t1, ev.sender_error_estimate, tai_offset_s))
        t2_ns = wire.ts_to_ns(ev.t2, ev.error_estimate, tai_offset_s)
        t3_ns = wire.ts_to_ns(ev.t3, ev.error_estimate, tai_offset_s)
        s, new = sessions.get(ev.sender, ev.sender_port)
        if s is None:
            if sessions.overflow == 1 or sessions.overflow % 100_000 == 0:
                log.warning("sessions_full", sender=f"{ev.sender}:{ev.sender_port}",
                            max_sessions=sessions.max_sessions, packets=sessions.overflow,
                            hint="packets of new senders are reflected but not recorded; "
                                 "raise --max-sessions if these senders are real")
            continue
        if new and args.output:
            log.info("session_started", sender=s.label)
        s.reflected += 1
        if t1_ns:
            forward = delaystats.near_end(t1_ns, t2_ns)
            s.forward.add(forward)
            if hist:
                hist.observe(s.label, "near_end", forward)
        out.append(records.ReflectorPacket(
            ev.sender, ev.sender_port, ev.local, ev.local_port,
            ts_kind, ev.sender_ttl, ev.seq, t1_ns, t2_ns, t3_ns, s.reflected))
        if args.debug:
            log.debug("reflected", sender=s.label, seq=ev.seq, ttl=ev.sender_ttl,
                      t1_ns=t1_ns, t2_ns=t2_ns, t3_ns=t3_ns, payload_len=ev.payload_len)
    return out
