"""Partial (offloaded) UDP checksums, as veth carries them with TX offload on.

A frame from a local sender on veth with TX checksum offload keeps only the
pseudo-header sum in its checksum field; the kernel's UDP accepts it, and so
must the reflector's and the sender's checksum checks.
"""

from conftest import reflector


def test_partial_checksums_from_offloading_veths_are_accepted(topology, service):
    topo = topology("direct")
    for host in (topo.sender, topo.reflector):
        topo.run(host, ["ethtool", "-K", host.ifname, "tx", "on"], check=True,
                 capture_output=True)
    refl = reflector(service, topo)
    snd = service(topo, topo.sender, "stamp-sender", topo.sender.ifname, topo.reflector.addr,
                  "-c", 5, "-i", 0.02, "-w", 0.5)
    assert snd.wait_exit() == 0, snd.text()[-3000:]
    (s,) = snd.summary()["sessions"]
    assert s["received"] == 5, f"offloaded checksums were taken for bad ones: {s}"
    refl.stop()
    assert refl.summary()["counters"]["bad_checksum"] == 0
