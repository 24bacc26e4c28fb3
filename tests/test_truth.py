"""Delays and loss against an independent truth: captures on both ends.

    [sender ns] --veth-- [middle ns: link emulator] --veth-- [reflector ns]
      capture             fwd 3 ms, back 7 ms,                 capture
                          +-0.5 ms jitter, chosen drops

The emulator delays each direction differently and drops chosen packets.
AF_PACKET captures on the sender's and the reflector's interfaces give each
packet's forward and backward delay as the wire saw it; stamp-bpf's
per-packet near-end, far-end and round-trip delays must agree within 50 us
(one packet per run may be up to 250 us off: see OUTLIERS), and its loss
count must equal what the emulator dropped, exactly.

The same holds in authenticated mode (--auth-key-file, user-space HMAC with
the kernel's receive timestamps): the `run` fixture runs once per mode.
"""

import json
import os

import pytest

from stamp_bpf.lab import capture

TOLERANCE_NS = 50_000
# On this project's 2-vCPU KVM guests, about one run in three has one packet
# whose timestamp is 50-120 us off the wire: the vCPU stalls between the TC
# egress hook that writes T1 or T3 and the tap that captures the frame. That
# error is real and is reported; the test allows at most OUTLIERS such packets
# per run, each within OUTLIER_NS, and fails on anything more.
OUTLIERS = 1
OUTLIER_NS = 250_000
# Authenticated mode takes T1 and T3 in user space, before the HMAC and the
# sendto() that follow (T2 and T4 are the kernel's receive timestamps): on the
# same guests T1 is 70-160 us before the frame is on the wire and T3 20-75 us
# (shared with other work), so near-end and round-trip delays read long by T1's
# share and far-end delays by T3's. Its bounds are wider, and docs/auth.md
# states them.
AUTH_TOLERANCE_NS = 300_000
AUTH_FAR_TOLERANCE_NS = 150_000
# And each of its two user-space timestamps can meet the vCPU stall OUTLIERS
# allows for: up to one packet per timestamp (on a host shared with other
# work, about one run in five has two).
AUTH_OUTLIERS = 2
AUTH_OUTLIER_NS = 2_000_000
COUNT = 40
DROPPED_FWD = {3, 17}
DROPPED_BACK = {9, 30}
LATE_BACK = 22          # held 450 ms on the way back: after -w 0.3, within the late window


def back_seq(seq, stateful):
    """The Sequence Number the reply to test packet `seq` carries, as the emulator keys
    back frames by it: the sender's (stateless), or a stateful reflector's own count,
    which skips the test packets dropped on the way there (jitter here never reorders)."""
    return seq - sum(f < seq for f in DROPPED_FWD) if stateful else seq


@pytest.fixture(scope="module", params=[("bpf", 4), ("bpf", 6), ("auth", 4)],
                ids=["bpf-ipv4", "bpf-ipv6", "auth-ipv4"])
def run(tmp_path_factory, request):
    """One measured session through the emulator, with captures on both ends, over
    IPv4 or IPv6 (the same bounds for both)."""
    from conftest import Service, command, require_root
    from stamp_bpf.lab.netns import Topology
    import stampnet
    require_root()
    mode_name, family = request.param
    tmp = tmp_path_factory.mktemp(f"truth-{mode_name}{family}")
    # Authenticated mode has no stateful reflector (cli.py refuses the two together),
    # and conftest.Service leaves STAMP_TEST_REFLECTOR_ARGS' --stateful off for it.
    stateful = stampnet.STATEFUL and mode_name != "auth"
    emu = ["--fwd-delay", "3ms", "--back-delay", "7ms", "--jitter", "0.5ms", "--seed", "7",
           "--drop", "fwd:" + ",".join(map(str, sorted(DROPPED_FWD))),
           "--drop", "back:" + ",".join(str(back_seq(q, stateful)) for q in sorted(DROPPED_BACK)),
           "--delay-seq", f"back:{back_seq(LATE_BACK, stateful)}=450ms"]
    (tmp / "topo").mkdir()
    mode = []
    if mode_name == "auth":
        key = tmp / "key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        mode = ["--auth-key-file", str(key)]
    with Topology("emulated", emulator_args=emu, workdir=str(tmp / "topo"),
                  ipv6=family == 6) as topo:
        refl = Service(topo, topo.reflector,
                       [command("stamp-reflector"), topo.reflector.ifname, *mode],
                       str(tmp / "reflector.log"))
        refl.wait_event("reflecting")
        with capture.start(topo, topo.sender, str(tmp / "sender.pcap")) as cap_s, \
                capture.start(topo, topo.reflector, str(tmp / "reflector.pcap")) as cap_r:
            snd = Service(topo, topo.sender,
                          [command("stamp-sender"), topo.sender.ifname, topo.reflector.ip(family),
                           "-c", str(COUNT), "-i", "0.05", "-w", "0.3", "--debug", *mode],
                          str(tmp / "sender.log"))
            assert snd.wait_exit(120) == 0, f"the sender failed:\n{snd.text()[-3000:]}"
        refl.stop()
        emu_log = [json.loads(line) for line in open(topo.emulator_log)]
    truth = capture.stamp_delays(capture.stamp_packets(capture.read_pcap(str(tmp / "sender.pcap"))),
                                 capture.stamp_packets(capture.read_pcap(str(tmp / "reflector.pcap"))),
                                 topo.sender.ip(family), authenticated=bool(mode))
    return {"sender": snd, "truth": {k.seq: v for k, v in truth.items()}, "emulator": emu_log,
            "mode": mode_name}


def test_every_packet_sent_is_on_the_wire(run):
    assert sorted(run["truth"]) == list(range(COUNT)), \
        "The sender's capture does not show sequence numbers 0..COUNT-1 exactly once each."


def test_loss_equals_what_the_emulator_dropped(run):
    drops = [e for e in run["emulator"] if e.get("event") == "drop"]
    assert len(drops) == len(DROPPED_FWD) + len(DROPPED_BACK), f"emulator drops: {drops}"
    (s,) = run["sender"].summary()["sessions"]
    assert s["sent"] == COUNT
    assert s["lost"] == len(drops), f"lost {s['lost']} but the emulator dropped {len(drops)}"
    assert s["late"] == 1, f"reply {LATE_BACK} was held 450 ms (timeout 300 ms) but late={s['late']}"
    assert s["received"] == COUNT - len(drops) - 1
    assert s["duplicates"] == 0
    assert s["reordered"] == 1, f"the held reply {LATE_BACK} came back after later ones: reordered={s['reordered']}"


def test_per_packet_delays_match_the_captures(run):
    replies = {e["seq"]: e for e in run["sender"].events("reply")}
    expected = set(range(COUNT)) - DROPPED_FWD - DROPPED_BACK
    assert set(replies) == expected, "The sender's per-packet records are not the packets that came back."
    worst = {"near_end": 0, "far_end": 0, "round_trip": 0}
    off = {}        # seq -> what was more than its tolerance off
    auth = run["mode"] == "auth"
    tolerance = {"near_end": AUTH_TOLERANCE_NS if auth else TOLERANCE_NS,
                 "far_end": AUTH_FAR_TOLERANCE_NS if auth else TOLERANCE_NS,
                 "round_trip": AUTH_TOLERANCE_NS if auth else TOLERANCE_NS}
    outlier_ns = AUTH_OUTLIER_NS if auth else OUTLIER_NS
    for seq, e in sorted(replies.items()):
        wire_near, wire_far = run["truth"][seq]
        ours = {"near_end": e["t2_ns"] - e["t1_ns"], "far_end": e["t4_ns"] - e["t3_ns"],
                "round_trip": (e["t4_ns"] - e["t1_ns"]) - (e["t3_ns"] - e["t2_ns"])}
        wire = {"near_end": wire_near, "far_end": wire_far, "round_trip": wire_near + wire_far}
        for d in ours:
            err = abs(ours[d] - wire[d])
            worst[d] = max(worst[d], err)
            assert err <= outlier_ns, (
                f"seq {seq}: {d} delay {ours[d]} ns, the captures say {wire[d]} ns "
                f"(error {err} ns, more than {outlier_ns} ns)")
            if err > tolerance[d]:
                off.setdefault(seq, []).append(f"{d} off by {err} ns")
    print(f"{run['mode']}: worst absolute error per direction, ns:", worst,
          "packets beyond their tolerance:", off)
    outliers = AUTH_OUTLIERS if auth else OUTLIERS
    assert len(off) <= outliers, (
        f"{len(off)} of {len(replies)} packets are more than {tolerance} ns off the "
        f"captures (at most {outliers} allowed): {off}")


def test_summary_matches_the_emulated_link(run):
    (s,) = run["sender"].summary()["sessions"]
    # Forward 3 ms and backward 7 ms +- 0.5 ms jitter; the late reply adds 450 ms to one far-end value.
    assert 2_400_000 <= s["near_end"]["min_ns"] <= s["near_end"]["avg_ns"] <= 4_500_000, s["near_end"]
    assert 6_400_000 <= s["far_end"]["min_ns"] <= 8_500_000, s["far_end"]
    assert s["far_end"]["max_ns"] >= 450_000_000, "the late reply's delay is missing from far_end"
    assert s["round_trip"]["min_ns"] >= 9_000_000, s["round_trip"]
    for d in ("near_end", "far_end", "round_trip"):
        assert all(isinstance(v, int) for v in s[d].values()), f"{d} values must be integer ns"
