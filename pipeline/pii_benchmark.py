"""Stage ``pii_benchmark``: the scrub's analyzer on labelled text it was not written for.

The scrub report measures recall on the synthetic tickets' own sidecar, which shows only that
the recognizers match our synthesizer. This stage runs the same engine (``policies/pii.yaml``,
``pipeline.common.pii.build_analyzer`` and ``detect_batch``) over an independent corpus,
``data/eval/pii_benchmark.jsonl`` by default: 1,000 sentences sampled from Microsoft's
presidio-evaluator templates and FakeNameGenerator.com records (``python -m
benchmarks.pii_corpus --source presidio-evaluator``). It reports recall per entity, recall on
direct identifiers, the share of other text left untouched, and labelled values the policy's
operators leave verbatim. Counts and rates only: no value reaches the report or MLflow.

The gate reads it as evidence source ``pii_benchmark`` (``policies/privacy.yaml``), and the
compliance report shows it beside the scrub report's figures.

Inputs:  params ``scrub.policy``, ``pii_benchmark.corpus``, ``scrub.batch_size``.
Outputs: ``reports/pii_benchmark.json``.
Run:     ``python -m pipeline.pii_benchmark`` or ``dvc repro pii_benchmark``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.io import evidence_of_this_run, sha256_file
from pipeline.common.outputs import save_output
from pipeline.common.params import load_params
from pipeline.common.pii import build_analyzer, detect_batch
from pipeline.common.pii_eval import CAUGHT_SHARE, DEFINITIONS, DIRECT, judge, verbatim_leaks
from pipeline.common.policy import PiiPolicy, load_data_contract, load_pii_policy
from pipeline.common.records import iter_jsonl
from pipeline.common.tracking import stage_run

log = logging.getLogger(__name__)


def load_corpus(path: Path, max_record_bytes: int) -> list[dict[str, Any]]:
    """The labelled corpus; a missing file, a bad line or a span off its value is an error."""
    if not path.is_file():
        raise GovtuneError(str(path), "no PII benchmark corpus", "restore it from git, or point pii_benchmark.corpus at a labelled corpus "
                           "(`python -m benchmarks.pii_corpus --source presidio-evaluator --out FILE` writes one)")  # fmt: skip
    rows = []
    for line_no, row in iter_jsonl(path, max_record_bytes):
        if not isinstance(row.get("text"), str) or not isinstance(row.get("spans"), list):
            raise GovtuneError(
                f"{path}:{line_no}",
                "a corpus line needs a text and a list of spans",
                'write {"text": ..., "spans": [...]} per line',
            )
        for span in row["spans"]:
            if row["text"][span["start"] : span["end"]] != span.get("value"):
                raise GovtuneError(
                    f"{path}:{line_no}",
                    f"a {span.get('entity_type')} span does not point at its value",
                    "fix the span's start/end",
                )
        rows.append(row)
    return rows


def measure(policy: PiiPolicy, rows: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """The policy's engine on ``rows``: recall per entity, direct identifiers, kept share, leaks.
    With scrubbing switched off nothing is detected (recall 0), as the scrub would copy the text."""
    start = time.perf_counter()
    if policy.enabled:
        found = detect_batch(build_analyzer(policy), policy, [r["text"] for r in rows], batch_size)
    else:
        found = [[] for _ in rows]
    seconds = time.perf_counter() - start
    result = judge(rows, [[(d.start, d.end) for d in f] for f in found])
    leaks = verbatim_leaks(policy, rows, found)
    result["verbatim_leaks"] = leaks
    result["verbatim_leaks_direct"] = sum(n for e, n in leaks.items() if e in DIRECT)
    result["seconds"] = round(seconds, 2)
    return result


def main() -> None:
    """Measures the scrub's analyzer on the benchmark corpus; writes the report."""
    params = load_params()
    cfg, policy_path = params.pii_benchmark, params.scrub.policy
    with evidence_of_this_run(cfg.report):
        policy = load_pii_policy(policy_path)
        rows = load_corpus(cfg.corpus, load_data_contract(params.validate_.contract).max_record_bytes)
        with stage_run(
            params.tracking, "pii_benchmark", [cfg.corpus, policy_path], [cfg.report], params.compute
        ) as tracked:
            result = measure(policy, rows, cfg.batch_size)
            report = {
                "corpus": {"path": str(cfg.corpus), "sha256": sha256_file(cfg.corpus),
                           "sources": sorted({str(r.get("source")) for r in rows}), "sentences": result.pop("sentences"), "spans": result.pop("spans")},
                "policy": {"path": str(policy_path), "sha256": sha256_file(policy_path), "enabled": policy.enabled, "ner_model": policy.ner_model,
                           "builtin_recognizers": policy.builtin_recognizers, "propagate_names": policy.propagate_names},
                "caught_share": CAUGHT_SHARE, "direct_identifiers": list(DIRECT), "definitions": DEFINITIONS,
            } | result  # fmt: skip
            save_output("pii_benchmark", cfg.report, report)
            tracked.log_metrics({"pii_benchmark.direct_identifier_recall": report["direct_identifier_recall"] or 0.0,
                                 "pii_benchmark.non_pii_chars_kept": report["non_pii_chars_kept"] or 0.0,
                                 "pii_benchmark.verbatim_leaks_direct": report["verbatim_leaks_direct"]})  # fmt: skip
    log.info("direct-identifier recall %.4f on %d sentences of %s; non-PII kept %.4f", report["direct_identifier_recall"],
             report["corpus"]["sentences"], cfg.corpus, report["non_pii_chars_kept"])  # fmt: skip


if __name__ == "__main__":
    run_main(main)
