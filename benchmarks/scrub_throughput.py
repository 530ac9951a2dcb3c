"""Benchmark: scrub throughput of the stage vs a naive Presidio loop vs raw spaCy (the ceiling).

On the same N tickets (the first N of ``data/raw``, or synthesized when it has fewer), in one
process run, one after the other:

1. the scrub stage's engine (``pipeline.common.scrubbing.scrub_file``: batched ``nlp.pipe`` through Presidio's
   BatchAnalyzerEngine, one worker per core), like for like (no residual re-scan), and as
   configured (with the re-scan the gate needs);
2. what a user would otherwise write: per record, ``AnalyzerEngine.analyze`` +
   ``AnonymizerEngine.anonymize`` on each free-text field (same recognizers, one process);
3. the spaCy NER model alone, ``nlp.pipe`` over the same texts in one process: an upper bound
   for any Presidio pipeline built on it; the target is 0.8 x this x the cores used.

Each contender is timed end to end, building its engines included (the stage forks workers
that each load spaCy and Presidio; the naive loop builds one analyzer; spaCy loads its model), and
at steady state, start-up excluded: the naive loop and spaCy time their start-up directly; the
stage's is the time of a run on one record per worker, so its steady rate is
``(N - workers) / (T_N - T_startup)``. The first ratios are the end-to-end ones.

``--profile`` also runs the stage's per-chunk work (``scrub_chunk``) in one process under
cProfile and splits its time into spaCy's pipeline, Presidio's recognizers and context
enhancement, the anonymizer and the rest: that is where the limit is.

Not a unit test: run it by hand on an otherwise idle machine.

Run: ``python -m benchmarks.scrub_throughput [--records 2000] [--profile] [--no-rescan-run]``
Writes ``reports/bench/scrub_throughput[_N].json`` (``_N`` when N is not 2,000).
"""

from __future__ import annotations

import argparse
import itertools
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


def rates(records: int, seconds: float, startup: float, startup_records: int = 0) -> dict[str, float]:
    """End-to-end and steady-state (start-up excluded) records/s."""
    return {"records": records, "seconds": seconds, "startup_seconds": startup,
            "records_per_s": records / seconds,
            "steady_records_per_s": (records - startup_records) / max(seconds - startup, 1e-9)}  # fmt: skip


def bench_stage(params: Any, policy: Any, key: Any, raw: Path, spans: Path, out: Path, rescan: bool) -> dict[str, Any]:
    from pipeline.common import scrubbing

    cfg = params.scrub.model_copy(update={"out": out / f"scrubbed-{rescan}.jsonl", "rescan": rescan})
    workers = scrubbing.resolve_workers(cfg.workers)
    tiny = out / f"startup-{rescan}.jsonl"
    with open(raw, encoding="utf-8") as handle:  # one record per worker
        tiny.write_text("".join(itertools.islice(handle, workers)), encoding="utf-8")
    start = time.perf_counter()
    scrubbing.scrub_file(
        cfg.model_copy(update={"out": out / "startup-out.jsonl", "chunk_records": 1}), policy, key, tiny, spans, 10**7
    )
    startup = time.perf_counter() - start
    start = time.perf_counter()
    report = scrubbing.scrub_file(cfg, policy, key, raw, spans, 10**7)
    seconds = time.perf_counter() - start
    return {**rates(report["records"], seconds, startup, workers), "workers": workers, "rescan": rescan}


def bench_naive(policy: Any, key: Any, records: list[dict]) -> dict[str, Any]:
    from presidio_anonymizer import AnonymizerEngine

    from pipeline.common.pii import build_analyzer, build_operators

    start = time.perf_counter()
    analyzer, anonymizer = build_analyzer(policy), AnonymizerEngine()
    operators = build_operators(policy, key)
    entities = list(policy.entities)
    startup = time.perf_counter() - start
    for record in records:
        for field in policy.fields:
            text = record.get(field) or ""
            found = analyzer.analyze(text=text, language=policy.language, entities=entities)
            anonymizer.anonymize(text=text, analyzer_results=found, operators=operators)
    seconds = time.perf_counter() - start
    return {**rates(len(records), seconds, startup), "workers": 1}


def bench_spacy(policy: Any, records: list[dict], batch_size: int) -> dict[str, Any]:
    import spacy

    texts = [record.get(field) or "" for record in records for field in policy.fields]
    start = time.perf_counter()
    nlp = spacy.load(policy.ner_model)
    startup = time.perf_counter() - start
    for _ in nlp.pipe(texts, batch_size=batch_size):
        pass
    seconds = time.perf_counter() - start
    return {**rates(len(records), seconds, startup), "workers": 1, "pipeline": nlp.pipe_names}


# Where the stage's per-record time goes: (bucket, functions whose cumulative time it is).
PROFILE_BUCKETS = (
    ("spaCy pipeline (nlp.pipe: tok2vec, tagger, parser, lemmatizer, NER)", ("spacy_nlp_engine.py", "process_batch")),
    ("Presidio phone recognizer (phonenumbers, 8 regions)", ("phone_recognizer.py", "analyze")),
    ("Presidio pattern recognizers (regex + validators)", ("pattern_recognizer.py", "analyze")),
    ("Presidio context enhancement (lemma window)", ("analyzer_engine.py", "_enhance_using_context")),
    ("Presidio analyze, all (recognizers + context + merging)", ("analyzer_engine.py", "analyze")),
    ("anonymizer (operators, keyed pseudonyms)", ("pii.py", "anonymize")),
)


def profile_stage(policy: Any, key: Any, records: list[dict], batch_size: int) -> dict[str, Any]:
    """cProfile of the stage's ``scrub_chunk`` in one process, summarised into buckets."""
    import cProfile
    import pstats

    from pipeline.common import scrubbing

    scrubbing.init_worker(policy, key, batch_size, False)
    scrubbing.scrub_chunk([(r, []) for r in records[:8]])  # warm-up
    chunks = [[(r, []) for r in records[i : i + 128]] for i in range(0, len(records), 128)]
    profiler = cProfile.Profile()
    profiler.enable()
    for chunk in chunks:
        scrubbing.scrub_chunk(chunk)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = next(ct for (file, _, name), (_, _, _, ct, _) in stats.items() if name == "scrub_chunk")

    def cumulative(file: str, name: str) -> float:
        return sum(ct for (f, _, n), (_, _, _, ct, _) in stats.items() if f.endswith(file) and n == name)

    buckets = {label: cumulative(*where) for label, where in PROFILE_BUCKETS}
    return {"records": len(records), "profiled_seconds": total,
            "share": {label: seconds / total for label, seconds in buckets.items()}, "seconds": buckets}  # fmt: skip


def main() -> None:
    configure_offline()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000, help="tickets scrubbed by each contender")
    parser.add_argument(
        "--profile", action="store_true", help="also profile the stage's work in one process (600 records)"
    )
    parser.add_argument("--no-rescan-run", action="store_true", help="skip the as-configured (re-scan) stage run")
    args = parser.parse_args()
    params = load_params()
    from pipeline.common.keys import load_key
    from pipeline.common.policy import load_pii_policy

    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, Path.cwd())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        raw, spans = sample(params, args.records, out)
        records = [json.loads(line) for line in raw.read_text(encoding="utf-8").splitlines()]
        results = {"stage (no re-scan: like for like)": bench_stage(params, policy, key, raw, spans, out, rescan=False)}
        if not args.no_rescan_run:
            results["stage (as configured, re-scan)"] = bench_stage(
                params, policy, key, raw, spans, out, rescan=params.scrub.rescan
            )
        results["naive analyze + anonymize loop"] = bench_naive(policy, key, records)
        results["spaCy nlp.pipe (full model, 1 process)"] = bench_spacy(policy, records, params.scrub.batch_size)
        profile = profile_stage(policy, key, records[:600], params.scrub.batch_size) if args.profile else None
    stage = results["stage (no re-scan: like for like)"]
    naive = results["naive analyze + anonymize loop"]
    spacy_ = results["spaCy nlp.pipe (full model, 1 process)"]
    workers = stage["workers"]
    summary = {
        "records": args.records,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cores_used": workers},
        "results": results,
        "ratio_vs_naive": stage["records_per_s"] / naive["records_per_s"],
        "ratio_vs_spacy_ceiling_x_cores": stage["records_per_s"] / (spacy_["records_per_s"] * workers),
        "steady_ratio_vs_naive": stage["steady_records_per_s"] / naive["steady_records_per_s"],
        "steady_ratio_vs_spacy_ceiling_x_cores": stage["steady_records_per_s"]
        / (spacy_["steady_records_per_s"] * workers),
        "targets": {"ratio_vs_naive": 3.0, "ratio_vs_spacy_ceiling_x_cores": 0.8},
        "profile": profile,
    }
    print(f"\n{'contender':40} {'rec/s':>7} {'steady':>7} {'start-up s':>10} {'seconds':>8} workers")
    for name, r in results.items():
        print(
            f"{name:40} {r['records_per_s']:7.1f} {r['steady_records_per_s']:7.1f} {r['startup_seconds']:10.1f} {r['seconds']:8.1f} {r['workers']:>7}"
        )
    if profile:
        print(
            f"\nprofile of scrub_chunk, 1 process, {profile['records']} records, {profile['profiled_seconds']:.1f} s under cProfile:"
        )
        for label, share in profile["share"].items():
            print(f"  {share:6.1%}  {label}")
    print(
        f"\nratio stage / naive: {summary['ratio_vs_naive']:.2f}x end to end, {summary['steady_ratio_vs_naive']:.2f}x steady (target >= 3)"
    )
    print(f"ratio stage / (spaCy ceiling x {workers} cores): {summary['ratio_vs_spacy_ceiling_x_cores']:.2f}x end to end, "
          f"{summary['steady_ratio_vs_spacy_ceiling_x_cores']:.2f}x steady (target >= 0.8)")  # fmt: skip
    name = "scrub_throughput" if args.records == 2000 else f"scrub_throughput_{args.records}"
    save_json(Path(f"reports/bench/{name}.json"), summary)


if __name__ == "__main__":
    main()
