"""kernel: what each BPF program costs per packet, by BPF_PROG_TEST_RUN.

The services' programs are loaded exactly as the services load them
(bpfprog.load with their FILES and defines) and run on a STAMP packet and on
packets that are not STAMP (TCP, UDP to port 53; IPv6: UDP to port 53, TCP, ICMPv6),
and on STAMP packets over IPv4 and IPv6,
interleaved with an empty TC program, on one CPU. Each figure is the fastest
of ROUNDS syscalls of REPEAT runs each (the mean per run the kernel reports;
slower rounds are slower by what else ran on the CPU); ring buffers are drained between
syscalls so every STAMP run writes its record, as in service.

The reflector rewrites the packet it reflects, so its second run on the same
skb would no longer be a test packet. Its STAMP path is measured through
bench wrappers compiled from the same C: the program's body, then the frame
put back from a map (and the egress hand-off re-armed to name the restored
reflected frame, which a stateful ingress would otherwise move on); the cost
of that restore alone is measured in the same round and taken off. RFC 8972
rows run the shipped C, stateless and stateful, on requests with an SSID
and with three TLVs (frames.three_tlvs). The same wrappers,
with one piece of the C removed at a time, show what dominates the cost.
Every STAMP figure is checked against the programs' own counters: a round
that did not take the STAMP path on every run is an error, not a figure.
"""

import os
import re
import shutil
import statistics
import tempfile
import time

from stamp_bpf.common import bpfprog, clock, tc
from stamp_bpf.reflector import datapath as rdp
from stamp_bpf.reflector import guard
from stamp_bpf.sender import datapath as sdp

import frames
import table
from stamp_bpf.lab.progtest import TestRunner

PART = "kernel"
REPEAT = 3000           # runs per syscall: fewer than the smaller ring buffer holds (3,276)
ROUNDS = 60
PORT = 862
TARGET_NON_STAMP_NS = 5
TARGET_REFLECT_NS = 150
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC, TC_ACT_REDIRECT = 0, 2, 0xFFFFFFFF, 7
# Packets that are not STAMP, each program's worst one is its row: IPv4 and IPv6.
# (UDP to port 862 is STAMP to the programs now, over IPv6 as over IPv4: its
# IPv6 row is from port 40000 to port 53, like IPv4's.)
NON_STAMP = {"TCP": frames.tcp, "UDP 53": frames.other_udp,
             "IPv6 UDP 53": lambda: frames.ipv6_udp(dport=53, sport=40000),
             "TCP/IPv6": frames.tcp6, "ICMPv6": frames.icmpv6_echo}

BENCH_PRELUDE = r"""
struct bench_frame { __u8 b[BENCH_LEN]; };
/* key 0: the test packet as it arrives; key 1: the reflected packet. */
BPF_ARRAY(bench_frames, struct bench_frame, 2);
BPF_ARRAY(bench_cookie, __u64, 1);

static __always_inline void bench_restore(struct __sk_buff *skb, int which)
{
	struct bench_frame *f = bench_frames.lookup(&which);

	if (f)
		bpf_skb_store_bytes(skb, 0, f->b, BENCH_LEN, 0);
}

/* The hand-off names the reflected frame (key 1) that egress is run on: a
 * stateful ingress moves its Sequence Number on with every run. */
static __always_inline void bench_rearm(void)
{
	__u32 key = 0, one = 1;
	struct reflect_handoff *h = handoff.lookup(&key);
	struct bench_frame *f = bench_frames.lookup(&one);

	if (h && f) {
		h->valid = 1;
		/* EtherType 0x86DD: an IPv6 frame, whose payload starts further on. */
		h->seq = f->b[12] == 0x86 ? *(__be32 *)&f->b[PAYLOAD_OFF6]
					  : *(__be32 *)&f->b[PAYLOAD_OFF];
	}
}

static __always_inline struct stamp_ts bench_ts_raw(__u64 ns, const struct stamp_config *cfg)
{
	struct stamp_ts ts = { bpf_htonl(ns >> 32), bpf_htonl((__u32)ns) };
	return ts;
}

static __always_inline void bench_nop(int idx) {}

int bench_empty(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }
int bench_restore_in(struct __sk_buff *skb) { bench_restore(skb, 0); bench_rearm(); return TC_ACT_UNSPEC; }
int bench_restore_eg(struct __sk_buff *skb) { bench_restore(skb, 1); bench_rearm(); return TC_ACT_UNSPEC; }

/* One helper each, to price the pieces; results land in skb->mark so none is optimised out. */
int bench_h_clock(struct __sk_buff *skb) { skb->mark = bpf_ktime_get_tai_ns(); return TC_ACT_UNSPEC; }
int bench_h_csum_diff(struct __sk_buff *skb)
{
	__u32 a[11] = {1}, b[11] = {2};

	skb->mark = bpf_csum_diff(a, sizeof(a), b, sizeof(b), 0);
	return TC_ACT_UNSPEC;
}
int bench_h_l4_csum(struct __sk_buff *skb)
{
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, 0, 0x1234, BPF_F_MARK_MANGLED_0);
	return TC_ACT_UNSPEC;
}
int bench_h_hash(struct __sk_buff *skb)
{
	struct stamp_addr addr = {};

	stamp_addr_v4(&addr, skb->mark);
	skb->mark = local_addrs.lookup(&addr) ? 1 : 2;
	return TC_ACT_UNSPEC;
}
int bench_h_ringbuf(struct __sk_buff *skb)
{
	struct stamp_reflector_event *ev = events.ringbuf_reserve(sizeof(*ev));

	if (ev) {
		ev->seq = skb->mark;
		events.ringbuf_submit(ev, 0);
	}
	return TC_ACT_UNSPEC;
}

/* The cookie the next test run's socket will get is this one + 1 (same CPU). */
int bench_cookie_probe(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *c = bench_cookie.lookup(&key);

	if (c)
		*c = bpf_get_socket_cookie(skb);
	return TC_ACT_UNSPEC;
}
"""

# name -> (what it leaves out, [(regex, replacement)]), applied to both programs.
VARIANTS = {
    "shipped": ("nothing", []),
    "noclock": ("the clock reads (bpf_ktime_get_tai_ns -> skb->tstamp)",
                [(r"bpf_ktime_get_tai_ns\(\)", "(__u64)skb->tstamp")]),
    "noconv": ("the NTP conversion (three 64-bit divisions by 1e9)",
               [(r"stamp_ts_from_tai\(", "bench_ts_raw(")]),
    "nocsum": ("the UDP checksum fix (bpf_csum_diff and bpf_l4_csum_replace)",
               [(r"diff = bpf_csum_diff\([^;]*\);", "diff = 0;"),
                (r"bpf_l4_csum_replace\(skb, p\.family == 6 \? UDP_CSUM_OFF6 : UDP_CSUM_OFF, 0, diff,"
                 r"\s*BPF_F_MARK_MANGLED_0\);", "(void)diff;")]),
    "noring": ("the ring buffer record (egress)",
               [(r"events\.ringbuf_reserve\(sizeof\(\*ev\)\)", "NULL")]),
    "nostats": ("the per-CPU counters", [(r"\bstat_inc\(", "bench_nop(")]),
    "noredirect": ("bpf_redirect (ingress returns TC_ACT_REDIRECT itself)",
                   [(r"return bpf_redirect\(skb->ifindex, 0\);", "return TC_ACT_REDIRECT;")]),
}


# RFC 8972 rows: label -> (stateful, TLVs after the base); every request has SSID 0x1234.
RFC8972_CASES = {
    "SSID, stateless": (False, b""),
    "SSID + 3 TLVs, stateless": (False, frames.three_tlvs()),
    "SSID, stateful": (True, b""),
    "SSID + 3 TLVs, stateful": (True, frames.three_tlvs()),
}

# The allow-list of the guarded rows: the bench sender's prefix among others.
GUARD_LIST = [guard.prefix(p) for p in ("10.0.0.0/8", "172.16.0.0/12", "198.18.0.0/24",
                                        "203.0.113.0/24", "2001:db8::/32", "fd00::/8")]

HELPERS = {"clock": "bpf_ktime_get_tai_ns()", "csum_diff": "bpf_csum_diff() of 44 + 44 octets",
           "l4_csum": "bpf_l4_csum_replace()", "hash": "local_addrs hash lookup",
           "ringbuf": "ring buffer reserve + submit"}
LABELS = {"noclock": "clock reads", "noconv": "NTP conversion", "nocsum": "checksum fix",
          "noring": "ring buffer record", "nostats": "counters", "noredirect": "bpf_redirect",
          "aligned": "aligned wire structs", "aligned_inline": "aligned + inline csum diff"}

# Proposed changes, measured the same way; their reflected packets' checksums are checked.
# "aligned": stamp.h's wire structs declared packed *and* aligned(4) (their
# fields are naturally aligned at 4, sizes are multiples of 4, offsets do not
# change), so clang copies them in 4-byte words instead of one byte at a time.
ALIGNED_HEADER = [(r"\} __attribute__\(\(packed\)\);", "} __attribute__((packed, aligned(4)));")]
INLINE_CSUM = [(r"bpf_csum_diff\(\(__be32 \*\)&old, sizeof\(old\), \(__be32 \*\)&new, sizeof\(new\), 0\)",
                "bench_csum_diff((const __u32 *)&old, (const __u32 *)&new, sizeof(old) / 4)")]
PROPOSALS = {
    "aligned": ("wire structs packed, aligned(4)", []),
    "aligned_inline": ("aligned(4) and the checksum difference summed inline, no bpf_csum_diff",
                       INLINE_CSUM),
}
INLINE_CSUM_C = r"""
/* bpf_csum_diff(from, 4n, to, 4n, 0) without the helper call: the 32-bit
 * one's complement sum of ~from[i] and to[i], what csum_partial() returns. */
static __always_inline __s64 bench_csum_diff(const __u32 *from, const __u32 *to, const int words)
{
	__u64 s = 0;
#pragma unroll
	for (int i = 0; i < words; i++)
		s += (__u32)~from[i] + (__u64)to[i];
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return s;
}
"""


def _read(name, src_dir=None):
    with open(os.path.join(src_dir or bpfprog.bpf_dir(), name)) as f:
        return f.read()


def aligned_copy(dest):
    """bpf/ copied to `dest` with ALIGNED_HEADER applied to stamp.h; returns dest."""
    for name in os.listdir(bpfprog.bpf_dir()):
        if name.endswith((".c", ".h")):
            text = _read(name)
            if name == "stamp.h":
                for pattern, repl in ALIGNED_HEADER:
                    text = re.sub(pattern, repl, text)
            with open(os.path.join(dest, name), "w") as f:
                f.write(text)
    return dest


def _wrapped(variant, edits, src_dir=None):
    """The reflector's two programs as inline functions, edited, with bench entry points."""
    out = []
    for fname, prog, restore in (("reflector_ingress.c", "reflector_ingress", 0),
                                 ("reflector_egress.c", "reflector_egress", 1)):
        text = _read(fname, src_dir)
        for pattern, repl in edits:
            text = re.sub(pattern, repl, text)
        text = text.replace(f"int {prog}(struct __sk_buff *skb)",
                            f"static __always_inline int {prog}_{variant}(struct __sk_buff *skb)")
        # The programs' own static functions, once per variant.
        text = re.sub(r"\b(grow_to_base|set_dscp|turn_around)(\w*)\(", rf"\1\2_{variant}(", text)
        rearm = " bench_rearm();"       # both sides: see bench_rearm
        side = "in" if restore == 0 else "eg"
        text += (f"\nint bench_{side}_{variant}(struct __sk_buff *skb)\n"
                 f"{{ int rc = {prog}_{variant}(skb); bench_restore(skb, {restore});{rearm} return rc; }}\n"
                 f"int bench_raw_{side}_{variant}(struct __sk_buff *skb) {{ return {prog}_{variant}(skb); }}\n")
        out.append(text)
    return "\n".join(out)


def bench_source(variants, src_dir=None):
    # The reflector's headers, joined as its loader joins them (map accesses rewritten).
    parts = [_read(h, src_dir) for h in rdp.FILES if h.endswith(".h")]
    parts += [BENCH_PRELUDE, INLINE_CSUM_C]
    parts += [_wrapped(v, edits, src_dir) for v, (_, edits) in variants.items()]
    return "\n".join(parts)


class BenchModule:
    """The bench wrappers of `variants`, compiled from `src_dir`, configured like a reflector."""

    def __init__(self, variants, frames_, clock_state, src_dir=None, stateful=False):
        from bcc import BPF
        defines = {**rdp.defines(PORT, False, stateful), "BENCH_LEN": len(frames_[0])}
        cflags = bpfprog.cflags(defines)
        if src_dir:
            cflags = [f"-I{src_dir}"] + cflags
        b = BPF(text=bench_source(variants, src_dir), cflags=cflags)
        self.dp = rdp.ReflectorDatapath(b, False)
        self.dp.configure(clock_state)
        self.dp.set_addresses([frames.REFLECTOR_ADDR, frames.REFLECTOR_ADDR6])
        names = ["bench_empty", "bench_restore_in", "bench_restore_eg", "bench_cookie_probe"]
        names += [f"bench_h_{h}" for h in HELPERS]
        names += [f"bench_{k}{s}_{v}" for v in variants for s in ("in", "eg") for k in ("", "raw_")]
        self.fd = {name: b.load_func(name, BPF.SCHED_CLS).fd for name in names}
        for i, frame in enumerate(frames_):
            self.set_frame(i, frame)

    def set_frame(self, i, frame):
        """What bench_restore(skb, i) puts back: 0 the request, 1 the reflected frame."""
        fr = self.dp.bpf["bench_frames"]
        leaf = fr.Leaf()
        leaf.b[:] = list(frame)
        fr[fr.Key(i)] = leaf

    def reflect_own(self):
        """Set frame 1 to what this module's own ingress makes of frame 0 (checked)."""
        request = bytes(self.dp.bpf["bench_frames"][self.dp.bpf["bench_frames"].Key(0)].b)
        r = TestRunner(request)
        rc, _ = r.run(self.fd["bench_raw_in_shipped"], 1)
        out = r.output()
        if rc != TC_ACT_REDIRECT or not reflected_ok(out):
            raise RuntimeError(f"the RFC 8972 bench frame was not reflected with valid checksums "
                               f"(returned {rc})")
        self.set_frame(1, out)
        return out


class Bench:
    """Programs loaded, frames ready, one CPU; runs interleaved rounds."""

    def __init__(self, tmp):
        self.cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {self.cpu})
        st = self.clock_state = clock.read()
        t0 = time.monotonic()
        self.refl, rprogs = rdp.load(PORT, False)
        self.snd, sprogs = sdp.load(PORT, PORT, False)
        self.load_s = time.monotonic() - t0
        self.refl.configure(st)
        self.refl.set_addresses([frames.REFLECTOR_ADDR, frames.REFLECTOR_ADDR6])
        self.snd.add_session(frames.REFLECTOR_ADDR, frames.SENDER_ADDR)
        self.snd.add_session(frames.REFLECTOR_ADDR6, frames.SENDER_ADDR6)
        self.snd.configure(st)
        self.prog = {"reflector ingress": rprogs[tc.INGRESS].fd, "reflector egress": rprogs[tc.EGRESS].fd,
                     "sender egress": sprogs[tc.EGRESS].fd, "sender ingress": sprogs[tc.INGRESS].fd}
        self.request = frames.stamp_request(sport=PORT, dport=PORT)
        # The reflected frame, from one real run of the shipped ingress program.
        r = TestRunner(self.request)
        rc, _ = r.run(self.prog["reflector ingress"], 1)
        if rc != TC_ACT_REDIRECT:
            raise RuntimeError(f"the reflector's ingress did not reflect the test packet (returned {rc})")
        self.reflected = r.output()
        if not (frames.udp_checksum_ok(self.reflected) and frames.ip_checksum_ok(self.reflected)):
            raise RuntimeError("the reflected test packet has a wrong checksum")
        pair = (self.request, self.reflected)
        self.bench = BenchModule(VARIANTS, pair, st)
        self.proposed = BenchModule(PROPOSALS, pair, st, aligned_copy(tmp))
        # RFC 8972: {label: (module, request, reflected)}, only the shipped programs.
        self.rfc8972 = {}
        for label, (stateful, tlvs) in RFC8972_CASES.items():
            req = frames.stamp_request(sport=PORT, dport=PORT, ssid=0x1234, tlvs=tlvs)
            mod = BenchModule({"shipped": VARIANTS["shipped"]}, (req, req), st, stateful=stateful)
            self.rfc8972[label] = (mod, req, mod.reflect_own())
        # The guard (bpf/guard.h) on: an allow-list holding the sender, and a rate
        # limit no bench run reaches (1e9/s, 1e6 deep) so every run takes the
        # compare-and-swap and is reflected; and a list without the sender.
        self.guarded = BenchModule({"shipped": VARIANTS["shipped"]}, pair, st)
        self.guarded.dp.set_guard(GUARD_LIST, guard.rate_limit(1e9, 10**6))
        self.refused = BenchModule({"shipped": VARIANTS["shipped"]}, pair, st)
        self.refused.dp.set_guard([guard.prefix("203.0.113.0/24")], guard.rate_limit(0, 1))
        # IPv6: the shipped programs on the same packets over IPv6, stateless.
        self.request6 = frames.stamp_request6(sport=PORT, dport=PORT)
        self.ipv6 = BenchModule({"shipped": VARIANTS["shipped"]}, (self.request6, self.request6), st)
        self.reflected6 = self.ipv6.reflect_own()
        self.records = {}
        for dp in self.datapaths():
            self.records[id(dp)] = 0
            dp.open_events(lambda raw, k=id(dp): self.records.__setitem__(k, self.records[k] + 1))

    def datapaths(self):
        return (self.refl, self.snd, self.bench.dp, self.proposed.dp, self.guarded.dp,
                self.refused.dp, self.ipv6.dp, *(m.dp for m, _, _ in self.rfc8972.values()))

    def drain(self):
        for dp in self.datapaths():
            dp.bpf.ring_buffer_consume()

    def measure(self, jobs, rounds=ROUNDS, repeat=REPEAT, pick=min):
        """{name: pick(ns per run over the rounds)} for jobs {name: (fd, runner, expect)}.

        With many runs per syscall the minimum over rounds is the figure (the
        other rounds are slower only by what else ran on the CPU, as timeit
        says); for one run per syscall, the median.

        expect: (datapath, counter, rc): the counter must advance by `repeat`
        per syscall and the program return rc; (None, None, rc): only rc is
        checked; None: nothing is.
        """
        samples = {name: [] for name in jobs}
        for _ in range(rounds):
            for name, (fd, runner, expect) in jobs.items():
                before = self._count(*expect[:2]) if expect and expect[0] else None
                if name.startswith("sender egress, STAMP"):
                    self._arm_cookie(runner)
                rc, ns = runner.run(fd, repeat)
                self.drain()
                if expect:
                    dp, counter, want_rc = expect
                    if rc != want_rc:
                        raise RuntimeError(f"{name}: returned {rc}, expected {want_rc}")
                    if dp is not None and self._count(dp, counter) - before != repeat:
                        raise RuntimeError(f"{name}: {self._count(dp, counter) - before} of {repeat} "
                                           f"runs took the STAMP path ({counter})")
                samples[name].append(ns)
        return {name: pick(v) for name, v in samples.items()}

    def _count(self, dp, counter):
        """A program counter, or "records": ring buffer records drained so far."""
        return self.records[id(dp)] if counter == "records" else dp.stats()[counter]

    def _arm_cookie(self, runner):
        """Make the next test run's socket the one the sender stamps for."""
        runner.run(self.bench.fd["bench_cookie_probe"], 1)
        t = self.bench.dp.bpf["bench_cookie"]
        self.snd.socket_cookie = t[t.Key(0)].value + 1
        self.snd.configure(self.clock_state)


def run(log=print):
    tmp = tempfile.mkdtemp(prefix="stamp-bench-kc-")
    try:
        return _run(log, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(log, tmp):
    b = Bench(tmp)
    log(f"kernel: programs loaded, measuring on CPU {b.cpu}")
    tcp = TestRunner(frames.tcp())
    foreign = {name: TestRunner(make()) for name, make in NON_STAMP.items()}
    req = TestRunner(b.request)
    refl = TestRunner(b.reflected)
    reply = TestRunner(frames.stamp_reply(sport=PORT, dport=PORT))
    unspec = (None, None, TC_ACT_UNSPEC)
    jobs = {"empty": (b.bench.fd["bench_empty"], tcp, None)}
    for prog, fd in b.prog.items():
        for pkt, runner in foreign.items():
            jobs[f"{prog}, {pkt}"] = (fd, runner, unspec)
    jobs["sender egress, STAMP"] = (b.prog["sender egress"], req, (b.snd, "t1_stamped", TC_ACT_UNSPEC))
    jobs["sender ingress, STAMP"] = (b.prog["sender ingress"], reply, (b.snd, "replies_taken", TC_ACT_SHOT))
    req6, refl6 = TestRunner(b.request6), TestRunner(b.reflected6)
    reply6 = TestRunner(frames.stamp_reply6(sport=PORT, dport=PORT))
    jobs["sender egress, STAMP IPv6"] = (b.prog["sender egress"], req6, (b.snd, "t1_stamped", TC_ACT_UNSPEC))
    jobs["sender ingress, STAMP IPv6"] = (b.prog["sender ingress"], reply6,
                                          (b.snd, "replies_taken", TC_ACT_SHOT))
    jobs["IPv6 restore in"] = (b.ipv6.fd["bench_restore_in"], req6, None)
    jobs["IPv6 restore eg"] = (b.ipv6.fd["bench_restore_eg"], refl6, None)
    jobs["IPv6 in"] = (b.ipv6.fd["bench_in_shipped"], req6, (b.ipv6.dp, "reflected", TC_ACT_REDIRECT))
    jobs["IPv6 eg"] = (b.ipv6.fd["bench_eg_shipped"], refl6, (b.ipv6.dp, "t3_stamped", TC_ACT_UNSPEC))
    for mod, variants in ((b.bench, VARIANTS), (b.proposed, PROPOSALS)):
        tag = "" if mod is b.bench else "p "
        jobs[f"{tag}restore in"] = (mod.fd["bench_restore_in"], req, None)
        jobs[f"{tag}restore eg"] = (mod.fd["bench_restore_eg"], refl, None)
        for v in variants:
            # Proof of the STAMP path: the counters, or (without them) the
            # return code and the ring buffer records. Ingress runs first in
            # each round and leaves egress its hand-off; egress re-arms it.
            jobs[f"in {v}"] = (mod.fd[f"bench_in_{v}"], req, (mod.dp, "reflected", TC_ACT_REDIRECT)
                               if v != "nostats" else (None, None, TC_ACT_REDIRECT))
            jobs[f"eg {v}"] = (mod.fd[f"bench_eg_{v}"], refl, (mod.dp, "t3_stamped", TC_ACT_UNSPEC)
                               if v != "nostats" else (mod.dp, "records", TC_ACT_UNSPEC))
    for label, (mod, rq, rf) in b.rfc8972.items():
        rq_run, rf_run = TestRunner(rq), TestRunner(rf)
        jobs[f"{label} restore in"] = (mod.fd["bench_restore_in"], rq_run, None)
        jobs[f"{label} restore eg"] = (mod.fd["bench_restore_eg"], rf_run, None)
        jobs[f"{label} in"] = (mod.fd["bench_in_shipped"], rq_run, (mod.dp, "reflected", TC_ACT_REDIRECT))
        jobs[f"{label} eg"] = (mod.fd["bench_eg_shipped"], rf_run, (mod.dp, "t3_stamped", TC_ACT_UNSPEC))
    g = b.guarded
    jobs["guarded restore in"] = (g.fd["bench_restore_in"], req, None)
    jobs["guarded restore eg"] = (g.fd["bench_restore_eg"], refl, None)
    jobs["guarded in"] = (g.fd["bench_in_shipped"], req, (g.dp, "reflected", TC_ACT_REDIRECT))
    jobs["guarded eg"] = (g.fd["bench_eg_shipped"], refl, (g.dp, "t3_stamped", TC_ACT_UNSPEC))
    jobs["not allowed"] = (b.refused.fd["bench_raw_in_shipped"], req,
                           (b.refused.dp, "not_allowed", TC_ACT_UNSPEC))
    for h in HELPERS:
        jobs[f"helper {h}"] = (b.bench.fd[f"bench_h_{h}"], req, None)
    m = b.measure(jobs)
    checks = proposal_checks(b)

    # One packet per syscall: the shipped programs as they are, cold-ish.
    one = b.measure({"empty x1": (b.bench.fd["bench_empty"], tcp, None),
                     "ingress x1": (b.prog["reflector ingress"], req, (b.refl, "reflected", TC_ACT_REDIRECT)),
                     "egress x1": (b.prog["reflector egress"], refl, (b.refl, "t3_stamped", TC_ACT_UNSPEC))},
                    rounds=2000, repeat=1, pick=statistics.median)
    return rows(m, one, checks, b.load_s)


def reflected_ok(frame):
    """Valid checksums in a reflected frame of either family."""
    if frame[12:14] == b"\x86\xdd":
        return frames.udp6_checksum_ok(frame)
    return frames.udp_checksum_ok(frame) and frames.ip_checksum_ok(frame)


def reflect_once(ingress_fd, egress_fd, request):
    """The frame that leaves after ingress then egress (same CPU: the hand-off carries over)."""
    r = TestRunner(request)
    rc, _ = r.run(ingress_fd, 1)
    if rc != TC_ACT_REDIRECT:
        raise RuntimeError(f"ingress returned {rc}, not TC_ACT_REDIRECT")
    e = TestRunner(r.output())
    e.run(egress_fd, 1)
    return e.output()


def _masked(frame):
    """The frame without its UDP checksum and the two timestamps that change per run (T3, T2)."""
    f = bytearray(frame)
    for lo, hi in ((40, 42), (42 + 4, 42 + 12), (42 + 16, 42 + 24)):
        f[lo:hi] = bytes(hi - lo)
    return bytes(f)


def proposal_checks(b):
    """{proposal: problem or ""}: the packet a proposal sends must be the shipped one's,
    byte for byte except the timestamps, with valid IP and UDP checksums."""
    shipped = reflect_once(b.prog["reflector ingress"], b.prog["reflector egress"], b.request)
    out = {}
    for v in PROPOSALS:
        got = reflect_once(b.proposed.fd[f"bench_raw_in_{v}"], b.proposed.fd[f"bench_raw_eg_{v}"],
                           b.request)
        if not (frames.udp_checksum_ok(got) and frames.ip_checksum_ok(got)):
            out[v] = "its reflected packet has a wrong checksum"
        elif _masked(got) != _masked(shipped):
            out[v] = "its reflected packet differs from the shipped program's"
        else:
            out[v] = ""
    return out


def rows(m, one, checks, load_s):
    empty = m["empty"]
    out = [table.row(PART, "empty TC program (harness only)", empty, "ns/pkt",
                     note=f"fastest of {ROUNDS} syscalls x {REPEAT:,} runs (mean per run), one CPU, all "
                          f"figures interleaved; bcc compile and load of both services {load_s:.1f} s")]
    for prog in ("sender egress", "sender ingress", "reflector ingress", "reflector egress"):
        worst = max(NON_STAMP, key=lambda p: m[f"{prog}, {p}"])
        extra = m[f"{prog}, {worst}"] - empty
        out.append(table.row(PART, f"{prog}, non-STAMP: extra over empty", extra, "ns/pkt", "<=",
                             TARGET_NON_STAMP_NS,
                             note=f"worst of {'/'.join(NON_STAMP)} is {worst}: " + ", ".join(
                                 f"{p} {m[f'{prog}, {p}']:.0f}" for p in NON_STAMP)
                             + f" ns gross, empty {empty:.0f}"))
    out.append(table.row(PART, "sender egress, STAMP (T1)", m["sender egress, STAMP"] - empty, "ns/pkt",
                         note=f"net of the empty program; gross {m['sender egress, STAMP']:.0f} ns"))
    out.append(table.row(PART, "sender ingress, STAMP (T4, record)", m["sender ingress, STAMP"] - empty,
                         "ns/pkt", note=f"net; gross {m['sender ingress, STAMP']:.0f} ns"))
    cin = m["in shipped"] - m["restore in"]
    ceg = m["eg shipped"] - m["restore eg"]
    out.append(table.row(PART, "reflector ingress, STAMP (T2, rewrite)", cin, "ns/pkt",
                         note="net: bench wrapper minus the frame restore measured beside it"))
    out.append(table.row(PART, "reflector egress, STAMP (T3, record)", ceg, "ns/pkt", note="net, as above"))
    out.append(table.row(PART, "reflection path (ingress + egress)", cin + ceg, "ns/pkt", "<",
                         TARGET_REFLECT_NS, note=f"net of the harness; with it ({empty:.0f} ns per "
                         f"program) {cin + ceg + 2 * empty:.0f} ns"))
    out.append(table.row(PART, "sender egress, STAMP over IPv6 (T1)", m["sender egress, STAMP IPv6"] - empty,
                         "ns/pkt", note=f"net; gross {m['sender egress, STAMP IPv6']:.0f} ns; "
                         f"{m['sender egress, STAMP IPv6'] - m['sender egress, STAMP']:+.0f} ns over IPv4"))
    out.append(table.row(PART, "sender ingress, STAMP over IPv6 (T4, record)",
                         m["sender ingress, STAMP IPv6"] - empty, "ns/pkt",
                         note=f"net; gross {m['sender ingress, STAMP IPv6']:.0f} ns; "
                         f"{m['sender ingress, STAMP IPv6'] - m['sender ingress, STAMP']:+.0f} ns over IPv4"))
    in6, eg6 = m["IPv6 in"] - m["IPv6 restore in"], m["IPv6 eg"] - m["IPv6 restore eg"]
    out.append(table.row(PART, "reflection path over IPv6", in6 + eg6, "ns/pkt",
                         note=f"net, as above; ingress {in6:.0f}, egress {eg6:.0f} ns; "
                              f"{in6 + eg6 - cin - ceg:+.0f} ns over IPv4"))
    for label in RFC8972_CASES:
        rin = m[f"{label} in"] - m[f"{label} restore in"]
        reg = m[f"{label} eg"] - m[f"{label} restore eg"]
        out.append(table.row(PART, f"reflection path, {label}", rin + reg, "ns/pkt",
                             note=f"net, as above; ingress {rin:.0f}, egress {reg:.0f} ns; "
                                  f"{rin + reg - cin - ceg:+.0f} ns over the base packet, stateless"))
    gin = m["guarded in"] - m["guarded restore in"]
    geg = m["guarded eg"] - m["guarded restore eg"]
    out.append(table.row(PART, "reflection path, allow-list and rate limit on", gin + geg, "ns/pkt",
                         "<", TARGET_REFLECT_NS,
                         note=f"net, as above; {len(GUARD_LIST)} prefixes, a token taken per packet "
                              f"(compare-and-swap); {gin + geg - cin - ceg:+.0f} ns over the guard off"))
    out.append(table.row(PART, "reflector ingress, sender not allowed (passed on)",
                         m["not allowed"] - empty, "ns/pkt",
                         note=f"net of the empty program; gross {m['not allowed']:.0f} ns; "
                              "counted, no checksum summed"))
    for v, (what, _) in VARIANTS.items():
        if v == "shipped":
            continue
        vin = m[f"in {v}"] - m["restore in"]
        veg = m[f"eg {v}"] - m["restore eg"]
        out.append(table.row(PART, f"  reflection path without {LABELS[v]}", vin + veg, "ns/pkt",
                             note=f"{cin + ceg - vin - veg:+.0f} ns saved: without {what}"))
    for v, (what, _) in PROPOSALS.items():
        pin = m[f"in {v}"] - m["p restore in"]
        peg = m[f"eg {v}"] - m["p restore eg"]
        label = f"  proposed: {LABELS[v]}"
        if checks[v]:
            out.append(table.not_measured(PART, label, "ns/pkt", checks[v]))
            continue
        out.append(table.row(PART, label, pin + peg, "ns/pkt", "<", TARGET_REFLECT_NS,
                             note=f"{cin + ceg - pin - peg:+.0f} ns saved ({what}); ingress {pin:.0f}, "
                                  f"egress {peg:.0f} ns; the packet sent is the shipped one's, checksums valid"))
    for h, what in HELPERS.items():
        out.append(table.row(PART, f"  one {what}", m[f"helper {h}"] - empty, "ns/pkt",
                             note="alone in a program, net of the empty one" if h == "clock" else ""))
    out.append(table.row(PART, "reflection path, one packet per syscall",
                         one["ingress x1"] + one["egress x1"] - 2 * one["empty x1"], "ns/pkt",
                         note=f"cold-ish: ingress {one['ingress x1']:.0f}, egress {one['egress x1']:.0f}, "
                              f"empty {one['empty x1']:.0f} ns gross (the clock reads of the harness "
                              "are not amortised); ring buffer drained after each"))
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
