"""Benchmark: how far the validate stage goes on one machine. Time and peak memory at 10k and 100k tickets.

The validate stage runs the data contract as a Great Expectations suite on a pandas DataFrame
of the whole raw file (``pipeline.common.validation.check_file``): GX's pandas engine judges
uniqueness, class balance and rates over every row, so the data must fit in one process's
memory. This measures what that costs: for each size, synthesizes the tickets (as the default
data is made) and runs the contract on them in a fresh child process, reading its peak resident
memory (``VmHWM``), the time, and the failing checks (none on clean data: a check that fails
makes the figures meaningless and stops the run). From the largest size it derives the
memory per 1,000 tickets and the number of tickets that fit in 16 GiB, the size up to which
the README says validate runs on one machine.

Not a unit test: run it by hand on an otherwise idle machine (~5.5 minutes for 10k and 100k, synthesis included).

Run: ``python -m benchmarks.validate_scaling [--sizes 10000 100000]``
Writes ``reports/bench/validate_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.scrub_scaling import peak_rss_mb
from pipeline.common.io import save_json, save_jsonl
from pipeline.common.params import load_params

BUDGET_GIB = 16


def child(raw: Path) -> None:
    """Runs the stage's contract once and prints its figures as JSON (in a fresh process)."""
    from pipeline.common.policy import load_data_contract
    from pipeline.common.validation import check_file

    params = load_params()
    contract = load_data_contract(params.validate_.contract)
    before = peak_rss_mb()
    start = time.perf_counter()
    result = check_file(params.validate_, contract, raw)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "records": result.rows, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before,
        "failed_checks": [c.rule_id for c in result.checks if not c.success],
    }))  # fmt: skip


def measure(n: int) -> dict[str, Any]:
    from pipeline.synthesize import generate

    params = load_params()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "tickets.jsonl"
        tickets, _ = generate(params.synthesize.model_copy(update={"rows": n}))
        save_jsonl(raw, tickets)
        del tickets
        input_mb = raw.stat().st_size / 2**20
        cmd = [sys.executable, "-m", "benchmarks.validate_scaling", "--child", str(raw)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"validate of {n} tickets failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["failed_checks"]:
        sys.exit(
            f"the contract failed on {n} clean tickets ({figures['failed_checks']}): the figures would mean nothing"
        )
    return figures | {"tickets": n, "input_mb": input_mb, "records_per_s": figures["records"] / figures["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"{'tickets':>8} {'input MB':>8} {'seconds':>8} {'rec/s':>8} {'peak MB':>8}", flush=True)
    rows = []
    for n in args.sizes:
        r = measure(n)
        rows.append(r)
        print(
            f"{n:8d} {r['input_mb']:8.1f} {r['seconds']:8.1f} {r['records_per_s']:8.0f} {r['peak_rss_mb']:8.0f}",
            flush=True,
        )
    first, last = rows[0], rows[-1]
    # the growth between the sizes is what the data costs; the rest is the interpreter, pandas and GX
    per_1k = (last["peak_rss_mb"] - first["peak_rss_mb"]) / ((last["tickets"] - first["tickets"]) / 1000)
    fixed = last["peak_rss_mb"] - per_1k * last["tickets"] / 1000
    fits = int((BUDGET_GIB * 1024 - fixed) / per_1k * 1000) if per_1k > 0 else None
    summary = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "sizes": rows,
        "memory_mb_per_1k_tickets": per_1k,
        "memory_mb_fixed": fixed,
        f"tickets_within_{BUDGET_GIB}_gib": fits,
        "seconds_per_1k_largest": 1000 * last["seconds"] / last["records"],
    }
    print(f"memory: {per_1k:.1f} MB per 1,000 tickets over {fixed:.0f} MB fixed; {BUDGET_GIB} GiB holds ~{fits:,} tickets; "
          f"{summary['seconds_per_1k_largest']:.2f} s per 1,000 at {last['tickets']:,}")  # fmt: skip
    save_json(Path("reports/bench/validate_scaling.json"), summary)


if __name__ == "__main__":
    main()
