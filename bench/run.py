#!/usr/bin/env python3
"""run: stamp-bpf's benchmarks, printed as one table with their targets.

USAGE: python bench/run.py [PART ...] [-m FILE] [-f SECONDS] [--minutes N]

Parts (all, in this order, when none is named):
  kernel     ns per packet of each BPF program (BPF_PROG_TEST_RUN), beside an empty one
  accuracy   per-packet delay error against captures, idle and with every core busy,
             beside user-space timestamps and prometheus-smokeping-prober
  capacity   each reflector on one CPU against trafgen: highest rate with 99% back,
             CPU per reflected packet at 10,000 pps (needs netsniff-ng's trafgen)
  scale      one sender, 1,000 sessions at 10 pps: CPU, memory, false loss
  startup    time to the first measured packet; memory after minutes at 100 sessions
  exporter   bench/bench_exporter.py's figures
  series     series per node at --max-peers 16 and full mesh (N = 10, 100, 1,000), scrape time
  auth       authenticated mode: HMAC cost per packet, its accuracy beside the eBPF path's
  soak       1,000 packets/s with churning sessions for --minutes: memory, open files,
             BPF map entries and exporter series must stop growing
Every figure is printed with its unit, its target and whether it is met.
Exit status: 0 when every part measured (targets met or not), 1 when a part
could not measure or a tool it needs is missing (one line names it, before
anything runs), 2 for bad arguments. Needs root (namespaces, BPF, TC).

examples:
  python bench/run.py                       # everything, about 10 minutes
  python bench/run.py accuracy              # one part
  python bench/run.py -m /tmp/bench.md      # also write the table as Markdown
  python bench/run.py startup -f 30         # a shorter footprint run
  python bench/run.py soak --minutes 60     # the hour-long soak
"""

import argparse
import datetime
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import table  # noqa: E402

PARTS = ("kernel", "accuracy", "capacity", "scale", "startup", "exporter", "series", "auth",
         "soak")
MODULES = {"kernel": "kernel_cost", "accuracy": "accuracy", "capacity": "capacity",
           "scale": "scale", "startup": "startup", "exporter": "exporter_part", "series": "series",
           "auth": "auth_cost", "soak": "soak"}


def log(msg):
    print(f"{datetime.datetime.now():%H:%M:%S} {msg}", file=sys.stderr, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:" + __doc__.split("examples:")[1])
    p.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)}; default all")
    p.add_argument("-m", "--markdown", metavar="FILE", help="also write the table as Markdown to FILE")
    p.add_argument("-f", "--footprint", type=int, default=120, metavar="SECONDS",
                   help="how long startup watches memory at 100 sessions, seconds; default 120")
    p.add_argument("--minutes", type=float, default=3, metavar="N",
                   help="how long the soak part runs, minutes; default 3 (60 for the hour-long soak)")
    a = p.parse_args(argv)
    if not a.minutes > 0:
        p.error(f"--minutes must be above 0, got {a.minutes:g}")
    bad = [x for x in a.parts if x not in PARTS]
    if bad:
        p.error(f"unknown part {bad[0]!r}; the parts are {', '.join(PARTS)}")
    if os.geteuid() != 0:
        p.error("the bench needs root (network namespaces, BPF, TC); run it with sudo")
    parts = [x for x in PARTS if x in a.parts] if a.parts else list(PARTS)
    for part in parts:                  # what a part needs, before minutes of the others run
        need = getattr(__import__(MODULES[part]), "require", None)
        try:
            need and need()
        except RuntimeError as e:
            print(f"bench: {part}: {e}", file=sys.stderr)
            return 1
    machine = table.machine()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    rows, failed = [], []
    t_all = time.monotonic()
    for part in parts:
        log(f"{part}: starting")
        t0 = time.monotonic()
        try:
            mod = __import__(MODULES[part])
            if part == "startup":
                got = mod.run(log=log, footprint_s=a.footprint)
            elif part == "soak":
                got = mod.run(log=log, minutes=a.minutes)
            else:
                got = mod.run(log=log)
            rows.extend(got)
        except Exception as e:          # one part failing must not hide the others' figures
            failed.append(part)
            traceback.print_exc(file=sys.stderr)
            rows.append(table.row(part, "could not measure", None, "", note=f"{type(e).__name__}: {e}"[:300]))
        log(f"{part}: done in {time.monotonic() - t0:.0f} s")
    text = table.render(rows, machine, started, load)
    print(text)
    print(f"\n{len(parts)} parts in {time.monotonic() - t_all:.0f} s; load average now "
          f"{os.getloadavg()[0]:.2f}" + (f"; could not measure: {', '.join(failed)}" if failed else ""))
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table.markdown(rows, machine, started, load))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
