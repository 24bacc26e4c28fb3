"""A sender whose reflector never answers labels its series with its real address.

    [sender ns] --veth-- [reflector ns: nothing listening]
    stamp-sender  ---- ipc:// records ----> stamp-exporter (this ns)

The alerting case: the reflector is down from the start. The lost packets must
be counted under sender="<the sender's address>:862" (the route's source
address), not sender="0.0.0.0:862", so that the series is the same one the
replies will count under once the reflector answers.
"""

import shutil
import tempfile

import pytest

from test_exporter import ExporterProcess

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="stl-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_lost_packets_are_labelled_with_the_senders_real_address(topology, service, short_dir):
    topo = topology("direct")
    exp = ExporterProcess(short_dir)
    try:
        snd = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                      "-c", 4, "-i", "0.05", "-w", "0.2", "--late-window", "0.1",
                      "--zmq", exp.endpoint)
        assert snd.wait_exit(120) == 0, f"The sender failed:\n{snd.text()[-3000:]}"
        assert snd.summary()["sessions"][0]["lost"] == 4, "No reflector: every packet is lost."
        labels = {"reflector": f"{topo.reflector.addr}:862", "sender": f"{topo.sender.addr}:862"}
        got = exp.wait_for("stamp_packets_lost_total", labels, 4.0)
        senders = {dict(lab).get("sender") for (name, lab) in got if name.startswith("stamp_packets_")}
        assert senders == {labels["sender"]}, \
            f"Every sender series carries the sender's real address, not 0.0.0.0: {senders}"
    finally:
        exp.stop()

