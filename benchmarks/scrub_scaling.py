"""Benchmark: scrub scaling. Time and peak memory of the scrub stage on 1k, 10k and 100k tickets.

For each size, synthesizes that many tickets (with their ground-truth sidecar, as the default
data has) into a temporary directory, then runs the stage's engine (``pipeline.common.scrubbing.scrub_file``, one
worker per core) in a fresh child process and reads its peak resident memory: the parent's (reading, aggregating, writing; ``VmHWM``) and the largest
worker's (``getrusage`` of its children). Streaming
means time grows linearly (seconds per 1,000 tickets stay level) and memory stays flat.

The re-scan is off by default (``--rescan`` turns it on: about twice the time), like for like
with ``benchmarks.scrub_throughput``.

Not a unit test: run it by hand on an otherwise idle machine (100k tickets take ~20 minutes on
2 cores).

Run: ``python -m benchmarks.scrub_scaling [--sizes 1000 10000 100000] [--rescan]``
Writes ``reports/bench/scrub_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json, save_jsonl
from pipeline.common.params import load_params


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that over ``exec`` from the forked
    image of the benchmark's own process, which holds the synthesized tickets."""
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) / 1024


def child(raw: Path, spans: Path, out: Path, rescan: bool) -> None:
    """Runs the stage's engine once and prints its figures as JSON (in a fresh process)."""
    from pipeline.common import scrubbing
    from pipeline.common.keys import load_key
    from pipeline.common.offline import configure_offline
    from pipeline.common.policy import load_pii_policy

    configure_offline()
    params = load_params()
    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, Path.cwd())
    cfg = params.scrub.model_copy(update={"out": out, "rescan": rescan})
    start = time.perf_counter()
    report = scrubbing.scrub_file(cfg, policy, key, raw, spans, 10**7)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "records": report["records"], "seconds": seconds, "workers": scrubbing.resolve_workers(cfg.workers),
        "parent_peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "min_recall": report["totals"]["min_recall"],
    }))  # fmt: skip


def measure(n: int, rescan: bool) -> dict[str, Any]:
    from pipeline.synthesize import generate

    params = load_params()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        tickets, spans = generate(params.synthesize.model_copy(update={"rows": n}))
        save_jsonl(out / "tickets.jsonl", tickets)
        save_jsonl(out / "pii_spans.jsonl", spans)
        del tickets, spans
        input_mb = (out / "tickets.jsonl").stat().st_size / 2**20
        cmd = [sys.executable, "-m", "benchmarks.scrub_scaling", "--child", str(out / "tickets.jsonl"),
               str(out / "pii_spans.jsonl"), str(out / "scrubbed.jsonl")] + (["--rescan"] if rescan else [])  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"scrub of {n} tickets failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "input_mb": input_mb, "records_per_s": figures["records"] / figures["seconds"],
            "seconds_per_1k": 1000 * figures["seconds"] / figures["records"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument(
        "--rescan", action="store_true", help="re-scan the scrubbed text too (as the stage is configured)"
    )
    parser.add_argument("--child", nargs=3, metavar=("RAW", "SPANS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*map(Path, args.child), rescan=args.rescan)
        return
    rows = []
    print(
        f"{'tickets':>8} {'input MB':>8} {'seconds':>8} {'s/1k':>6} {'rec/s':>7} {'parent MB':>9} {'worker MB':>9}",
        flush=True,
    )
    for n in args.sizes:
        r = measure(n, args.rescan)
        rows.append(r)
        print(f"{n:8d} {r['input_mb']:8.1f} {r['seconds']:8.1f} {r['seconds_per_1k']:6.1f} {r['records_per_s']:7.1f} "
              f"{r['parent_peak_rss_mb']:9.0f} {r['worker_peak_rss_mb']:9.0f}", flush=True)  # fmt: skip
    first, last = rows[0], rows[-1]
    summary = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cores_used": first["workers"]},
        "rescan": args.rescan,
        "sizes": rows,
        "time_per_record_ratio_largest_vs_smallest": last["seconds_per_1k"] / first["seconds_per_1k"],
        "parent_memory_ratio_largest_vs_smallest": last["parent_peak_rss_mb"] / first["parent_peak_rss_mb"],
        "worker_memory_ratio_largest_vs_smallest": last["worker_peak_rss_mb"] / first["worker_peak_rss_mb"],
    }
    print(f"time per ticket, {last['records']} vs {first['records']}: {summary['time_per_record_ratio_largest_vs_smallest']:.2f}x "
          f"(1.0 = linear); peak memory parent {summary['parent_memory_ratio_largest_vs_smallest']:.2f}x, "
          f"worker {summary['worker_memory_ratio_largest_vs_smallest']:.2f}x (1.0 = flat)")  # fmt: skip
    save_json(Path("reports/bench/scrub_scaling.json"), summary)


if __name__ == "__main__":
    main()
