"""The sender's main loop: send on schedule, read replies, count, report.

One loop, one thread (plus the DNS resolver's): it sends every packet that
is due, waits on the ring buffer until the next deadline, turns replies
into statistics and exporter records, and declares packets lost. Timestamps
never come from this loop: T1 and T4 are taken by the TC programs.
"""

import contextlib
import heapq
import json
import sys
import time

from ..common import addr, events, histfile, netif, records, recordpipe, runtime, tc, wire
from ..common.delaystats import DIRECTIONS, delays
from . import datapath, tlvs, view
from .direction import DirectionalLoss
from .resolver import Resolver
from .session import SenderSession, decode_reply, now_ns
from .ssid import SsidAllocator, SsidCheck
from .transmit import Transmitter, source_address
from .usermode import UserSenderDatapath

MAX_WAIT_MS = 100
# A session's source address while the kernel finds none for it, per family.
# Bound to the interface, an IPv4 socket with no route is sent on-link from the
# interface's address, so this happens only when the interface has no address
# of the reflector's family (or, for IPv6, no route to it).
NO_ROUTE = {4: "0.0.0.0", 6: "::"}
PUSH_BATCH = 256                # records per ZeroMQ message, at most
PUSH_EVERY_NS = 20_000_000      # and no record waits longer than this


def reply_ssid(ev):
    """The SSID a reply carries (RFC 8972 Figure 2: octets 14-15)."""
    off = wire.REFLECTOR_FIELDS["ssid"][0]
    return int.from_bytes(ev.pkt[off:off + 2], "big")


class SenderService:
    def __init__(self, args, log, hist_layout):
        self.args = args
        self.log = log
        self.ptp = args.timestamp_format == "ptp"
        self.user_mode = args.timestamping == "user"
        self.ts_kind = records.TS_USER if self.user_mode else records.TS_BPF
        # Console logs are for people (a terminal, or the supervisor on one): show the view too.
        self.live = args.log_format == "console" or (args.log_format == "auto" and sys.stdout.isatty())
        self.sessions = {}          # reflector address -> SenderSession
        # Reflectors given as arguments: DNS answers never stop them (nor add them twice).
        self.static = frozenset(args.reflectors)
        self.ended = []             # sessions removed by DNS, for the summary
        self.unmeasured = set()     # IPv6 reflectors a host without IPv6 cannot measure
        self.schedule = []          # heap of (next send ns, reflector address)
        self.deadlines = []         # heap of (give-up ns, reflector address, seq)
        self.pending = []           # raw ring buffer records of this iteration
        self.out = []               # exporter records not pushed yet
        self.out_since = 0          # monotonic ns of the oldest of them
        self.hist = (histfile.HistogramFile(args.histpath, hist_layout.bins, hist_layout.floor,
                                            hist_layout.ceil, log=log)
                     if args.histpath else None)
        self.stop = runtime.StopSignals()
        self.ssids = SsidAllocator(args.ssid)

    # --- sessions ------------------------------------------------------------

    def add_session(self, reflector, offset_ns=0):
        a = self.args
        # The series are labelled with our real source address from the first packet,
        # also when the reflector never answers (replies no longer teach it).
        if not self.tx.supports(reflector):
            if reflector not in self.unmeasured:
                self.unmeasured.add(reflector)
                self.log.warning("ipv6_not_measured", reflector=reflector, interface=a.interface,
                                 hint="this host has no IPv6 (booted with ipv6.disable=1?): "
                                      "give the reflector's IPv4 address or --address-family 4")
            return
        local = source_address(a.interface, reflector, a.dest_port)
        if local is None:
            fam = addr.family(reflector)
            local = NO_ROUTE[fam]
            self.log.warning("no_route", reflector=reflector, interface=a.interface,
                             hint=f"no IPv{fam} source address toward the reflector on this "
                                  f"interface (has it lost its IPv{fam} address?): its series "
                                  f"are labelled sender={addr.endpoint(local, a.source_port)} "
                                  "until there is one")
        s = SenderSession(reflector, a.dest_port, local, a.source_port, a.count, a.interval,
                          a.timeout, a.late_window, time.monotonic_ns() + offset_ns)
        s.ssid = SsidCheck(self.ssids.take())
        if a.directional_loss:
            s.direction = DirectionalLoss()
        if tlvs.block(a):
            s.tlvs = tlvs.TlvReport(a.dscp)
        self.sessions[reflector] = s
        self.dp.add_session(reflector, local)
        self._schedule(s)
        self.log.info("session_started", reflector=s.label, ssid=s.ssid.ssid, count=a.count,
                      interval_s=a.interval,
                      timeout_s=a.timeout, late_window_s=a.late_window)

    def stop_session(self, reflector):
        """No more sends; the session ends once its outstanding packets are judged."""
        s = self.sessions.get(reflector)
        if s and not s.stopping:
            s.stopping = True
            self.log.info("session_stopping", reflector=s.label, reason="no longer in DNS")

    def _end_finished_stopping(self):
        for ip, s in list(self.sessions.items()):
            if s.stopping and not s.outstanding:
                del self.sessions[ip]
                self.ssids.release(s.ssid.ssid)
                self.dp.remove_session(ip)
                self.tx.forget(ip, s.port)
                self.ended.append(s)
                self._push_records(force=True)
                self.pusher.push([s.stats_record(ended=True)])
                self.log.info("session_ended", **s.summary())

    def _find_missing_routes(self):
        """Once a route appears for a session that had none, label it with its source."""
        for s in self.sessions.values():
            if s.local == NO_ROUTE[addr.family(s.reflector)]:
                local = source_address(self.args.interface, s.reflector, s.port)
                if local is not None:
                    s.local = local
                    self.dp.add_session(s.reflector, local)
                    self.log.info("route_found", reflector=s.label, source=local)

    def _apply_dns(self, addrs):
        """Follow a DNS answer: start and stop the discovered sessions, never the static ones."""
        if addrs is None:
            return
        wanted = set(addrs) - self.static
        for ip in sorted(wanted - set(self.sessions)):
            self.add_session(ip)
        for ip in set(self.sessions) - self.static - wanted:
            self.stop_session(ip)
        for ip in wanted:
            s = self.sessions.get(ip)
            if s is not None and s.stopping:      # back in DNS before its last packets were judged
                s.stopping = False
                self.log.info("session_resumed", reflector=s.label)
                self._schedule(s)

    def _schedule(self, s):
        """Put a session's next send on the schedule, once."""
        nxt = s.next_send_ns()
        if nxt is not None and not s.scheduled:
            s.scheduled = True
            heapq.heappush(self.schedule, (nxt, s.reflector))

    # --- the loop ----------------------------------------------------------------

    def run(self):
        a = self.args
        hmac = getattr(a, "hmac", None)
        self.tx = Transmitter(a.interface, a.source_port, tlvs=tlvs.block(a), dscp=a.dscp,
                              authenticated=hmac is not None)
        if self.user_mode:
            self.dp = UserSenderDatapath(self.tx, self.ptp, hmac=hmac)
            attachment = contextlib.nullcontext()
        else:
            tc.check_free(a.interface, tc.SENDER, datapath.PROGRAMS)
            self.dp, programs = datapath.load(a.source_port, a.dest_port, self.ptp, debug=a.debug)
            self.dp.socket_cookie = self.tx.cookie
            attachment = tc.attached(a.interface, programs, tc.SENDER, self.log)
        self._set_clock(runtime.refresh_clock(self.dp, None, self.log))
        self.dp.open_events(self.pending.append)
        rx_stamps = runtime.keep_rx_timestamps_on()
        resolver = None
        with recordpipe.RecordPusher(a.zmq, log=self.log) as self.pusher, attachment:
            self.log.info("sending", interface=a.interface, reflectors=a.reflectors,
                          timestamping=a.timestamping, authenticated=hmac is not None,
                          reflector_dns=a.reflector_dns, address_family=a.address_family,
                          dual_stack=self.tx.dual_stack, source_port=a.source_port,
                          dest_port=a.dest_port, timestamp_format=a.timestamp_format,
                          zmq=a.zmq, clock_synchronized=self.state.synchronized,
                          clock_error_s=self.state.error_s, tai_offset_s=self.state.tai_offset_s)
            # Spread the sessions' first packets over one interval.
            n = len(a.reflectors)
            for i, r in enumerate(a.reflectors):
                self.add_session(r, offset_ns=int(i * a.interval * 1e9 / n))
            if a.reflector_dns:
                resolver = Resolver(a.reflector_dns, a.dns_interval, self.log, a.address_family,
                                    a.max_peers, netif.addresses(a.interface))
                resolver.start()
            try:
                self._loop(resolver)
            finally:
                if resolver:
                    resolver.stop()
                self._drain()
                self._push_records(force=True)
                self.pusher.push([s.stats_record(ended=True) for s in self.sessions.values()])
                self._push_service_stats()
                self.tx.close()
                rx_stamps.close()
        if self.hist:
            self.hist.flush()
        self._summary()

    def _loop(self, resolver):
        a = self.args
        every_second = runtime.Every(1.0)
        every_stats = runtime.Every(5.0)
        every_summary = runtime.Every(a.summary_interval)
        auth_failures = runtime.AuthFailures(self.log, "replies")
        while not self.stop.stopped:
            self._send_due()
            self._wait()
            self._drain()
            if every_second.due():
                self._set_clock(runtime.refresh_clock(self.dp, self.state, self.log))
                self._find_missing_routes()
                if resolver:
                    self._apply_dns(resolver.latest())
                self._end_finished_stopping()
                if self.hist:
                    self.hist.maybe_flush()
            if every_stats.due():
                # Records stay in order: the exporter reads a count going down as a restart.
                self._push_records(force=True)
                self.pusher.push([s.stats_record() for s in self.sessions.values()])
                self._push_service_stats()
                auth_failures.check(self.dp.stats())
            if every_summary.due():
                for s in self.sessions.values():
                    self.log.info("session_stats", **s.summary())
            # Every count sent (nothing left on the schedule): done once all are judged.
            if (a.count and not a.reflector_dns and not self.schedule
                    and all(s.finished() for s in self.sessions.values())):
                break

    def _send_due(self):
        now = time.monotonic_ns()
        while self.schedule and self.schedule[0][0] <= now:
            _, ip = heapq.heappop(self.schedule)
            s = self.sessions.get(ip)
            if s is None:
                continue
            s.scheduled = False
            if s.next_send_ns() is None:
                continue        # stopping, or its count is sent
            mono, wall = now_ns()
            seq = s.next_seq
            if self.tx.send(seq, s.reflector, s.port, s.ssid.ssid):
                s.on_sent(mono, wall)
                heapq.heappush(self.deadlines, (s.give_up_at(s.outstanding[seq]), ip, seq))
            else:
                s.skip()            # the kernel refused it: nothing left to wait for
                self.log.warning("send_failed", reflector=s.label, seq=seq, errors=self.tx.errors)
            self._schedule(s)

    def _wait(self):
        """Wait for replies until the next send is due (at most MAX_WAIT_MS)."""
        now = time.monotonic_ns()
        due = self.schedule[0][0] if self.schedule else now + MAX_WAIT_MS * 1_000_000
        wait_ns = min(due - now, MAX_WAIT_MS * 1_000_000)
        if wait_ns >= 1_000_000:
            self.dp.poll(wait_ns // 1_000_000)
        else:
            # Under a millisecond: bcc's poll counts whole ms, so sleep the rest.
            self.dp.poll(0)
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)

    def _drain(self):
        """Turn this iteration's replies and expiries into counts and records."""
        self.dp.poll(0)
        our_ee = self.our_ee
        for raw in self.pending:
            ev = self.dp.event(raw)
            self._on_reply(decode_reply(ev, our_ee, self.state.tai_offset_s), ev)
        self.pending.clear()
        now = time.monotonic_ns()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, ip, seq = heapq.heappop(self.deadlines)
            s = self.sessions.get(ip)
            sent = s.declare_lost(seq) if s else None
            if sent is None:
                continue        # answered in time, or its session is gone
            if s.direction is not None:
                s.direction.on_lost(seq)
            self.out.append(records.SenderPacket(
                s.reflector, s.port, s.local, s.local_port, records.OUTCOME_LOST, False,
                self.ts_kind, 0, seq, 0, sent.wall_ns, 0, 0, 0, 0, 0, *s.counters()))
            if self.live:
                print(view.lost_line(s, seq), flush=True)
            self.log.debug("lost", reflector=s.label, seq=seq)
        self._push_records(now)

    def _push_records(self, now=None, force=False):
        """Push the records gathered so far, in batches: one ZeroMQ message per
        PUSH_BATCH records or per PUSH_EVERY_NS, not one per packet."""
        if not self.out:
            return
        now = time.monotonic_ns() if now is None else now
        if not self.out_since:
            self.out_since = now
        if force or len(self.out) >= PUSH_BATCH or now - self.out_since >= PUSH_EVERY_NS:
            self.pusher.push(self.out)
            self.out = []
            self.out_since = 0

    def _on_reply(self, r, ev):
        s = self.sessions.get(ev.reflector)
        if s is None or ev.reflector_port != s.port:
            return
        if ev.local != s.local and not s.local_mismatch:
            s.local_mismatch = True
            self.log.warning("source_address_differs", reflector=s.label, route=s.local,
                             reply_to=ev.local, hint="the reply came back to another of our "
                             "addresses; series stay labelled with the route's")
        counted, note = s.ssid.accept(reply_ssid(ev))
        if note == "zeroed":
            self.log.info("ssid_not_echoed", reflector=s.label, ssid=s.ssid.ssid,
                          hint="the reflector zeroes the SSID (RFC 8762 only); replies are "
                               "still counted")
        elif note == "mismatch":
            self.log.warning("ssid_mismatch", reflector=s.label, ssid=s.ssid.ssid,
                             reply_ssid=reply_ssid(ev), seq=r.seq,
                             hint="a reply with another session's SSID is not counted")
        if not counted:
            return
        outcome, reordered = s.on_reply(r)
        if outcome is None:
            self.log.debug("reply_ignored", reflector=s.label, seq=r.seq,
                           reason="not outstanding (declared lost, or not sent by us)")
            return
        if s.direction is not None:
            s.direction.on_reply(r.seq, ev.tlvs)
        if s.tlvs is not None and outcome != records.OUTCOME_DUPLICATE:
            s.tlvs.on_reply(ev.tlvs, ev.reply_tos, ev.local, ev.local_port, s.reflector, s.port)
        name = records.OUTCOMES[outcome]
        if not r.valid and outcome != records.OUTCOME_DUPLICATE and s.invalid == 1:
            self.log.warning("timestamp_missing", reflector=s.label, seq=r.seq,
                             hint="a reply without T1, T2, T3 or T4: no delays for it")
        if self.hist and r.valid and outcome != records.OUTCOME_DUPLICATE:
            for d, value in zip(DIRECTIONS, delays(r.t1, r.t2, r.t3, r.t4)):
                self.hist.observe(s.label, d, value)
        self.out.append(records.SenderPacket(
            s.reflector, s.port, s.local, s.local_port, outcome, reordered, self.ts_kind,
            r.sender_ttl, r.seq, r.reflector_seq, r.t1, r.t2, r.t3, r.t4, r.sender_ee,
            r.reflector_ee, *s.counters()))
        if self.live:
            print(view.reply_line(s, r, name, reordered), flush=True)
        if self.args.debug:
            self.log.debug("reply", reflector=s.label, seq=r.seq, outcome=name,
                           reordered=reordered, t1_ns=r.t1, t2_ns=r.t2, t3_ns=r.t3, t4_ns=r.t4,
                           sender_ttl=r.sender_ttl, reply_ttl=ev.reply_ttl,
                           payload_len=ev.payload_len)

    def _set_clock(self, state):
        self.state = state
        self.our_ee = state.error_estimate(self.ptp)

    def _push_service_stats(self):
        self.pusher.push([runtime.service_stats(records.ROLE_SENDER, self.state, self.pusher,
                                                self.dp.stats()["ringbuf_lost"], self.ts_kind,
                                                self.ptp)])

    def _summary(self):
        every = self.ended + list(self.sessions.values())
        if self.live:
            for s in every:
                print(view.totals_line(s), flush=True)
        summary = {"sessions": [s.summary() for s in every], "signal": self.stop.signal,
                   "counters": self.dp.stats(), "send_errors": self.tx.errors,
                   "records_sent": self.pusher.sent, "records_dropped": self.pusher.dropped}
        if not self.live:
            self.log.info("summary", **summary)
        else:
            # On a terminal the logs are for people, but the last line stays JSON.
            print(json.dumps({"event": "summary", **summary}), flush=True)
