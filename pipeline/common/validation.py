"""The data contract, checked with Great Expectations: what the validate stage and
``govtune monitor`` run on a raw file.

``policies/data_contract.yaml`` compiles into a Great Expectations 1.x ExpectationSuite
(``compile_rule``); ``check_file`` reads the records strictly (encoding, JSON, schema: errors
name file and line) and validates them; ``check_blocking`` stops on a failed blocking rule.
Results hold, per expectation, success, observed value, number of failing rows and the ids of
the first failing rows, never the raw values (they may be PII).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError
from pipeline.common.params import ValidateParams
from pipeline.common.policy import (
    ContractRule,
    CoverageRule,
    DataContract,
    DuplicateRateRule,
    InSetRule,
    LengthRule,
    MinRowsPerClassRule,
    NotNullRule,
    RegexRule,
    UniqueRule,
)  # fmt: skip
from pipeline.common.records import load_records

log = logging.getLogger(__name__)

# Result keys that may carry raw values; they never leave this module.
_RAW_VALUE_KEYS = ("unexpected_index_query", "partial_unexpected_list", "partial_unexpected_counts", "unexpected_list", "partial_unexpected_index_list", "unexpected_index_list", "details")  # fmt: skip


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation, with counts and ids only."""

    rule_id: str
    kind: str
    column: str
    severity: str
    expectation: str
    arguments: dict[str, Any]
    success: bool
    observed: dict[str, Any]
    failing_ids: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ValidationResult:
    """The whole validation: every check plus the summary the gate reads."""

    rows: int
    checks: list[CheckResult]

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == "blocking"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success and c.severity == "warning"]

    def as_dict(self, contract_path: str) -> dict[str, Any]:
        return {
            "contract": contract_path,
            "engine": "great_expectations",
            "rows": self.rows,
            "success": not self.blocking_failures,
            "expectations_total": len(self.checks),
            "expectations_failed": sum(not c.success for c in self.checks),
            "blocking_failures": [c.rule_id for c in self.blocking_failures],
            "warnings": [c.rule_id for c in self.warnings],
            "checks": [c.as_dict() for c in self.checks],
        }


def compile_rule(rule: ContractRule, contract: DataContract, rows: int) -> list[tuple[str, Any]]:
    """Turns one contract rule into Great Expectations expectations.

    Returns:
        ``[(check id, expectation)]``; a rule may expand to several (one per class).
    """
    import great_expectations as gx

    ex = gx.expectations
    col = rule.column

    def meta(check_id: str) -> dict[str, str]:
        return {"check_id": check_id, "rule_id": rule.id, "severity": rule.severity}

    if isinstance(rule, UniqueRule):
        return [(rule.id, ex.ExpectColumnValuesToBeUnique(column=col, meta=meta(rule.id)))]
    if isinstance(rule, RegexRule):
        return [(rule.id, ex.ExpectColumnValuesToMatchRegex(column=col, regex=rule.pattern, meta=meta(rule.id)))]
    if isinstance(rule, NotNullRule):
        return [(rule.id, ex.ExpectColumnValuesToNotBeNull(column=col, meta=meta(rule.id)))]
    if isinstance(rule, LengthRule):
        return [
            (
                rule.id,
                ex.ExpectColumnValueLengthsToBeBetween(
                    column=col, min_value=rule.min, max_value=rule.max, meta=meta(rule.id)
                ),
            )
        ]
    if isinstance(rule, InSetRule):
        return [(rule.id, ex.ExpectColumnValuesToBeInSet(column=col, value_set=rule.values, meta=meta(rule.id)))]
    if isinstance(rule, DuplicateRateRule):
        # Records repeating an earlier one = rows - distinct, so rate = 1 - distinct / rows.
        return [
            (
                rule.id,
                ex.ExpectColumnProportionOfUniqueValuesToBeBetween(
                    column=col, min_value=1.0 - rule.max_rate, meta=meta(rule.id)
                ),
            )
        ]
    if isinstance(rule, MinRowsPerClassRule):
        # "At least min_rows are v" == "at least min_rows/rows of the values are in {v}".
        mostly = min(1.0, rule.min_rows / max(rows, 1))
        return [
            (
                f"{rule.id}[{value}]",
                ex.ExpectColumnValuesToBeInSet(
                    column=col, value_set=[value], mostly=mostly, meta=meta(f"{rule.id}[{value}]")
                ),
            )
            for value in contract.allowed_values(col)
        ]
    if isinstance(rule, CoverageRule):
        return [(rule.id, ex.ExpectColumnValuesToNotBeNull(column=col, mostly=rule.min_rate, meta=meta(rule.id)))]
    raise AssertionError(f"unhandled rule kind {rule.kind}")  # pragma: no cover - the union is closed


def run_suite(contract: DataContract, records: list[dict[str, Any]], max_failing_ids: int) -> ValidationResult:
    """Validates the records with the compiled suite in an ephemeral GX context."""
    import great_expectations as gx
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=list(contract.columns))
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("raw")
        .add_dataframe_asset("records")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="data_contract"))
    by_rule = {r.id: r for r in contract.rules}
    compiled = [
        (check_id, rule, exp) for rule in contract.rules for check_id, exp in compile_rule(rule, contract, len(records))
    ]
    for _, _, expectation in compiled:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="raw", data=batch, suite=suite))
    outcome = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [contract.id_column]},
    )
    # GX may reorder results; each carries its check id in meta.
    results = {r.expectation_config.meta["check_id"]: r.to_json_dict() for r in outcome.results}
    checks = [
        summarize(cid, by_rule[rule.id], results[cid], contract.id_column, max_failing_ids) for cid, rule, _ in compiled
    ]
    return ValidationResult(rows=len(records), checks=checks)


def summarize(check_id: str, rule: ContractRule, result: dict[str, Any], id_column: str, max_ids: int) -> CheckResult:
    """Keeps counts, rates and failing ids of a GX result; drops every raw value."""
    raw = result.get("result", {})
    observed = {k: v for k, v in raw.items() if k not in _RAW_VALUE_KEYS and not isinstance(v, list)}
    ids = [
        row[id_column] for row in raw.get("unexpected_index_list") or [] if isinstance(row, dict) and id_column in row
    ]
    kwargs = {k: v for k, v in result["expectation_config"]["kwargs"].items() if k != "batch_id"}
    if isinstance(rule, MinRowsPerClassRule):
        # The "unexpected" rows here are the other classes: report this class's count instead.
        observed = {
            "class_rows": raw.get("element_count", 0) - raw.get("unexpected_count", 0),
            "min_rows": rule.min_rows,
        }
        ids = []
    if result.get("exception_info", {}).get("raised_exception"):
        observed["error"] = "expectation raised an exception (column missing or of the wrong type)"
    return CheckResult(
        rule_id=check_id, kind=rule.kind, column=rule.column, severity=rule.severity,
        expectation=result["expectation_config"]["type"], arguments=kwargs, success=bool(result["success"]),
        observed=observed, failing_ids=[str(i) for i in ids[:max_ids]],
    )  # fmt: skip


def describe_failure(check: CheckResult) -> str:
    """One phrase for a failed check: failing row count, or the observed aggregate."""
    o = check.observed
    if "error" in o:
        return o["error"]
    if "class_rows" in o:
        return f"{o['class_rows']} rows, fewer than {o['min_rows']}"
    if "unexpected_count" in o:
        return f"{o['unexpected_count']} failing rows"
    return f"observed {o.get('observed_value')}"


def check_file(cfg: ValidateParams, contract: DataContract, raw_path: Path) -> ValidationResult:
    """Reads the raw data strictly and validates it with the compiled suite."""
    records = load_records(raw_path, contract.columns, contract.max_record_bytes)
    log.info("read %d records from %s; running %d contract rules", len(records), raw_path, len(contract.rules))
    return run_suite(contract, records, cfg.max_failing_ids)


def check_blocking(result: ValidationResult, raw: Path, cfg: ValidateParams) -> None:
    """Logs warnings; raises on blocking failures (naming rule, column and count)."""
    for check in result.warnings:
        log.warning(
            "warning rule %s (column %s): %s failing rows",
            check.rule_id,
            check.column,
            check.observed.get("unexpected_count", "n/a"),
        )
    if result.blocking_failures:
        lines = [f"rule {c.rule_id} (column {c.column}): " + describe_failure(c) for c in result.blocking_failures]
        raise GovtuneError(
            str(raw),
            "data contract failed:\n    " + "\n    ".join(lines),
            f"fix the data (failing ids in {cfg.report}) or, if the rule is wrong, change {cfg.contract}",
        )
    log.info("data contract passed: %d expectations, %d warning(s)", len(result.checks), len(result.warnings))
