"""Stage ``validate``: check the raw data against the data contract with Great Expectations.

Reads ``data/raw`` strictly (encoding, JSON, schema: errors name file and line), compiles
``policies/data_contract.yaml`` into a Great Expectations 1.x ExpectationSuite, validates the
records with it (:mod:`pipeline.common.validation`, shared with ``govtune monitor``), and
writes the results. A failing blocking rule stops the pipeline.

Reports hold, per expectation: success, observed value, number of failing rows and the ids of
the first failing rows, never the raw values (they may be PII).

Inputs:  params ``data.raw``, ``validate.*``; ``policies/data_contract.yaml``; the raw data.
Outputs: ``reports/data_validation.json``, ``reports/data_validation.html``.
Run:     ``python -m pipeline.validate`` or ``dvc repro validate``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.common.errors import run_main
from pipeline.common.io import evidence_of_this_run, save_text, sha256_file
from pipeline.common.outputs import save_output
from pipeline.common.params import ValidateParams, load_params
from pipeline.common.policy import (
    DataContract,
    load_data_contract,
)  # fmt: skip
from pipeline.common.tracking import NullRun, flatten, stage_run
from pipeline.common.validation import ValidationResult, check_blocking, check_file

log = logging.getLogger(__name__)

# Result keys that may carry raw values; they never leave this module.


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page of the validation results (no raw values): ``templates/data_validation.html.j2``."""
    from pipeline.common.html import render_page

    return render_page("data_validation.html.j2", report=report)


def log_validation(
    tracked: NullRun, raw: Path, contract: DataContract, report: dict[str, Any], cfg: ValidateParams
) -> None:
    """Logs the raw dataset (digest and schema only), the summary metrics and the reports."""
    import pandas as pd

    tracked.log_params(flatten("validate", cfg))
    tracked.log_dataset(
        "raw", raw, pd.DataFrame({c: pd.Series(dtype="object") for c in contract.columns}), context="raw"
    )
    tracked.log_metrics({
        "validate/rows": report["rows"], "validate/expectations_failed": report["expectations_failed"],
        "validate/blocking_failures": len(report["blocking_failures"]), "validate/success": float(report["success"]),
    })  # fmt: skip
    tracked.log_artifact(cfg.report, "reports")
    tracked.log_artifact(cfg.html, "reports")


def main() -> None:
    """Validates data.raw; writes the reports; exits non-zero on a blocking failure."""
    from pipeline.common.offline import configure_offline

    configure_offline()
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    params = load_params()
    cfg = params.validate_
    # A run that stops (unreadable file, bad contract) leaves no report of an earlier run behind;
    # a complete report of a failed contract stays, for the failing ids.
    with evidence_of_this_run(cfg.report, cfg.html) as evidence:
        contract = load_data_contract(cfg.contract)
        deps = [params.data.raw, cfg.contract]
        with stage_run(params.tracking, "validate", deps, [cfg.report, cfg.html], params.compute) as tracked:
            raw_sha256 = sha256_file(params.data.raw) if params.data.raw.is_file() else None
            result: ValidationResult = check_file(cfg, contract, params.data.raw)
            # What the next stage checks it reads: the file this report certifies (or not).
            report = result.as_dict(str(cfg.contract)) | {"input": {"path": str(params.data.raw), "sha256": raw_sha256}}
            save_output("data_validation", cfg.report, report)
            save_text(cfg.html, render_html(report))
            log_validation(tracked, params.data.raw, contract, report, cfg)
            evidence.keep()
            check_blocking(result, params.data.raw, cfg)


if __name__ == "__main__":
    run_main(main)
