"""Per-file test time table from pytest's JUnit XML (one run, or two side by side).

Each test case's time in the XML is its setup + call + teardown. Under pytest-xdist the
per-file sums add up the workers' time, so they exceed the run's wall time; the wall time is
the last line of pytest's output.

Run:
    PYTEST_ADDOPTS="--junitxml=/tmp/after.xml" make test
    python scripts/test_times.py /tmp/before.xml /tmp/after.xml   # markdown table on stdout
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def per_file(xml_path: Path) -> dict[str, tuple[int, float, int]]:
    """``{test file: (tests, seconds, failed or errored)}`` of one JUnit XML report."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = case.get("classname", "").split(".")
        file = "/".join(name[:2]) + ".py" if len(name) >= 2 else case.get("file", "?")
        row = out[file]
        row[0] += 1
        row[1] += float(case.get("time") or 0)
        row[2] += any(child.tag in ("failure", "error") for child in case)
    return {f: (int(n), s, int(bad)) for f, (n, s, bad) in sorted(out.items())}


def table(runs: list[dict[str, tuple[int, float, int]]], labels: list[str]) -> str:
    files = sorted(set().union(*runs))
    head = "| test file | " + " | ".join(f"tests ({label}) | seconds ({label})" for label in labels) + " |"
    rule = "| --- |" + " ---: | ---: |" * len(labels)
    rows = []
    for f in files:
        cells = []
        for run in runs:
            n, s, bad = run.get(f, (0, 0.0, 0))
            cells += [f"{n}" + (f" ({bad} failed)" if bad else ""), f"{s:.0f}"]
        rows.append(f"| {f} | " + " | ".join(cells) + " |")
    totals = []
    for run in runs:
        totals += [str(sum(n for n, _, _ in run.values())), f"{sum(s for _, s, _ in run.values()):.0f}"]
    rows.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    return "\n".join([head, rule, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml", nargs="+", type=Path, help="JUnit XML files (e.g. before and after)")
    parser.add_argument("--labels", nargs="+", help="column labels (default: file stems)")
    args = parser.parse_args(argv)
    labels = args.labels or [p.stem for p in args.xml]
    if len(labels) != len(args.xml):
        parser.error("give one label per XML file")
    print(table([per_file(p) for p in args.xml], labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
