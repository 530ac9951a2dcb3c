"""Benchmark: scrub scaling. Time and peak memory of the scrub stage on 1k, 10k and 100k tickets.

For each size, synthesizes that many tickets (with their ground-truth sidecar, as the default
data has) into a temporary directory, then runs the stage's engine
(``pipeline.common.scrubbing.scrub_file``) on them in a fresh child process, once per engine
configuration:

- default: the local engine, one worker process per core;
- ``--engine ray``: the local engine, then Ray Data (a local Ray the stage starts) with each of
  ``--ray-workers`` actors (default 2 and 1), side by side on the same file, and the ratio of
  the 2-actor to the 1-actor throughput.

Memory is sampled every 0.2 s over the whole process tree of the child (the stage's process, its
worker processes, and for Ray its GCS, raylet and actors): the peak of the tree's summed
resident memory, and the peak of its largest process. The child also reports its own peak
(``VmHWM``: reading, aggregating, writing). Streaming means time grows linearly (seconds per
1,000 tickets stay level) and memory stays flat. Every configuration's scrubbed file must be
byte-identical to the local engine's (checked; a difference fails the run).

The re-scan is off by default (``--rescan`` turns it on: about twice the time), like for like
with ``benchmarks.scrub_throughput``.

Not a unit test: run it by hand on an otherwise idle machine (100k tickets take ~16 minutes per
configuration on 2 cores).

Run: ``python -m benchmarks.scrub_scaling [--sizes 1000 10000 100000] [--engine local|ray] [--ray-workers 2 1] [--no-local] [--rescan]``
Writes ``reports/bench/scrub_scaling.json`` (``scrub_scaling_ray.json`` with ``--engine ray``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json, save_jsonl, sha256_file
from pipeline.common.params import load_params


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that over ``exec`` from the forked
    image of the benchmark's own process, which holds the synthesized tickets."""
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) / 1024


def child(raw: Path, spans: Path, out: Path, rescan: bool, engine: str, workers: int) -> None:
    """Runs the stage's engine once and prints its figures as JSON (in a fresh process)."""
    from pipeline.common import scrubbing
    from pipeline.common.keys import load_key
    from pipeline.common.offline import configure_offline
    from pipeline.common.policy import load_pii_policy

    configure_offline()
    params = load_params()
    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, Path.cwd())
    cfg = params.scrub.model_copy(update={"out": out, "rescan": rescan, "engine": engine, "workers": workers})
    start = time.perf_counter()
    report = scrubbing.scrub_file(cfg, policy, key, raw, spans, 10**7)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "records": report["records"], "seconds": seconds, "engine": engine,
        "workers": scrubbing.resolve_workers(cfg.workers), "parent_peak_rss_mb": peak_rss_mb(),
        "min_recall": report["totals"]["min_recall"],
    }))  # fmt: skip


class TreeMemory:
    """Samples the resident memory of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_total = self.peak_single = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psutil

        while not self.stopped.wait(self.interval):
            rss = []
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    rss.append(proc.memory_info().rss)
                except psutil.Error:
                    pass
            if rss:
                self.peak_total = max(self.peak_total, sum(rss))
                self.peak_single = max(self.peak_single, max(rss))

    def stop(self) -> dict[str, float]:
        self.stopped.set()
        self.thread.join()
        return {"tree_peak_rss_mb": self.peak_total / 2**20, "largest_process_peak_rss_mb": self.peak_single / 2**20}


def run_engine(folder: Path, engine: str, workers: int, rescan: bool) -> tuple[dict[str, Any], str]:
    """One configuration on the file in ``folder``: its figures and the sha256 of what it wrote."""
    out = folder / f"scrubbed-{engine}-{workers}.jsonl"
    cmd = [sys.executable, "-m", "benchmarks.scrub_scaling", "--child", str(folder / "tickets.jsonl"),
           str(folder / "pii_spans.jsonl"), str(out), "--engine", engine, "--workers", str(workers)] + (
        ["--rescan"] if rescan else [])  # fmt: skip
    env = {**os.environ, "RAY_TMPDIR": str(folder / "ray")} if engine == "ray" else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = TreeMemory(proc.pid)
    stdout, stderr = proc.communicate()
    memory = sampler.stop()
    if proc.returncode != 0:
        sys.exit(f"scrub ({engine}, {workers} workers) failed:\n{stderr[-3000:]}")
    figures = json.loads(stdout.strip().splitlines()[-1]) | memory
    digest = sha256_file(out)
    out.unlink()
    return figures | {"records_per_s": figures["records"] / figures["seconds"],
                      "seconds_per_1k": 1000 * figures["seconds"] / figures["records"]}, digest  # fmt: skip


def measure(n: int, configs: list[tuple[str, int]], rescan: bool) -> list[dict[str, Any]]:
    """Synthesizes ``n`` tickets once and scrubs them with every configuration, side by side."""
    from pipeline.synthesize import generate

    params = load_params()
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-", dir="/tmp") as tmp:  # short: Ray's socket paths
        folder = Path(tmp)
        tickets, spans = generate(params.synthesize.model_copy(update={"rows": n}))
        save_jsonl(folder / "tickets.jsonl", tickets)
        save_jsonl(folder / "pii_spans.jsonl", spans)
        del tickets, spans
        input_mb = (folder / "tickets.jsonl").stat().st_size / 2**20
        reference = None
        for engine, workers in configs:
            figures, digest = run_engine(folder, engine, workers, rescan)
            reference = reference or digest
            if digest != reference:
                sys.exit(f"{engine} with {workers} workers wrote other bytes than {configs[0]} on {n} tickets")
            rows.append(figures | {"tickets": n, "input_mb": input_mb, "output_sha256": digest})
            print(f"{n:8d} {engine:>6} {figures['workers']:7d} {input_mb:8.1f} {figures['seconds']:8.1f} "
                  f"{figures['seconds_per_1k']:6.1f} {figures['records_per_s']:7.1f} {figures['parent_peak_rss_mb']:9.0f} "
                  f"{figures['largest_process_peak_rss_mb']:9.0f} {figures['tree_peak_rss_mb']:8.0f}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray = the local engine, then Ray Data with each of --ray-workers, side by side")  # fmt: skip
    parser.add_argument("--ray-workers", type=int, nargs="+", default=[2, 1], help="Ray actors per configuration")
    parser.add_argument("--no-local", action="store_true",
                        help="with --engine ray: the Ray rows alone (to re-measure them; no local ratio, bytes compared between Ray runs only)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)  # the child's
    parser.add_argument(
        "--rescan", action="store_true", help="re-scan the scrubbed text too (as the stage is configured)"
    )
    parser.add_argument("--child", nargs=3, metavar=("RAW", "SPANS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*map(Path, args.child), rescan=args.rescan, engine=args.engine, workers=args.workers)
        return
    from pipeline.common.scrubbing import resolve_workers

    configs = [] if args.no_local and args.engine == "ray" else [("local", resolve_workers(0))]
    if args.engine == "ray":
        configs += [("ray", w) for w in args.ray_workers]
    print(f"{'tickets':>8} {'engine':>6} {'workers':>7} {'input MB':>8} {'seconds':>8} {'s/1k':>6} {'rec/s':>7} "
          f"{'self MB':>9} {'max proc':>9} {'tree MB':>8}", flush=True)  # fmt: skip
    rows = [row for n in args.sizes for row in measure(n, configs, args.rescan)]
    summary: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cores": resolve_workers(0)},
        "rescan": args.rescan,
        "rows": rows,
    }
    for engine, workers in configs:
        mine = [r for r in rows if r["engine"] == engine and r["workers"] == workers]
        first, last = mine[0], mine[-1]
        summary[f"{engine}_{workers}_time_per_record_ratio_largest_vs_smallest"] = (
            last["seconds_per_1k"] / first["seconds_per_1k"]
        )
        summary[f"{engine}_{workers}_tree_memory_ratio_largest_vs_smallest"] = last["tree_peak_rss_mb"] / first["tree_peak_rss_mb"]  # fmt: skip
    for n in args.sizes:
        at = {(r["engine"], r["workers"]): r for r in rows if r["tickets"] == n}
        for (engine, workers), row in at.items():
            if engine == "ray" and configs[0][0] == "local":
                summary[f"ray_{workers}_vs_local_throughput_at_{n}"] = (
                    row["records_per_s"] / at[configs[0]]["records_per_s"]
                )
        if ("ray", 2) in at and ("ray", 1) in at:
            ratio = at[("ray", 2)]["records_per_s"] / at[("ray", 1)]["records_per_s"]
            summary[f"ray_2_vs_1_workers_throughput_at_{n}"] = ratio
            print(f"Ray, 2 actors vs 1 at {n} tickets: {ratio:.2f}x")
    for key, value in summary.items():
        if "_vs_" in key:
            print(f"{key}: {value:.2f}")
    name = "scrub_scaling_ray.json" if args.engine == "ray" else "scrub_scaling.json"
    save_json(Path("reports/bench") / name, summary)


if __name__ == "__main__":
    main()
