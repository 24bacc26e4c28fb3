"""The bench's one table: every figure with its unit, its target, and whether it is met."""

import os
import platform
import subprocess
from typing import NamedTuple

OPS = {"<": lambda v, t: v < t, "<=": lambda v, t: v <= t,
       ">": lambda v, t: v > t, ">=": lambda v, t: v >= t}


class Row(NamedTuple):
    part: str
    figure: str
    value: float        # None: not measured (note says why)
    unit: str
    target: str         # e.g. "< 5 µs"; "" when the figure has no target
    met: bool           # None when there is no target or no value
    note: str = ""


def row(part, figure, value, unit, op=None, target=None, note=""):
    """A Row; with op and target, `met` is judged here, never by the caller."""
    if op is None or value is None:
        return Row(part, figure, value, unit, f"{op} {fmt(target)} {unit}" if op else "", None, note)
    return Row(part, figure, value, unit, f"{op} {fmt(target)} {unit}", OPS[op](value, target), note)


def not_measured(part, figure, unit, reason, op=None, target=None):
    return row(part, figure, None, unit, op, target, note=f"not measured: {reason}")


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, int) or (abs(v) >= 100 and float(v).is_integer()):
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def verdict(r):
    return {True: "met", False: "NOT MET", None: ""}[r.met]


def machine():
    """One line naming the machine the figures come from."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            cs = f.read().strip()
    except OSError:
        cs = "?"
    virt = []
    for flag in ("--vm", "--container"):
        try:
            v = subprocess.run(["systemd-detect-virt", flag], capture_output=True, text=True).stdout.strip()
        except OSError:
            v = ""
        if v and v != "none":
            virt.append(f"{v} {flag[2:]}")
    virt = ", ".join(virt) or "bare metal"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{model}, {os.cpu_count()} CPUs, {mem:.0f} GiB, {virt}, Linux {platform.release()}, "
            f"clocksource {cs}")


def render(rows, machine_line, started, load):
    """The table as text (under 100 columns per row where it can)."""
    out = [f"stamp-bpf benchmarks on {machine_line}",
           f"started {started}, load average at start {load:.2f}", ""]
    w = max([len(r.figure) for r in rows] + [10])
    out.append(f"{'part':9} {'figure':{w}} {'value':>12} {'unit':8} {'target':14} met")
    part = None
    for r in rows:
        if r.part != part and part is not None:
            out.append("")
        part = r.part
        out.append(f"{r.part:9} {r.figure:{w}} {fmt(r.value):>12} {r.unit:8} {r.target:14} "
                   f"{verdict(r)}")
        if r.note:
            out.append(f"{'':9}   {r.note}")
    return "\n".join(out)


def markdown(rows, machine_line, started, load):
    out = [f"Machine: {machine_line}. Run started {started}, load average at start {load:.2f}.", "",
           "| part | figure | value | unit | target | met | note |",
           "|---|---|---:|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.part} | {r.figure} | {fmt(r.value)} | {r.unit} | {r.target} | "
                   f"{verdict(r)} | {r.note} |")
    return "\n".join(out) + "\n"
