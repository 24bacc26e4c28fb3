"""The reflector's main loop: attach, drain records, keep settings fresh.

Reflection itself never waits on this loop: the kernel reflects every test
packet whether or not anything reads the ring buffer. This loop turns the
ring buffer's records into exporter records, logs, and histograms.
"""

import contextlib
import os
import time

from ..common import (addr, auth, delaystats, histfile, netif, records, recordpipe, runtime,
                      tc, wire)
from . import datapath, guard
from .sessions import ReflectorSessions
from .usermode import UserReflector

# reflector_egress.c does not wake us (a wakeup would delay the packet it
# just stamped), so the loop drains the ring on a timer.
DRAIN_S = 0.05


class ReflectorService:
    """Laid out like services/sender/service.py's SenderService: run() sets up
    and tears down, _loop() repeats, _drain() turns records into exporter records."""

    def __init__(self, args, log, hist_layout, allow, limit, hup):
        self.args = args
        self.log = log
        self.allow, self.limit, self.hup = allow, limit, hup
        self.ptp = args.timestamp_format == "ptp"
        self.user_mode = args.timestamping == "user"
        self.ts_kind = records.TS_USER if self.user_mode else records.TS_BPF
        self.sessions = ReflectorSessions(max_sessions=args.max_sessions)
        self.pending = []           # reflection records of this iteration
        self.hist = (histfile.HistogramFile(args.histpath, hist_layout.bins, hist_layout.floor,
                                            hist_layout.ceil, log=log)
                     if args.histpath else None)
        self.stop = runtime.StopSignals()

    # --- the loop ----------------------------------------------------------------

    def run(self):
        a = self.args
        if self.user_mode:
            # Also authenticated mode: no TC program is attached then, so nothing in the
            # kernel can answer a 112-octet packet as an unauthenticated one.
            self.dp = UserReflector(a.interface, a.port, self.ptp,
                                    guard.SourceGuard(self.allow, self.limit, a.rate_sources),
                                    hmac=getattr(a, "hmac", None))
            attachment = contextlib.nullcontext()
        else:
            tc.check_free(a.interface, tc.REFLECTOR, datapath.PROGRAMS)
            self.on_loopback = netif.is_loopback(a.interface)
            self.dp, programs = datapath.load(a.port, self.ptp, debug=a.debug,
                                              stateful=a.stateful,
                                              max_sessions=a.stateful_sessions,
                                              rate_sources=a.rate_sources)
            self.dp.set_session_policy(a.sync_source, a.session_timeout)
            _sync_addresses(self.dp, a.interface, self.log)
            self.dp.set_guard(self.allow.prefixes, self.limit, self.on_loopback)
            self.dp.open_events(self.pending.append)
            attachment = tc.attached(a.interface, programs, tc.REFLECTOR, self.log)
        self.state = runtime.refresh_clock(self.dp, None, self.log)
        rx_stamps = runtime.keep_rx_timestamps_on()
        with recordpipe.RecordPusher(a.zmq, log=self.log) as self.pusher, attachment:
            self.log.info("reflecting", interface=a.interface, port=a.port,
                          timestamping=a.timestamping, timestamp_format=a.timestamp_format,
                          authenticated=getattr(a, "hmac", None) is not None,
                          zmq=a.zmq, stateful=a.stateful,
                          stateful_sessions=a.stateful_sessions if a.stateful else None,
                          clock_synchronized=self.state.synchronized,
                          clock_error_s=self.state.error_s, tai_offset_s=self.state.tai_offset_s)
            _log_guard(self.log, self.allow, self.limit, a)
            self._loop()
            if not self.user_mode:
                self.dp.consume()
            self._drain()
            self._push_service_stats()
        rx_stamps.close()
        if self.user_mode:
            self.dp.close()
        if self.hist:
            self.hist.flush()
        self._summary()

    def _loop(self):
        a = self.args
        every_second = runtime.Every(1.0)
        every_stats = runtime.Every(5.0)
        every_summary = runtime.Every(10.0)
        auth_failures = runtime.AuthFailures(self.log, "test packets")
        while not self.stop.stopped:
            self._collect()
            self._drain()
            if self.hup.take():
                self._reload_allow_list("SIGHUP")
            if every_second.due():
                if self.allow.watch and self.allow.watch.changed():
                    self._reload_allow_list("file_changed")
                self.state = runtime.refresh_clock(self.dp, self.state, self.log)
                if not self.user_mode:
                    _sync_addresses(self.dp, a.interface, self.log)
                if self.hist:
                    self.hist.maybe_flush()
                for s in self.sessions.expire():
                    self.log.info("session_ended", sender=s.label, reflected=s.reflected)
            if every_stats.due():
                self._push_service_stats()
                auth_failures.check(self.dp.stats())
            if a.output and every_summary.due():
                for s in self.sessions:
                    self.log.info("session_stats", sender=s.label, reflected=s.reflected,
                                  forward=s.forward.summary())

    def _collect(self):
        """Gather this iteration's reflections: user mode reflects them here;
        with BPF the kernel has reflected them, and the ring is drained on a
        timer (reflector_egress.c does not wake us)."""
        if self.user_mode:
            self.dp.serve(DRAIN_S, self.pending)
        else:
            time.sleep(DRAIN_S)
            self.dp.consume()

    def _drain(self):
        """Turn this iteration's reflections into exporter records and push them."""
        if self.pending:
            self.pusher.push(_records(self.pending, self.dp.event, self.state.tai_offset_s,
                                      self.sessions, self.hist, self.args, self.log,
                                      self.ts_kind))
            self.pending.clear()

    def _push_service_stats(self):
        counts = self.dp.stats()
        self.pusher.push([runtime.service_stats(records.ROLE_REFLECTOR, self.state, self.pusher,
                                                counts["ringbuf_lost"], self.ts_kind,
                                                self.ptp, self.sessions.overflow)])
        self.pusher.push(_drop_counts(counts))

    def _reload_allow_list(self, why):
        """Re-read --allow-file; the kernel's tables change in place, sessions go on."""
        try:
            added, removed = self.allow.reload()
        except guard.GuardError as e:
            self.log.error("allow_list_rejected", reason=str(e), why=why,
                           action="kept the running allow-list")
            return
        if not self.user_mode:
            self.dp.set_guard(self.allow.prefixes, self.limit, self.on_loopback)
        self.log.info("allow_list_reloaded", why=why, added=[str(n) for n in added],
                      removed=[str(n) for n in removed], prefixes=len(self.allow.prefixes))

    def _summary(self):
        self.log.info("summary", signal=self.stop.signal, counters=self.dp.stats(),
                      kernel_sessions=_kernel_sessions(self.dp, self.args),
                      sessions_overflow=self.sessions.overflow,
                      records_sent=self.pusher.sent, records_dropped=self.pusher.dropped,
                      sessions=[{"sender": s.label, "reflected": s.reflected,
                                 "forward": s.forward.summary()} for s in self.sessions])


def run(args, log, hist_layout, allow, limit, hup):
    ReflectorService(args, log, hist_layout, allow, limit, hup).run()


def _log_guard(log, allow, limit, args):
    """Say once whom the reflector answers, and warn when that is everyone."""
    rate = {"max_rate": limit.rate, "burst": limit.burst, "rate_sources": args.rate_sources}
    if allow.enabled:
        log.info("allow_list", prefixes=[str(n) for n in allow.prefixes],
                 allow_file=args.allow_file, **rate)
    elif args.timestamping == "bpf":
        log.warning("answers_every_source", **rate,
                    hint="no --allow or --allow-file: test packets from any address are "
                         "reflected, and host firewall rules (iptables, nftables) do not "
                         "apply to them, since TC ingress runs before netfilter")
    else:
        log.info("answers_every_source", **rate,
                 hint="no --allow or --allow-file; with --timestamping user the host "
                      "firewall still applies")


def _drop_counts(counts):
    """One DropCount record per reason, from the datapath's counters; auth_failed
    too in authenticated mode (the only mode that counts it)."""
    pid = os.getpid()
    reasons = records.DROP_REASONS + tuple(r for r in auth.STATS if r in counts)
    return [records.DropCount(records.ROLE_REFLECTOR, pid, reason, counts.get(reason, 0))
            for reason in reasons]


def _sync_addresses(dp, ifname, log):
    """Reflect for the interface's addresses; never answer the host's others (guard.h)."""
    added, removed = dp.set_addresses(netif.addresses(ifname),
                                      netif.other_ipv4_addresses(ifname)
                                      + netif.other_ipv6_addresses(ifname))
    if added or removed:
        log.info("addresses", interface=ifname, added=sorted(added), removed=sorted(removed))


def _records(events, decode, tai_offset_s, sessions, hist, args, log, ts_kind):
    """Exporter records for a batch of datapath events (read by `decode`); updates sessions."""
    out = []
    for raw in events:
        ev = decode(raw)
        # A TWAMP-Light sender may leave its timestamp zero: T1 is then unknown.
        t1_ns = (0 if wire.ts_is_zero(ev.t1)
                 else wire.ts_to_ns(ev.t1, ev.sender_error_estimate, tai_offset_s))
        t2_ns = wire.ts_to_ns(ev.t2, ev.error_estimate, tai_offset_s)
        t3_ns = wire.ts_to_ns(ev.t3, ev.error_estimate, tai_offset_s)
        s, new = sessions.get(ev.sender, ev.sender_port)
        if s is None:
            if sessions.overflow == 1 or sessions.overflow % 100_000 == 0:
                log.warning("sessions_full", sender=addr.endpoint(ev.sender, ev.sender_port),
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


def _kernel_sessions(dp, args):
    """The stateful map's occupancy and what it evicted; None when stateless.

    The kernel counts sessions created; an LRU map evicts without telling,
    so evictions are the sessions created that are no longer in it.
    """
    if not args.stateful:
        return None
    stats, live = dp.stats(), dp.session_count()
    return {"max": args.stateful_sessions, "live": live, "created": stats["sessions_created"],
            "evicted": max(0, stats["sessions_created"] - live),
            "expired": stats["sessions_expired"]}
