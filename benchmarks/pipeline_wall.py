"""Benchmark: the whole pipeline. Cold ``dvc repro``, no-op ``dvc repro``, one policy edit.

In a fresh ``git clone`` of this repository's HEAD (no DVC cache, no MLflow store, no outputs),
with this checkout's ``.venv``:

1. cold ``dvc repro`` of the default pipeline: wall time and the peak resident memory of the
   largest process (GNU ``time -v``; budget 20 min and 6 GiB on 2 cores);
2. ``dvc repro`` again with nothing changed (budget 10 s);
3. one threshold edited in ``policies/promotion.yaml`` (the first ``threshold:`` line, made a
   tiny step, 0.1 %, that leaves the decision as it was), then ``dvc repro``: wall time (budget 60 s) and which
   stages ran (only ``gate`` and ``report`` may).

Not a unit test: it takes the length of a default run (~17 min on 2 cores).

Run: ``python -m benchmarks.pipeline_wall [--keep DIR]``
Writes ``reports/bench/pipeline_wall.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json

REPO = Path(__file__).resolve().parents[1]
BUDGETS = {"cold_seconds": 20 * 60, "cold_peak_rss_gib": 6.0, "noop_seconds": 10.0, "policy_edit_seconds": 60.0}


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Runs ``cmd`` under GNU time; wall seconds, peak RSS and the stages DVC ran."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return {
        "seconds": round(seconds, 2),
        "peak_rss_gib": round(int(rss.group(1)) / 2**20, 2) if rss else None,
        "stages_run": re.findall(r"Running stage '([^']+)'", done.stdout + done.stderr),
    }


def stricter_threshold(policy: Path) -> str:
    """Moves the first numeric ``threshold:`` of the policy by 0.1 %; returns its rule id."""
    lines = policy.read_text(encoding="utf-8").splitlines(keepends=True)
    rule = None
    for i, line in enumerate(lines):
        if m := re.match(r"\s*- id: (\S+)", line):
            rule = m.group(1)
        if m := re.match(r"(\s*threshold: )(\d+\.\d+)(.*)", line, re.DOTALL):
            lines[i] = f"{m.group(1)}{float(m.group(2)) * 0.999:.6g}{m.group(3)}"
            policy.write_text("".join(lines), encoding="utf-8")
            return str(rule)
    raise SystemExit(f"{policy}: no numeric threshold to edit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="clone into this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    venv_bin = REPO / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    root = args.keep or Path(tempfile.mkdtemp(prefix="govtune-bench-"))
    clone = root / "govtune"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        print("cold dvc repro ...", flush=True)
        cold = timed(["dvc", "repro"], clone, env)
        print(f"  {cold['seconds']:.0f} s, peak RSS {cold['peak_rss_gib']} GiB", flush=True)
        noop = timed(["dvc", "repro"], clone, env)
        print(f"no-op dvc repro: {noop['seconds']:.1f} s, stages run {noop['stages_run']}", flush=True)
        rule = stricter_threshold(clone / "policies" / "promotion.yaml")
        edit = timed(["dvc", "repro"], clone, env)
        print(
            f"threshold of {rule} edited, dvc repro: {edit['seconds']:.1f} s, stages run {edit['stages_run']}",
            flush=True,
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    summary = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cores": os.cpu_count()},
        "commit": commit,
        "cold": cold,
        "noop": noop,
        "policy_edit": {**edit, "rule": rule},
        "budgets": BUDGETS,
        "within_budget": {
            "cold_seconds": cold["seconds"] <= BUDGETS["cold_seconds"],
            "cold_peak_rss_gib": (cold["peak_rss_gib"] or 0) <= BUDGETS["cold_peak_rss_gib"],
            "noop_seconds": noop["seconds"] <= BUDGETS["noop_seconds"] and not noop["stages_run"],
            "policy_edit_seconds": edit["seconds"] <= BUDGETS["policy_edit_seconds"]
            and set(edit["stages_run"]) <= {"gate", "report"},
        },
    }
    print(f"within budget: {summary['within_budget']}")
    save_json(Path("reports/bench/pipeline_wall.json"), summary)


if __name__ == "__main__":
    main()
