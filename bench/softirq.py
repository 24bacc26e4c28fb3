"""softirq: nanoseconds a CPU spends in the network receive softirq, measured, not sampled.

This kernel has no IRQ time accounting: softirq time is sampled at the tick
and charged to whatever task it interrupted. The raw tracepoints
irq:softirq_entry/softirq_exit around the NET_RX softirq (net_rx_action(),
whether it runs on an IRQ exit, at a local_bh_enable() or in ksoftirqd)
add up its run time per CPU instead, and separately the
part of it that ran while one chosen process was the current task (which
that process's own run time, /proc/PID/schedstat, already includes). So a
reflector's CPU is exactly

    its process's run time + receive softirq time outside that process

with no double count, and no cost of waking an idle vCPU in it.

    with NetRxTime(cpu=1) as t:
        t.watch(pid)
        a = t.read()            # (all ns, ns while pid ran) on that CPU, so far
"""

import os

from bcc import BPF

PROBES = r"""
BPF_PERCPU_ARRAY(started, u64, 1);      /* key 0: when this CPU entered net_rx_action */
BPF_PERCPU_ARRAY(spent, u64, 2);        /* key 0: ns in net_rx_action; 1: of it, while `watched` ran */
BPF_ARRAY(watched, u32, 1);             /* key 0: the tgid whose share is counted apart */

/* irq:softirq_entry and softirq_exit, args[0] the vector (NET_RX_SOFTIRQ is 3) */
RAW_TRACEPOINT_PROBE(softirq_entry)
{
	u32 k = 0;
	u64 *t = started.lookup(&k);

	if (t && ctx->args[0] == 3)
		*t = bpf_ktime_get_ns();
	return 0;
}

RAW_TRACEPOINT_PROBE(softirq_exit)
{
	u32 k = 0, one = 1;
	u64 *t = started.lookup(&k), *all, *mine, d;
	u32 *pid = watched.lookup(&k);

	if (ctx->args[0] != 3 || !t || !*t)     /* another vector, or attached while inside it */
		return 0;
	d = bpf_ktime_get_ns() - *t;
	*t = 0;
	all = spent.lookup(&k);
	if (all)
		*all += d;
	if (pid && *pid && *pid == bpf_get_current_pid_tgid() >> 32) {
		mine = spent.lookup(&one);
		if (mine)
			*mine += d;
	}
	return 0;
}
"""


def task_runtime_ns(pid):
    """Run time of every live thread of `pid`, ns (/proc/PID/task/*/schedstat, first field)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


class NetRxTime:
    """NET_RX softirq run time on `cpu`, in total and while a watched process ran."""

    def __init__(self, cpu):
        self.cpu = cpu
        self.bpf = BPF(text=PROBES)         # RAW_TRACEPOINT_PROBE attaches itself (no tracefs needed)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def watch(self, pid):
        w = self.bpf["watched"]
        w[w.Key(0)] = w.Leaf(pid)

    def read(self):
        """(ns in net_rx_action on the CPU, of which while the watched process ran), cumulative."""
        spent = self.bpf["spent"]
        return (spent[spent.Key(0)][self.cpu], spent[spent.Key(1)][self.cpu])

    def close(self):
        self.bpf.cleanup()
