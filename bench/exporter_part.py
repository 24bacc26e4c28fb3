"""exporter: the exporter engineer's bench/bench_exporter.py, its figures taken into the table."""

import os
import re
import subprocess
import sys

import table

PART = "exporter"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_exporter.py")
# "  <figure>   <value>   target <op> <target>   met|NOT MET"
_ROW = re.compile(r"^\s+(?P<figure>\S.*?)\s{2,}(?P<value>[\d,.]+)\s+target\s+(?P<op><=|>=|<|>)\s+"
                  r"(?P<target>[\d,.]+)\s+(?:met|NOT MET)\s*$")


def run(log=print):
    res = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=600)
    rows = []
    for line in res.stdout.splitlines():
        m = _ROW.match(line)
        if m:
            figure, unit = m["figure"], "records/s"
            if figure.endswith(" s"):
                figure, unit = figure[:-2], "s"
            elif "CPU-second" in figure:
                unit = "rec/CPU-s"
            rows.append(table.row(PART, figure, float(m["value"].replace(",", "")), unit, m["op"],
                                  float(m["target"].replace(",", ""))))
        elif line.strip().startswith(("(", "note:")) and rows:
            rows[-1] = rows[-1]._replace(note=(rows[-1].note + " " + line.strip()).strip())
    if not rows:
        raise RuntimeError(f"bench_exporter.py printed no figures (status {res.returncode}): "
                           f"{(res.stderr or res.stdout)[-300:]}")
    return rows
