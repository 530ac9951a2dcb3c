"""What the recognizers of ``pipeline/recognizers/`` cost: PII detection on the synthetic tickets
with ``policies/pii.yaml`` as it is, and with the same policy minus ``builtin_recognizers`` and
``propagate_names``, side by side in one process (alternating, best of ``--repeats``; also the
median over repeats of the two adjacent runs' ratio, in wall and in CPU time, which a shared
machine's drift and other tenants disturb less).

Budget (issue #19): detection at most 1.15x the time without them.

Run: ``python -m benchmarks.pii_recognizer_cost [--tickets 1000] [--repeats 3]``
Writes ``reports/bench/pii_recognizer_cost.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from benchmarks.pii_generalisation import ticket_rows
from pipeline.common.io import save_json

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "pii_recognizer_cost.json")
    args = parser.parse_args(argv)
    from pipeline.common.offline import configure_offline
    from pipeline.common.pii import build_analyzer, detect_batch
    from pipeline.common.policy import load_pii_policy

    configure_offline()
    policy = load_pii_policy(REPO / "policies" / "pii.yaml")
    without = policy.model_copy(update={"builtin_recognizers": [], "propagate_names": False})
    texts = [r["text"] for r in ticket_rows(args.tickets)]
    engines = {"with": (policy, build_analyzer(policy)), "without": (without, build_analyzer(without))}
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    cpu: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, (pol, analyzer) in engines.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            detect_batch(analyzer, pol, texts, 64)
            seconds[name].append(round(time.perf_counter() - start, 3))
            cpu[name].append(round(time.process_time() - start_cpu, 3))
    best = {name: min(v) for name, v in seconds.items()}
    # each repeat's two runs sit side by side, so their ratio is less exposed to the machine's
    # drift than the ratio of bests; CPU time is less exposed to other tenants than wall time
    paired = sorted(w / wo for w, wo in zip(seconds["with"], seconds["without"], strict=True))
    paired_cpu = sorted(w / wo for w, wo in zip(cpu["with"], cpu["without"], strict=True))
    result = {"texts": len(texts), "seconds": seconds, "cpu_seconds": cpu,
              "records_per_s": {n: round(len(texts) / s, 1) for n, s in best.items()},
              "time_ratio_with_over_without": round(best["with"] / best["without"], 3),
              "median_paired_time_ratio": round(statistics.median(paired), 3),
              "median_paired_cpu_ratio": round(statistics.median(paired_cpu), 3), "budget": 1.15}  # fmt: skip
    save_json(args.out, result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
