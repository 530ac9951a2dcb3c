"""PII recall on text the recognizers were not written for: the scrub's analyzer vs stock Presidio.

Both run, side by side in one process, on three labelled corpora:

- ``presidio-evaluator``: ``data/eval/pii_benchmark.jsonl``, 1,000 sentences sampled (seed 7) from
  Microsoft's presidio-evaluator templates and FakeNameGenerator.com records: written by
  neither us nor our synthesizer, and never looked at while the recognizers were written
  (they were developed against a seed-42 sample of the same generator);
- ``faker-locales``: ``benchmarks/pii_corpus.build(1000, 7)``, our own Faker-locale and
  hand-labelled sentences (independent of ``pipeline/synthesize.py``, but written by us);
- ``synthesize``: the synthetic tickets' own sidecar.

Engines:

- ``policy``: the scrub stage's engine as it runs (``pipeline.common.pii.build_analyzer`` and
  ``detect_batch`` with ``policies/pii.yaml``: its recognizers, entity list and minimum scores);
- ``stock``: Presidio's ``AnalyzerEngine`` with the same spaCy model, its predefined
  recognizers and every entity it knows, no score floor.

A labelled span counts as caught when at least 80 % of its non-space characters lie in any
detection (whatever entity type: what matters is that the value is removed); ``strict`` also
reports the scrub's own definition (every alphanumeric character). "Kept" is the share of
non-space characters outside every labelled span that no detection touches (over-redaction
destroys the data's value). "Verbatim" counts labelled values still found in the anonymized
text (policy engine only).

Run: ``python -m benchmarks.pii_generalisation [--corpus data/raw/eval/pii_benchmark.jsonl] [--tickets 300]``
Writes ``reports/bench/pii_generalisation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.pii_corpus import build
from pipeline.common.io import save_json
from pipeline.common.pii_eval import CAUGHT_SHARE, DIRECT, judge, verbatim_leaks

REPO = Path(__file__).resolve().parents[1]


def policy_engine(policy: Any) -> Any:
    """The scrub's detection as it runs; ``detect.last`` keeps the last call's detections."""
    from pipeline.common.pii import build_analyzer, detect_batch

    analyzer = build_analyzer(policy)

    def detect(texts: list[str]) -> list[list[tuple[int, int]]]:
        detect.last = detect_batch(analyzer, policy, texts, batch_size=64)
        return [[(d.start, d.end) for d in found] for found in detect.last]

    return detect


def stock_engine(policy: Any) -> Any:
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": policy.ner_model}]}
    )
    batch = BatchAnalyzerEngine(AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"]))

    def detect(texts: list[str]) -> list[list[tuple[int, int]]]:
        return [
            [(r.start, r.end) for r in found] for found in batch.analyze_iterator(texts, language="en", batch_size=64)
        ]

    return detect


def ticket_rows(count: int) -> list[dict[str, Any]]:
    """The synthesizer's own tickets, in the same row shape (message field only)."""
    from pipeline.common.params import load_params
    from pipeline.synthesize import generate

    tickets, spans = generate(load_params(REPO / "params.yaml").synthesize.model_copy(update={"rows": count}))
    by_ticket: dict[str, list] = {}
    for s in spans:
        if s["field"] == "message":
            by_ticket.setdefault(s["ticket_id"], []).append(s)
    return [
        {"id": t["ticket_id"], "source": "synthesize", "text": t["message"], "spans": by_ticket.get(t["ticket_id"], [])}
        for t in tickets
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=REPO / "data" / "eval" / "pii_benchmark.jsonl",
        help="the independent corpus file (default: the presidio-evaluator sample)",
    )
    parser.add_argument("--tickets", type=int, default=300, help="synthetic tickets measured alongside")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "pii_generalisation.json")
    args = parser.parse_args(argv)
    from pipeline.common.offline import configure_offline
    from pipeline.common.policy import load_pii_policy

    configure_offline()
    policy = load_pii_policy(REPO / "policies" / "pii.yaml")
    corpus = [json.loads(line) for line in args.corpus.read_text(encoding="utf-8").splitlines()]
    corpora = {"presidio-evaluator": corpus, "faker-locales": build(1000, 7), "synthesize": ticket_rows(args.tickets)}
    results: dict[str, Any] = {
        "corpora": {"presidio-evaluator": str(args.corpus), "faker-locales": "benchmarks.pii_corpus.build(1000, seed=7)", "synthesize": f"pipeline.synthesize, {args.tickets} tickets"},
        "caught_share": CAUGHT_SHARE, "direct_identifiers": list(DIRECT),
    }  # fmt: skip
    for engine_name, make in (("policy", policy_engine), ("stock", stock_engine)):
        detect = make(policy)
        for corpus_name, rows in corpora.items():
            start = time.perf_counter()
            found = detect([r["text"] for r in rows])
            results[f"{engine_name}/{corpus_name}"] = judge(rows, found) | {
                "seconds": round(time.perf_counter() - start, 2)
            }
            if engine_name == "policy":
                results[f"policy/{corpus_name}"]["verbatim_leaks"] = verbatim_leaks(policy, rows, detect.last)
    save_json(args.out, results)
    keys = [k for k in results if "/" in k]
    print("| entity | " + " | ".join(keys) + " |")
    print("| --- |" + " ---: |" * len(keys))
    entities = sorted({e for k in keys for e in results[k]["entities"]})
    for e in entities:
        cells = [
            f"{results[k]['entities'][e]['recall']:.2f} ({results[k]['entities'][e]['spans']})"
            if e in results[k]["entities"]
            else "-"
            for k in keys
        ]
        print(f"| {e} | " + " | ".join(cells) + " |")
    print(
        "| **direct identifiers** | " + " | ".join(f"**{results[k]['direct_identifier_recall']}**" for k in keys) + " |"
    )
    print("| non-PII characters kept | " + " | ".join(str(results[k]["non_pii_chars_kept"]) for k in keys) + " |")
    for name in corpora:
        leaks = results[f"policy/{name}"]["verbatim_leaks"]
        print(
            f"verbatim leaks of direct identifiers (policy, {name}): {sum(leaks.get(e, 0) for e in DIRECT)} of {leaks}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
