"""Stage ``scrub``: remove personal data from the raw tickets with Presidio.

Detects PII in the free-text fields with Presidio's AnalyzerEngine (spaCy NER, predefined
recognizers, and the custom recognizers of ``policies/pii.yaml``), replaces it with the
policy's operator per entity (typed tag, mask, redaction, keyed hash or keyed pseudonym) via
the AnonymizerEngine, and pseudonymises or drops direct identifier columns.

Then it checks its own work: the analyzer re-scans the scrubbed text (residual detections
per entity), and where the ground-truth sidecar exists, per-entity recall and precision of
the detection and the number of true PII values still present in the output are measured.
The report holds counts, rates and score histograms only: never a value. Beside the figures on
our own data it copies the same policy's figures on the independent corpus (stage
``pii_benchmark``), so one report shows both.

Fast and streaming (:mod:`pipeline.common.scrubbing`, shared with ``govtune monitor``): records
flow in chunks through worker processes (one per core) that batch the NLP with ``nlp.pipe``;
memory does not grow with the input. With ``scrub.engine: ray`` the same chunks run on Ray Data
instead: the raw file is read as a Ray dataset, an actor pool runs the same engines (each actor
builds them once, as a local worker does), and the driver writes the results in input order, so
the output is byte-identical to the local engine's. Ray runs locally unless ``RAY_ADDRESS`` names
a cluster.

Inputs:  params ``data.*``, ``scrub.*``; ``policies/pii.yaml``; raw tickets and PII sidecar;
         ``reports/pii_benchmark.json`` (optional: "not measured" without it);
         the key in ``$GOVTUNE_PSEUDONYM_KEY`` (or the policy's key file / demo key).
Outputs: ``data/scrubbed/tickets.jsonl``, ``reports/pii_report.json``.
Run:     ``python -m pipeline.scrub`` or ``dvc repro scrub``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.io import evidence_of_this_run, sha256_file
from pipeline.common.keys import load_key
from pipeline.common.outputs import save_output
from pipeline.common.params import ScrubParams, load_params
from pipeline.common.policy import load_pii_policy
from pipeline.common.scrubbing import scrub_file
from pipeline.common.tracking import NullRun, flatten, stage_run

log = logging.getLogger(__name__)


def load_validation(path: Path) -> dict[str, Any]:
    """The validate stage's report (what it certified), or a clear error if there is none."""
    if not path.is_file():
        raise GovtuneError(str(path), "no validation report: the raw data has not been validated",
                           "run the validate stage first (`dvc repro validate`, or `python -m pipeline.validate`)")  # fmt: skip
    return json.loads(path.read_text(encoding="utf-8"))


def check_certified(validation: dict[str, Any], raw: Path, report_path: Path) -> str:
    """Refuses raw data that validation failed, or that is not the file it validated; returns
    the raw file's sha256.

    Raises:
        GovtuneError: naming the report and, for a changed file, both digests.
    """
    if validation.get("success") is not True:
        failed = ", ".join(validation.get("blocking_failures") or []) or "no result"
        raise GovtuneError(str(report_path), f"the raw data failed validation ({failed}): it is not scrubbed",
                           "fix the data, then run the validate stage again (`dvc repro` runs both in order)")  # fmt: skip
    actual = sha256_file(raw)
    certified = (validation.get("input") or {}).get("sha256")
    if certified != actual:
        raise GovtuneError(
            str(raw),
            f"not the file the validation report certifies: sha256 {actual} now, {certified} in {report_path}",
            "run the validate stage on this file first (`dvc repro` does, in order)",
        )
    return actual


def independent_corpus(path: Path) -> dict[str, Any]:
    """The same policy's figures on the independent corpus (stage ``pii_benchmark``), shown beside
    this report's own-data figures; the gate reads them from the benchmark report itself."""
    if not path.is_file():
        return {"measured": False, "reason": f"no {path}: run `dvc repro pii_benchmark`"}
    bench = json.loads(path.read_text(encoding="utf-8"))
    keys = ("direct_identifier_recall", "non_pii_chars_kept", "verbatim_leaks_direct", "direct_identifiers", "entities")
    return {
        "measured": True,
        "report": str(path),
        "corpus": bench.get("corpus"),
        "caught_share": bench.get("caught_share"),
    } | {k: bench.get(k) for k in keys}


def log_scrub(tracked: NullRun, cfg: ScrubParams, report: dict[str, Any]) -> None:
    """Logs the scrubbed dataset, per-entity recall/residual metrics and the report (no values)."""
    import pandas as pd

    tracked.log_params(
        {
            **flatten("scrub", cfg),
            "scrub.key_source": report["key"]["source"],
            "scrub.key_fingerprint": report["key"]["fingerprint"],
        }
    )
    tracked.log_dataset("scrubbed", cfg.out, pd.read_json(cfg.out, lines=True, dtype=False), context="scrubbed")
    metrics = {f"scrub/{k}": v for k, v in report["totals"].items() if isinstance(v, (int, float))}
    for entity, row in report["entities"].items():
        for key in ("recall", "residual_detections", "leaked_values"):
            if row[key] is not None:
                metrics[f"scrub/{key}.{entity}"] = row[key]
    tracked.log_metrics(metrics)
    tracked.log_artifact(cfg.report, "reports")


def main() -> None:
    """Scrubs data.raw per the PII policy; writes the scrubbed data and the report."""
    from pipeline.common.offline import configure_offline
    from pipeline.common.policy import load_data_contract

    configure_offline()
    params = load_params()
    cfg = params.scrub
    with evidence_of_this_run(cfg.report):  # no PII report of an earlier run survives a failed one
        raw_sha256 = check_certified(load_validation(params.validate_.report), params.data.raw, params.validate_.report)
        policy = load_pii_policy(cfg.policy)
        key = load_key(policy, cfg.policy, Path.cwd())
        if key.source == "demo":
            log.warning(
                "using the public demo pseudonymisation key (policy allows it); set %s for real data", policy.key.env
            )
        contract = load_data_contract(params.validate_.contract)
        deps = [params.data.raw, params.data.raw_pii_spans, cfg.policy, params.pii_benchmark.report]
        with stage_run(params.tracking, "scrub", deps, [cfg.out, cfg.report], params.compute) as tracked:
            report = scrub_file(cfg, policy, key, params.data.raw, params.data.raw_pii_spans, contract.max_record_bytes)
            # What the split stage checks it reads: this run's input and output.
            report["input"] = {"path": str(params.data.raw), "sha256": raw_sha256}
            report["output"] = {"path": str(cfg.out), "sha256": sha256_file(cfg.out)}
            report["independent_corpus"] = independent_corpus(params.pii_benchmark.report)
            save_output("pii_report", cfg.report, report)
            log_scrub(tracked, cfg, report)
    t = report["totals"]
    log.info(
        "PII: %d detections, %d residual, %s leaked of %s true spans, min recall %s",
        t["detections"], t["residual_detections"], t["leaked_values"], t["true_spans"], t["min_recall"],
    )  # fmt: skip


if __name__ == "__main__":
    run_main(main)
