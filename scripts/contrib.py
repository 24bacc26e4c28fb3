#!/usr/bin/env python3
"""contrib.py - write contrib/prometheus/ and contrib/grafana/ from their source in chart/files/.

USAGE: scripts/contrib.py           write the files
       scripts/contrib.py --check   exit 1 (naming the stale files) if they are not current

The chart is the one source: the rules are chart/files/rules.yaml rendered by
helm with the chart's default values (the PrometheusRule's spec, comments
kept), the dashboards are copies of chart/files/dashboards/*.json.
"""

import argparse
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "prometheus" / "stamp-bpf.rules.yml"
DASHBOARDS = ROOT / "chart" / "files" / "dashboards"
HEADER = ("# Generated from chart/files/rules.yaml with the chart's default values by\n"
          "# scripts/contrib.py: edit the source and run it again. Alerts: docs/alerts.md.\n")


def helm():
    return subprocess.run(["bash", str(ROOT / "scripts" / "fetch-helm.sh")], check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]


def rules_text(sets=()):
    """The rules file as helm renders it (the PrometheusRule's spec, comments kept)."""
    args = [helm(), "template", "stamp", str(ROOT / "chart"), "--show-only",
            "templates/prometheusrule.yaml", "--api-versions",
            "monitoring.coreos.com/v1/PrometheusRule"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    spec = lines[lines.index("spec:") + 1:]
    return HEADER + "".join(line[2:] + "\n" for line in spec)


def wanted():
    """{path: text} of every generated file."""
    out = {RULES: rules_text()}
    for src in sorted(DASHBOARDS.glob("*.json")):
        out[ROOT / "contrib" / "grafana" / src.name] = src.read_text()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check the files are current")
    args = p.parse_args(argv)
    stale = [path for path, text in wanted().items()
             if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is not current: run scripts/contrib.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in wanted().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
