"""Sender and reflector on the loopback interface of one host, as a user first
tries them (stamp-reflector lo; stamp-sender lo 127.0.0.1), in both timestamping
modes: the reflector's guard, which refuses requests from the host's own
addresses on every other interface, answers them on lo (bpf/guard.h,
guard_bad_source()).
"""

import json
import subprocess

import pytest

from conftest import command, require_root

pytestmark = pytest.mark.timeout(240)

SCRIPT = """set -e
ip link set lo up
{reflector} lo --log-format json {mode} > {log} 2>&1 &
r=$!
for i in $(seq 100); do grep -q '"event": "reflecting"' {log} && break; sleep 0.1; done
{sender} lo {target} -s 40862 --count 5 --interval 0.1 --log-format json {mode} || true
kill -INT $r; wait $r || true
"""


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("mode", ["", "--timestamping user"])
def test_sender_and_reflector_on_lo_measure_each_other(tmp_path, target, mode):
    require_root()
    log = tmp_path / "reflector.log"
    script = SCRIPT.format(reflector=command("stamp-reflector"), sender=command("stamp-sender"),
                           mode=mode, log=log, target=target)
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True,
                          text=True, timeout=180)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    summary = [x for x in lines if x.get("event") == "summary" and x.get("service") == "sender"]
    assert summary, f"no sender summary:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n{log.read_text()[-2000:]}"
    session = summary[-1]["sessions"][0]
    assert (session["sent"], session["received"]) == (5, 5), \
        f"On lo the sender should get 5 of 5 replies ({mode or 'bpf'}): {session}\n" \
        f"reflector log:\n{log.read_text()[-2000:]}"
