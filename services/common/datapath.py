"""The user-space side of a loaded stamp-bpf datapath (bcc object).

Writes the runtime settings the programs read (struct stamp_config), reads
the per-CPU counters and drains the ring buffer, handing each record's raw
bytes to a decoder from services/common/events.py.
"""

import ctypes
import socket

from . import addr

# The ring buffer's size in pages, the same for both services: 2 MiB, about
# 2 s of records at 10,000 packets/s, so a sender or reflector process that
# waits for a CPU does not lose records (a lost sender record is a reply
# counted as lost). Passed to bpf/maps.h as -DRINGBUF_PAGES.
RINGBUF_PAGES = 512

# The per-CPU counters, in the order of enum stamp_stat (bpf/stamp.h). Its
# first two (STAT_STAMPED, STAT_RECEIVED) count different things in the two
# services, so each service names them for what they count here.
# The reflector's reasons for not reflecting among them are records.DROP_REASONS;
# tests/test_guard_unit.py checks these names against the enum.
_COMMON_STATS = ("ringbuf_lost", "loop_guard", "too_short", "bad_checksum",
                 "tlv_unrecognized", "tlv_malformed", "sessions_created", "sessions_expired",
                 "not_allowed", "rate_limited", "malformed", "bad_source")
SENDER_STATS = ("t1_stamped",       # sender_egress.c wrote T1 into a test packet
                "replies_taken") + _COMMON_STATS   # sender_ingress.c took a reply
REFLECTOR_STATS = ("reflected",     # reflector_ingress.c stamped T2 and sent a reply
                   "t3_stamped") + _COMMON_STATS   # reflector_egress.c wrote T3


def stamp_addr(ctype, address):
    """A struct stamp_addr map key or value (`ctype`: a table's Key or Leaf) of an
    address of either family: 16 octets, IPv4 ones IPv4-mapped (addr.py)."""
    out = ctype()
    ctypes.memmove(ctypes.addressof(out), addr.pack16(address), 16)
    return out


def addr_key(table, address):
    """The map key (struct stamp_addr) of an address of either family."""
    return stamp_addr(table.Key, address)


class Datapath:
    """A loaded service datapath: its config, counters and event ring."""

    STATS = ()      # the counters' names: SENDER_STATS or REFLECTOR_STATS

    def __init__(self, bpf, ptp):
        self.bpf = bpf
        self.ptp = ptp
        self._config = bpf[b"config"]
        self.socket_cookie = 0      # sender: set before the first configure()

    def configure(self, clock_state):
        """Write the TAI offset, the Error Estimate and the socket cookie."""
        leaf = self._config.Leaf()
        leaf.tai_offset_ns = clock_state.tai_offset_s * 1_000_000_000
        leaf.sock_cookie = self.socket_cookie
        leaf.error_estimate = socket.htons(clock_state.error_estimate(self.ptp))
        self.fill_config(leaf, clock_state)
        self._config[self._config.Key(0)] = leaf

    def fill_config(self, leaf, clock_state):
        """Set a service's own fields of struct stamp_config (none here)."""

    def stats(self):
        """{name: count} summed over CPUs."""
        table = self.bpf[b"stats"]
        return {name: sum(table[table.Key(i)]) for i, name in enumerate(self.STATS)}

    def open_events(self, callback):
        """Call callback(raw bytes) for each ring buffer record on poll()."""
        def _cb(_ctx, data, size):
            callback(ctypes.string_at(data, size))
        self.bpf[b"events"].open_ring_buffer(_cb)

    def poll(self, timeout_ms):
        """Wait up to timeout_ms for records and hand them to the callback."""
        self.bpf.ring_buffer_poll(timeout=max(0, int(timeout_ms)))

    def consume(self):
        """Hand every record in the ring to the callback, without waiting.

        For rings written with BPF_RB_NO_WAKEUP, which never wake poll().
        """
        self.bpf.ring_buffer_consume()
