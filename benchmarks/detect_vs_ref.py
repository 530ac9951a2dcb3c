"""PII detection of this checkout against the same code at a git ref, side by side: time, and
whether the detections are identical.

On the default data's tickets (message and reply of the first ``--tickets`` records of
``data/raw``) and on the independent corpus (``data/eval/pii_benchmark.jsonl``), each side builds
the analyzer of its own ``policies/pii.yaml`` in a fresh process and times the scrub's detection
(``pipeline.common.pii.detect_batch``, one process, start-up excluded). The two sides alternate
(ref, this, this, ref, ...), so drift of a shared machine falls on both; the result gives the best
of each side and the median over repeats of the two adjacent runs' ratio, in wall and CPU time.

Two uses:

- ``--ref <the commit before a speed change>``: the detections must be identical on both corpora
  (issue #22: no recall traded for speed), and the ratio says what the change bought;
- ``--ref a59ea9c`` (the stage when issue #19 was filed): what the recognizers added since cost,
  against #19's budget of 1.15x; the detections differ there by design (counts only are shown);
- ``--ref HEAD --policy <an edited copy of policies/pii.yaml>``: what a policy change (fewer
  ``phone_regions``, another recognizer) costs or buys, in time and in detections.

Nothing here prints or writes a detected value: only counts of detections and of texts.

Run: ``python -m benchmarks.detect_vs_ref --ref REF [--policy FILE] [--tickets 1000] [--repeats 3]``
Writes ``reports/bench/detect_vs_ref.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json

REPO = Path(__file__).resolve().parents[1]

# What each side runs, in its own tree: build the analyzer, warm it up, time detection per corpus.
CHILD = r"""
import json, sys, time
tree, policy_path, texts_path, out_path = sys.argv[1:5]
sys.path.insert(0, tree)
from pipeline.common.offline import configure_offline
configure_offline()
from pipeline.common.pii import build_analyzer, detect_batch
from pipeline.common.policy import load_pii_policy
policy = load_pii_policy(policy_path)
analyzer = build_analyzer(policy)
corpora = json.load(open(texts_path, encoding="utf-8"))
detect_batch(analyzer, policy, corpora["tickets"][:16], 16)
out = {}
for name, texts in corpora.items():
    start, start_cpu = time.perf_counter(), time.process_time()
    found = detect_batch(analyzer, policy, texts, 32)
    out[name] = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu,
                 "detections": [[[d.start, d.end, d.entity, d.score] for d in row] for row in found]}
json.dump(out, open(out_path, "w", encoding="utf-8"))
"""


def export_tree(ref: str, into: Path) -> Path:
    """``pipeline/`` and ``policies/`` as they are at ``ref`` (``git archive``), under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "pipeline", "policies"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def corpora(tickets: int) -> dict[str, list[str]]:
    """The texts each side detects in: the default data's first tickets, and the independent corpus."""
    from pipeline.common.params import load_params

    params = load_params(REPO / "params.yaml")
    fields = ("message", "reply")
    with open(REPO / params.data.raw, encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(tickets), strict=False)]
    with open(REPO / params.pii_benchmark.corpus, encoding="utf-8") as handle:
        independent = [json.loads(line)["text"] for line in handle]
    return {"tickets": [r.get(f) or "" for r in records for f in fields], "independent": independent}


def run_side(tree: Path, policy: Path, texts: Path, out: Path) -> dict[str, Any]:
    subprocess.run([sys.executable, "-c", CHILD, str(tree), str(policy), str(texts), str(out)], check=True, cwd=tree)
    return json.loads(out.read_text(encoding="utf-8"))


def compare(this: list[list[list[Any]]], ref: list[list[list[Any]]]) -> dict[str, int | bool]:
    """Counts only: texts whose detections differ, detections only one side has."""
    only_this = only_ref = texts_differ = 0
    for a, b in zip(this, ref, strict=True):
        mine, theirs = {tuple(d) for d in a}, {tuple(d) for d in b}
        only_this += len(mine - theirs)
        only_ref += len(theirs - mine)
        texts_differ += a != b
    return {"identical": texts_differ == 0, "texts_differing": texts_differ,
            "detections_only_this": only_this, "detections_only_ref": only_ref,
            "detections_this": sum(map(len, this)), "detections_ref": sum(map(len, ref))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the git commit (or tag, branch) to compare with")
    parser.add_argument("--tickets", type=int, default=1000, help="records of data/raw (two texts each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--policy", type=Path, default=REPO / "policies" / "pii.yaml",
        help="this side's PII policy (an edited copy: what a policy change costs or buys, against --ref HEAD)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "detect_vs_ref.json")
    args = parser.parse_args(argv)
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.ref], check=True, capture_output=True, text=True)
    texts = corpora(args.tickets)
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "ref": []}
    with tempfile.TemporaryDirectory() as tmp:
        ref_tree = export_tree(args.ref, Path(tmp) / "ref")
        texts_path = Path(tmp) / "texts.json"
        texts_path.write_text(json.dumps(texts), encoding="utf-8")
        for i in range(args.repeats):
            for side in ("ref", "this") if i % 2 == 0 else ("this", "ref"):
                print(f"repeat {i + 1}/{args.repeats}: {side}", flush=True)
                tree, policy = (ref_tree, ref_tree / "policies" / "pii.yaml") if side == "ref" else (REPO, args.policy)
                runs[side].append(run_side(tree, policy.resolve(), texts_path, Path(tmp) / f"{side}-{i}.json"))
    result: dict[str, Any] = {"ref": args.ref, "ref_commit": sha.stdout.strip(), "policy": str(args.policy),
                              "repeats": args.repeats, "corpora": {}}  # fmt: skip
    for name, corpus in texts.items():
        seconds = {side: [round(r[name]["seconds"], 3) for r in rs] for side, rs in runs.items()}
        cpu = {side: [round(r[name]["cpu_seconds"], 3) for r in rs] for side, rs in runs.items()}
        paired = [t / r for t, r in zip(seconds["this"], seconds["ref"], strict=True)]
        paired_cpu = [t / r for t, r in zip(cpu["this"], cpu["ref"], strict=True)]
        result["corpora"][name] = {
            "texts": len(corpus), "seconds": seconds, "cpu_seconds": cpu,
            "texts_per_s_best": {side: round(len(corpus) / min(s), 1) for side, s in seconds.items()},
            "time_ratio_best": round(min(seconds["this"]) / min(seconds["ref"]), 3),
            "median_paired_time_ratio": round(statistics.median(paired), 3),
            "median_paired_cpu_ratio": round(statistics.median(paired_cpu), 3),
            "detections": compare(runs["this"][0][name]["detections"], runs["ref"][0][name]["detections"]),
        }  # fmt: skip
    save_json(args.out, result)
    print(f"\nthis checkout vs {args.ref} ({result['ref_commit'][:10]}), {args.repeats} alternating runs each")
    print(
        f"{'corpus':12} {'texts':>6} {'best this s':>11} {'best ref s':>10} {'ratio':>6} {'paired':>6} {'cpu':>6}  detections"
    )
    for name, row in result["corpora"].items():
        d = row["detections"]
        same = (
            "identical"
            if d["identical"]
            else f"{d['texts_differing']} texts differ (+{d['detections_only_this']} / -{d['detections_only_ref']})"
        )
        print(f"{name:12} {row['texts']:6} {min(row['seconds']['this']):11.2f} {min(row['seconds']['ref']):10.2f} "
              f"{row['time_ratio_best']:6.3f} {row['median_paired_time_ratio']:6.3f} {row['median_paired_cpu_ratio']:6.3f}  {same}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
