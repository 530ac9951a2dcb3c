"""Benchmark: scrub throughput of the stage vs a naive Presidio loop vs raw spaCy (the ceiling).

On the same N tickets (the first N of ``data/raw``, or synthesized when it has fewer), in one
process run, one after the other:

1. the scrub stage's engine (``pipeline.scrub.run``: batched ``nlp.pipe`` through Presidio's
   BatchAnalyzerEngine, one worker per core), like for like (no residual re-scan), and as
   configured (with the re-scan the gate needs);
2. what a user would otherwise write: per record, ``AnalyzerEngine.analyze`` +
   ``AnonymizerEngine.anonymize`` on each free-text field (same recognizers, one process);
3. the spaCy NER model alone, ``nlp.pipe`` over the same texts in one process: an upper bound
   for any Presidio pipeline built on it; the target is 0.8 x this x the cores used.

Not a unit test: run it by hand on an otherwise idle machine.

Run: ``python -m benchmarks.scrub_throughput [--records 2000]``
Writes ``reports/bench/scrub_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json, save_jsonl
from pipeline.common.offline import configure_offline
from pipeline.common.params import load_params


def sample(params: Any, n: int, out: Path) -> tuple[Path, Path]:
    """``n`` raw tickets (and their spans) written to ``out``."""
    from pipeline.synthesize import generate

    lines = params.data.raw.read_text(encoding="utf-8").splitlines()
    if len(lines) >= n:
        tickets = [json.loads(line) for line in lines[:n]]
        ids = {t["ticket_id"] for t in tickets}
        spans = [
            s
            for s in map(json.loads, params.data.raw_pii_spans.read_text(encoding="utf-8").splitlines())
            if s["ticket_id"] in ids
        ]
    else:
        tickets, spans = generate(params.synthesize.model_copy(update={"rows": n}))
    save_jsonl(out / "tickets.jsonl", tickets)
    save_jsonl(out / "pii_spans.jsonl", spans)
    return out / "tickets.jsonl", out / "pii_spans.jsonl"


def bench_stage(params: Any, policy: Any, key: Any, raw: Path, spans: Path, out: Path, rescan: bool) -> dict[str, Any]:
    from pipeline import scrub

    cfg = params.scrub.model_copy(update={"out": out / f"scrubbed-{rescan}.jsonl", "rescan": rescan})
    start = time.perf_counter()
    report = scrub.run(cfg, policy, key, raw, spans, 10**7)
    seconds = time.perf_counter() - start
    return {"records": report["records"], "seconds": seconds, "records_per_s": report["records"] / seconds,
            "workers": scrub.resolve_workers(cfg.workers), "rescan": rescan}  # fmt: skip


def bench_naive(policy: Any, key: Any, records: list[dict]) -> dict[str, Any]:
    from presidio_anonymizer import AnonymizerEngine

    from pipeline.common.pii import build_analyzer, build_operators

    analyzer, anonymizer = build_analyzer(policy), AnonymizerEngine()
    operators = build_operators(policy, key)
    entities = list(policy.entities)
    start = time.perf_counter()
    for record in records:
        for field in policy.fields:
            text = record.get(field) or ""
            found = analyzer.analyze(text=text, language=policy.language, entities=entities)
            anonymizer.anonymize(text=text, analyzer_results=found, operators=operators)
    seconds = time.perf_counter() - start
    return {"records": len(records), "seconds": seconds, "records_per_s": len(records) / seconds, "workers": 1}


def bench_spacy(policy: Any, records: list[dict], batch_size: int) -> dict[str, Any]:
    import spacy

    nlp = spacy.load(policy.ner_model)
    texts = [record.get(field) or "" for record in records for field in policy.fields]
    start = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=batch_size):
        pass
    seconds = time.perf_counter() - start
    return {"records": len(records), "seconds": seconds, "records_per_s": len(records) / seconds, "workers": 1}


def main() -> None:
    configure_offline()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000, help="tickets scrubbed by each contender")
    args = parser.parse_args()
    params = load_params()
    from pipeline.common.pii import load_key
    from pipeline.common.policy import load_pii_policy

    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, Path.cwd())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        raw, spans = sample(params, args.records, out)
        records = [json.loads(line) for line in raw.read_text(encoding="utf-8").splitlines()]
        results = {
            "stage (no re-scan: like for like)": bench_stage(params, policy, key, raw, spans, out, rescan=False),
            "stage (as configured, re-scan)": bench_stage(
                params, policy, key, raw, spans, out, rescan=params.scrub.rescan
            ),
            "naive analyze + anonymize loop": bench_naive(policy, key, records),
            "spaCy nlp.pipe (NER only, 1 process)": bench_spacy(policy, records, params.scrub.batch_size),
        }
    stage = results["stage (no re-scan: like for like)"]
    naive = results["naive analyze + anonymize loop"]["records_per_s"]
    ceiling = results["spaCy nlp.pipe (NER only, 1 process)"]["records_per_s"] * stage["workers"]
    summary = {
        "records": args.records,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cores_used": stage["workers"]},
        "results": results,
        "ratio_vs_naive": stage["records_per_s"] / naive,
        "ratio_vs_spacy_ceiling_x_cores": stage["records_per_s"] / ceiling,
        "targets": {"ratio_vs_naive": 3.0, "ratio_vs_spacy_ceiling_x_cores": 0.8},
    }
    print(f"\n{'contender':40} {'records/s':>10} {'seconds':>9} workers")
    for name, r in results.items():
        print(f"{name:40} {r['records_per_s']:10.1f} {r['seconds']:9.1f} {r['workers']:>7}")
    print(f"ratio stage / naive: {summary['ratio_vs_naive']:.2f}x (target >= 3)")
    print(
        f"ratio stage / (spaCy ceiling x {stage['workers']} cores): {summary['ratio_vs_spacy_ceiling_x_cores']:.2f}x (target >= 0.8)"
    )
    save_json(Path("reports/bench/scrub_throughput.json"), summary)


if __name__ == "__main__":
    main()
