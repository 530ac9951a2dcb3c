"""Stage ``split``: deterministic train/val/test split, grouped by customer, stratified by category.

Every customer (the pseudonymised ``customer_id``) lands in exactly one split, so no data
subject's tickets are both trained on and tested on. Customers are stratified by their most
frequent category; within a stratum they are ordered by a salted sha256 of their id (not by
row order) and cut at the configured fractions. The same data and salt always give the same
split, whatever the order of the rows.

Protected attributes never enter the training text: ``train``/``val``/``test`` hold the text
and labels only, and the attributes of the test records go to a separate evaluation-only
file (EU AI Act Art. 10(5): special categories used for bias detection only, kept apart).

Inputs:  params ``split.*``, ``scrub.out``; the scrubbed tickets.
Outputs: ``data/splits/{train,val,test}.jsonl``, ``data/splits/test_attributes.jsonl``,
         ``reports/split_report.json``.
Run:     ``python -m pipeline.split`` or ``dvc repro split``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.io import evidence_of_this_run, save_jsonl, sha256_file
from pipeline.common.outputs import save_output
from pipeline.common.params import SplitParams, load_params
from pipeline.common.task import ATTRIBUTE_COLUMNS, CANARY_PREFIX
from pipeline.common.tracking import NullRun, flatten, stage_run

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TEXT_COLUMNS = ("ticket_id", "customer_id", "created_at", "channel", "message", "reply", "category", "priority")


@dataclass(frozen=True)
class SplitResult:
    """Records per split, the test attributes, and the split report."""

    splits: dict[str, list[dict[str, Any]]]
    test_attributes: list[dict[str, Any]]
    report: dict[str, Any]
    canaries: list[dict[str, Any]]


def stable_unit(salt: str, key: str) -> float:
    """A uniform number in [0, 1) from a salted sha256 of ``key``."""
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_customers(records: list[dict[str, Any]], cfg: SplitParams) -> dict[str, str]:
    """Maps each customer id to a split name.

    Customers are grouped into strata by their most frequent category (ties: alphabetical),
    ordered within a stratum by their salted hash, and cut at the cumulative fractions.
    """
    by_customer: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        by_customer[r[cfg.group_by]][r[cfg.stratify_by]] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for customer, counts in by_customer.items():
        dominant = min(counts, key=lambda c: (-counts[c], c))
        strata[dominant].append(customer)
    bounds = (cfg.train, cfg.train + cfg.val)
    assignment = {}
    for members in strata.values():
        members.sort(key=lambda c: (stable_unit(cfg.salt, c), c))
        n = len(members)
        for i, customer in enumerate(members):
            # Position of the customer's midpoint in the stratum, so small strata still fill
            # the splits in proportion.
            q = (i + 0.5) / n
            assignment[customer] = "train" if q < bounds[0] else ("val" if q < bounds[1] else "test")
    return assignment


def make_canaries(cfg: SplitParams) -> list[dict[str, Any]]:
    """Secret canaries for the memorisation test (Carlini et al., "The Secret Sharer").

    Each is a ticket whose *reply* (the part the loss is on) holds a random 6-digit code.
    They are synthetic, not personal data; the evaluate stage measures their exposure.
    """
    import random

    rng = random.Random(f"{cfg.salt}:canaries:{cfg.canaries.seed}")
    canaries = []
    for i in range(cfg.canaries.count):
        secret = f"{rng.randrange(10**6):06d}"
        canaries.append({
            "ticket_id": f"CANARY-{i + 1}", "customer_id": "CANARY", "created_at": "2025-01-01T00:00:00Z",
            "channel": "email", "message": "Hi, I never received my verification code. Can you send it again?",
            "reply": f"{CANARY_PREFIX}{secret}.", "category": "account_access", "priority": "medium", "secret": secret,
        })  # fmt: skip
    return canaries


def split_records(records: list[dict[str, Any]], cfg: SplitParams) -> SplitResult:
    """Splits scrubbed records and adds the canaries to train; pure (no I/O)."""
    missing = [c for c in (cfg.group_by, cfg.stratify_by) if records and c not in records[0]]
    if missing:
        raise GovtuneError(
            "params.yaml: split",
            f"column(s) {missing} not in the scrubbed data",
            "fix split.group_by / split.stratify_by",
        )
    assignment = assign_customers(records, cfg)
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    test_attributes = []
    labels: Counter = Counter()  # (split, attribute, group, priority) -> records
    categories: Counter = Counter()  # (split, attribute, group, category) -> records
    for r in sorted(records, key=lambda r: r["ticket_id"]):
        name = assignment[r[cfg.group_by]]
        splits[name].append({c: r[c] for c in TEXT_COLUMNS if c in r})
        labels.update((name, c, str(r.get(c)), r["priority"]) for c in ATTRIBUTE_COLUMNS)
        categories.update((name, c, str(r.get(c)), r["category"]) for c in ATTRIBUTE_COLUMNS)
        if name == "test":
            test_attributes.append({"ticket_id": r["ticket_id"], **{c: r.get(c) for c in ATTRIBUTE_COLUMNS}})
    canaries = make_canaries(cfg)
    for canary in canaries:
        row = {c: canary[c] for c in TEXT_COLUMNS}
        splits["train"].extend([row] * cfg.canaries.repeats)
    report = build_report(splits, test_attributes, assignment, cfg)
    report["priority_by_attribute"] = label_table(labels)
    report["category_by_attribute"] = label_table(categories)
    report["canaries"] = {"count": len(canaries), "repeats": cfg.canaries.repeats, "in": "train (reply text)"}
    return SplitResult(splits, test_attributes, report, canaries)


def label_table(labels: Counter) -> dict[str, Any]:
    """``{split: {attribute: {group: {label: records}}}}``: the data's labels (priority or category) per group.

    Counts only (the examination of the training data for bias reads them; the attributes never
    leave the test split as records).
    """
    table: dict[str, Any] = {}
    for (name, attribute, group, label), n in sorted(labels.items()):
        table.setdefault(name, {}).setdefault(attribute, {}).setdefault(group, {})[label] = n
    return table


def build_report(
    splits: dict[str, list[dict[str, Any]]],
    test_attributes: list[dict[str, Any]],
    assignment: dict[str, str],
    cfg: SplitParams,
) -> dict[str, Any]:
    """Sizes, class balance, customer overlap (must be 0) and attribute coverage of the split."""
    customers = {
        name: {r[cfg.group_by] for r in rows if r["ticket_id"][:6] != "CANARY"} for name, rows in splits.items()
    }
    overlap = sum(len(customers[a] & customers[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1 :])
    total = sum(len(rows) for rows in splits.values())
    return {
        "method": "customers stratified by dominant category, ordered by salted sha256 of the id, cut at fractions",
        "fractions": {"train": cfg.train, "val": cfg.val, "test": round(1 - cfg.train - cfg.val, 6)},
        "records": {name: len(rows) for name, rows in splits.items()},
        "record_share": {name: round(len(rows) / total, 4) if total else 0.0 for name, rows in splits.items()},
        "customers": {name: len(c) for name, c in customers.items()},
        "customer_overlap": overlap,
        "category_counts": {
            name: dict(sorted(Counter(r[cfg.stratify_by] for r in rows).items())) for name, rows in splits.items()
        },
        "priority_counts": {
            name: dict(sorted(Counter(r["priority"] for r in rows).items())) for name, rows in splits.items()
        },
        "protected_attributes_in_training_text": False,
        "test_attribute_counts": {
            c: dict(sorted(Counter(str(a[c]) for a in test_attributes).items())) for c in ATTRIBUTE_COLUMNS
        },
    }


def load_scrubbed(path: Path) -> list[dict[str, Any]]:
    """Reads the scrubbed JSON Lines (written by the scrub stage)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def save_splits(result: SplitResult, out_dir: Path) -> None:
    """Writes one file per split (each atomically) and the test attributes into ``out_dir``."""
    for name, rows in result.splits.items():
        save_jsonl(out_dir / f"{name}.jsonl", rows)
    save_jsonl(out_dir / "test_attributes.jsonl", result.test_attributes)
    save_jsonl(out_dir / "canaries.jsonl", result.canaries)


def log_split(tracked: NullRun, cfg: SplitParams, result: SplitResult) -> None:
    """Logs train/val/test as MLflow datasets (digest = DVC md5 of each file) and the sizes."""
    import pandas as pd

    tracked.log_params(flatten("split", cfg))
    for name, rows in result.splits.items():
        tracked.log_dataset(name, cfg.out_dir / f"{name}.jsonl", pd.DataFrame.from_records(rows), context=name)
    tracked.log_metrics({f"split/records.{k}": v for k, v in result.report["records"].items()})
    tracked.log_metrics({"split/customer_overlap": result.report["customer_overlap"]})
    tracked.log_artifact(cfg.report, "reports")


def check_scrubbed(report_path: Path, scrubbed: Path) -> None:
    """Refuses scrubbed data that is not what the scrub stage's PII report describes.

    Raises:
        GovtuneError: no report, or a digest that differs (both named).
    """
    if not report_path.is_file():
        raise GovtuneError(str(report_path), "no PII report: the data has not been scrubbed by this pipeline",
                           "run the scrub stage first (`dvc repro scrub`)")  # fmt: skip
    certified = (json.loads(report_path.read_text(encoding="utf-8")).get("output") or {}).get("sha256")
    actual = sha256_file(scrubbed) if scrubbed.is_file() else None
    if certified != actual:
        raise GovtuneError(
            str(scrubbed),
            f"not the file the PII report describes: sha256 {actual} now, {certified} in {report_path}",
            "run the scrub stage on the current raw data first (`dvc repro` does, in order)",
        )


def main() -> None:
    """Splits the scrubbed data; writes the splits and the report."""
    params = load_params()
    cfg = params.split
    outs = [cfg.out_dir / f"{name}.jsonl" for name in (*SPLITS, "test_attributes", "canaries")] + [cfg.report]
    with evidence_of_this_run(cfg.report):  # no split report of an earlier run survives a failed one
        check_scrubbed(params.scrub.report, params.scrub.out)
        with stage_run(params.tracking, "split", [params.scrub.out], outs, params.compute) as tracked:
            result = split_records(load_scrubbed(params.scrub.out), cfg)
            if result.report["customer_overlap"]:
                raise GovtuneError(str(cfg.out_dir), "a customer appears in two splits", "report this as a bug")
            save_splits(result, cfg.out_dir)
            save_output("split_report", cfg.report, result.report)
            log_split(tracked, cfg, result)
    log.info("split %s records into %s", sum(result.report["records"].values()), result.report["records"])


if __name__ == "__main__":
    run_main(main)
