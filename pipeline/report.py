"""Stage report: the compliance report, the model card and the signed evidence manifest.

Builds one JSON document from the evidence the stages wrote (decision, system, datasheet,
training, evaluation, rules with controls coverage, lineage, evidence), renders it as a
self-contained HTML page (CSS and plots inline), writes a Hugging Face style model card, and
finally the evidence manifest: sha256 of every artifact the decision rests on, chained to the
previous manifest in the audit log and signed with Ed25519 when a key is configured.

The report carries no record content: only counts, rates, ids of rules and hashes.
On REJECTED, with ``fail_on_reject`` in ``policies/promotion.yaml``, the stage exits 1 after
everything is written (so ``dvc repro`` fails with the evidence in place).

Inputs: ``reports/*`` of the other stages, provenance files, policies, params, lock file.
Outputs: ``reports/compliance_report.{json,html,pdf}`` (PDF printed by headless Chromium), ``reports/MODEL_CARD.md``,
``reports/evidence_manifest.json``; an MLflow run; tags on the model version.
Run: ``dvc repro report`` (or ``python -m pipeline.report``).
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.io import evidence_of_this_run, save_json, save_text
from pipeline.common.outputs import read_output, save_output
from pipeline.common.params import Params, load_params

log = logging.getLogger(__name__)

# The DAG in dvc.yaml's order; monitor runs after promotion, on each new batch against the champion.
STAGES = (
    "base_model",
    "validate",
    "scrub",
    "pii_benchmark",
    "split",
    "finetune",
    "evaluate",
    "gate",
    "report",
    "monitor",
)

# What the report documents for the EU AI Act items the issue names, and what it leaves out.
AI_ACT_COVERAGE = [
    ("EU AI Act Art. 10", "data governance", "datasheet (section 3): contract results, PII handling and measured recall, protected attributes as evaluation-only metadata; fairness examination (section 5)"),
    ("EU AI Act Art. 11 + Annex IV", "technical documentation", "this report: system, data, training, evaluation, rules, lineage; model card"),
    ("EU AI Act Art. 12", "record-keeping", "MLflow runs per stage, hash-chained audit log, signed evidence manifest (section 8)"),
    ("EU AI Act Art. 15", "accuracy, robustness, cybersecurity", "quality floors and no-regression rules (section 6), artifact integrity (`govtune verify`)"),
    ("EU AI Act Annex XI 1(2)(d)-(e)", "computational resources and energy used for training (documentation asked of general-purpose model providers)", "section 4: each stage's wall, CPU and GPU time, peak memory, tokens and energy (from hardware power counters, or \"not measured\" with the reason), their cost and emissions; reports/compute.json"),
    ("EU AI Act Art. 72", "post-market monitoring", "stage monitor / `govtune monitor BATCH`: each new batch's drift and PII mix against the training data, and the champion's quality and fairness on it, judged by policies/monitoring.yaml; its own reports under reports/monitoring/"),
]  # fmt: skip
NOT_COVERED = [
    "EU AI Act Art. 9 risk management as an organisational process (the rules are one input to it)",
    "EU AI Act Art. 13 instructions for use beyond the model card, and Art. 14 human oversight in operation (approvals cover promotion only)",
    "robustness to adversarial inputs and cybersecurity testing of a deployment",
    "a data protection impact assessment (GDPR Art. 35)",
]


def load_json(path: Path, source: str | None = None) -> dict[str, Any]:
    """A stage's JSON output; with ``source``, validated against that evidence model.

    Raises:
        GovtuneError: it is missing, unreadable, or malformed (run the stage that writes it).
    """
    try:
        return read_output(source, path) if source else json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GovtuneError(
            str(path),
            f"missing or unreadable evidence ({type(exc).__name__})",
            "run `dvc repro` so the stage that writes it runs",
        ) from exc


def _v(metric: dict[str, Any]) -> dict[str, Any]:
    return {k: metric.get(k) for k in ("value", "n", "ci95")}


def fairness_section(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Per protected attribute: parity metrics (base vs fine-tuned) and per-group rates.

    An attribute the evaluate stage could not judge (fewer than two groups large enough, its
    ``error`` entry) is carried as ``not_judged`` with the group sizes, so the report says so
    instead of failing: the gate has already failed its rules for want of the metric.
    """
    out: dict[str, Any] = {}
    for attr, f in evaluation["finetuned"]["fairness"].items():
        b = evaluation["base"]["fairness"].get(attr, {})
        if "groups" not in f:
            out[attr] = {
                "not_judged": f.get("error", "no fairness result"),
                "group_sizes": f.get("group_sizes", {}),
                "metrics": {},
            }
            continue
        out[attr] = {
            "metrics": {k: {"base": _v(b.get(k, {})), "finetuned": _v(f[k])} for k in f if isinstance(f[k], dict) and "value" in f[k]},
            "groups": {g: {k: m.get(k) for k in ("n", "category_accuracy", "escalation_rate", "escalation_rate_ci95", "too_small")} for g, m in f["groups"].items()},
            "small_groups": f.get("small_groups", []),
        }  # fmt: skip
    return out


def pii_benchmark_section(bench: dict[str, Any]) -> dict[str, Any]:
    """The scrub's analyzer on the independent corpus (stage pii_benchmark): which corpus, and its figures."""
    return {"corpus": bench.get("corpus"), "caught_share": bench.get("caught_share"), "direct_identifier_recall": bench.get("direct_identifier_recall"),
            "non_pii_chars_kept": bench.get("non_pii_chars_kept"), "verbatim_leaks_direct": bench.get("verbatim_leaks_direct"),
            "entities": {e: {"spans": m.get("spans"), "recall": m.get("recall"), "direct": m.get("direct")} for e, m in bench.get("entities", {}).items()}}  # fmt: skip


def build_report(
    params: Params, inputs: dict[str, dict[str, Any]], lineage: dict[str, Any], environment: dict[str, str]
) -> dict[str, Any]:
    """The report document (pure: from the loaded evidence)."""
    decision, evaluation, pii = inputs["decision"], inputs["evaluation"], inputs["pii"]
    validation, split, train, base, adapter = (
        inputs["validation"],
        inputs["split"],
        inputs["train"],
        inputs["base"],
        inputs["adapter"],
    )
    rc = params.report
    quality = {
        k: {"base": _v(evaluation["base"]["quality"][k]), "finetuned": _v(evaluation["finetuned"]["quality"][k])}
        for k in evaluation["finetuned"]["quality"]
    }
    fairness = fairness_section(evaluation)
    rules = decision["rules"]
    return {
        "title": f"Compliance report: {rc.system_name}",
        "decision": {k: decision.get(k) for k in ("decision", "summary", "decided_at", "candidate_version", "failing_rules", "waived_rules", "warnings", "expired_waivers")}
        | {"approvals": decision["approvals"]["counted"], "registry": decision.get("registry", {})},
        "system": {"name": rc.system_name, "purpose": rc.purpose, "intended_use": rc.intended_use, "out_of_scope_use": rc.out_of_scope_use,
                   "base_model": {k: base.get(k) for k in ("model_id", "name", "upstream", "license", "source", "source_files_sha256", "intended_use", "owner")}},
        "datasheet": {
            "source": str(params.data.raw), "rows": validation.get("rows"), "validation": {k: validation.get(k) for k in ("success", "expectations_total", "expectations_failed", "blocking_failures", "warnings", "contract")},
            "pii": {"engine": pii.get("engine"), "ner_model": pii.get("ner_model"), "key": pii.get("key"), "totals": pii.get("totals"),
                    "entities": {e: {k: m.get(k) for k in ("detections", "recall", "precision", "leaked_values", "residual_detections", "operator")} for e, m in pii.get("entities", {}).items()},
                    "independent_corpus": pii_benchmark_section(inputs["pii_benchmark"])},
            "splits": {k: split.get(k) for k in ("customers", "category_counts", "customer_overlap", "method", "canaries")},
            "erasure_requests": decision.get("erasure_requests", []),
            "label_examination": evaluation.get("training_labels", {}),
            "protected_attributes": "gender, age band and region are evaluation-only metadata: kept out of the training text, written only to the test split's attribute file (EU AI Act Art. 10(5)); identifiers are keyed pseudonyms (GDPR Art. 4(5))",
        },
        "training": {"params": params.finetune.model_dump(mode="json"), "metrics": train, "environment": environment,
                     "adapter": {k: adapter.get(k) for k in ("base_model_id", "base_model_sha256", "data_md5")} | (train.get("run") or {})},
        "evaluation": {"definitions": evaluation.get("definitions"), "quality": quality, "fairness": fairness,
                       "counterfactual": {m: evaluation[m]["counterfactual"] for m in ("base", "finetuned")}, "surviving_signals": evaluation.get("surviving_signals"),
                       "not_testable": evaluation.get("not_testable"),
                       "privacy": {m: {k: v for k, v in evaluation[m]["privacy"].items()} for m in ("base", "finetuned")}},
        "rules": rules,
        "controls": {"ai_act_coverage": [dict(zip(("ref", "title", "documented_by"), c, strict=True)) for c in AI_ACT_COVERAGE], "not_covered": NOT_COVERED,
                     "by_control": _by_control(rules)},
        "lineage": lineage,
        "retention": "keep this report, the manifest and the audit log for 10 years after the system is placed on the market (EU AI Act Art. 18)",
    }  # fmt: skip


def compute_section(params: Params) -> dict[str, Any]:
    """What the stages that made the model used, added up, with cost and emissions
    (:func:`pipeline.common.compute.summarize`); a stage without its ledger is listed as missing."""
    from pipeline.common.compute import MAKING, carbon_intensity, summarize

    c = params.compute
    ledgers = {
        s: load_json(c.dir / f"{s}.json", "stage_compute") if (c.dir / f"{s}.json").is_file() else None for s in MAKING
    }
    return summarize(ledgers, c, carbon_intensity(c.country_iso_code, c.kg_co2e_per_kwh))


def _by_control(rules: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rules:
        for c in r["controls"]:
            out.setdefault(c, []).append(f"{r['id']} ({r['status']})")
    return dict(sorted(out.items()))


# --- rendering -------------------------------------------------------------------------------


def fairness_html(fairness: dict[str, Any], images: dict[str, str]) -> str:
    """Section 5's fairness part: per attribute, the parity metrics, the group table and its plot."""
    from pipeline.common.html import render_page

    return render_page("fairness.html.j2", fairness=fairness, images=images)


def render_html(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """A self-contained page (``templates/compliance_report.html.j2``): inline CSS, plots as data
    URIs, readable offline, prints cleanly. Every value is escaped by Jinja2's autoescape."""
    from pipeline.common.html import render_page

    encoded = {name: base64.b64encode(png).decode() for name, png in images.items()}
    return render_page("compliance_report.html.j2", report=report, images=encoded, stages=STAGES)


def render_model_card(report: dict[str, Any], params: Params) -> str:
    """A Hugging Face model card: YAML metadata (license, base_model, datasets, model-index) + text."""
    import yaml

    s, q = report["system"], report["evaluation"]["quality"]
    meta = {
        "license": s["base_model"]["license"], "base_model": s["base_model"].get("upstream") or s["base_model"].get("name"), "library_name": "peft",
        "pipeline_tag": "text-generation", "tags": ["lora", "govtune", "customer-support"], "datasets": [str(params.data.raw)],
        "model-index": [{"name": params.tracking.registered_model, "results": [{
            "task": {"type": "text-classification", "name": "ticket triage"}, "dataset": {"name": "scrubbed test split", "type": str(params.split.out_dir / "test.jsonl")},
            "metrics": [{"type": k, "value": v["finetuned"]["value"], "name": k.replace("_", " ")} for k, v in q.items() if v["finetuned"]["value"] is not None]}]}],
    }  # fmt: skip
    d = report["decision"]
    rows = "\n".join(
        f"| {k} | {v['base']['value']} | {v['finetuned']['value']} | {v['finetuned']['n']} |" for k, v in q.items()
    )
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {params.tracking.registered_model}

LoRA adapter on {s["base_model"].get("name")} for {s["purpose"]}

- **Gate decision:** {d["decision"]} ({d["summary"]}), model version {d["candidate_version"]}, decided {d["decided_at"]}.
- **Intended use:** {s["intended_use"]}
- **Out of scope:** {s["out_of_scope_use"]}
- **Training data:** `{params.data.raw}` after PII scrubbing (Presidio; measured recall per entity in the compliance report), customer-grouped split.

## Evaluation (test split, base vs fine-tuned)

| metric | base | fine-tuned | n |
| --- | --- | --- | --- |
{rows}

Fairness (per protected attribute, with confidence intervals), counterfactual flip rates and
privacy results (canary exposure, PII regurgitation) are in the compliance report.

## Compute

{compute_lines(report.get("compute"))}

## Limitations

Evaluated on synthetic-like support tickets in English; small groups are flagged, not judged.
Priority is a suggestion for a human to confirm.
"""


def compute_lines(compute: dict[str, Any] | None) -> str:
    """The model card's compute paragraph: totals, cost, energy and emissions (or why not measured)."""
    if not compute or not compute["stages"]:
        return "Not recorded."
    t, c, e = compute["totals"], compute["cost"], compute["emissions"]
    gpu = f"{t['gpu_s'] / 3600:.2f} GPU-hours, " if t["gpu_s"] else "no GPU, "
    if t["energy_kwh"] is None:
        energy = (
            "energy not measured (no hardware power counters on the machine that made it; see the compliance report)"
        )
    else:
        part = "" if t["energy_complete"] else f", stages not measured: {', '.join(t['energy_not_measured_stages'])}"
        energy = (
            f"{t['energy_kwh']:.4f} kWh measured ({e['kg_co2e']:.4f} kg CO2e at {e['kg_co2e_per_kwh']} kg/kWh{part})"
        )
    return (f"Stages {', '.join(compute['stages'])}: {t['wall_s'] / 60:.1f} min wall, {t['cpu_s'] / 3600:.2f} CPU-hours, {gpu}"
            f"peak memory {t['peak_rss_mb']:.0f} MiB, {t['tokens'] or 0:,} tokens; {energy}. Estimated cost {c['total_eur']:.2f} EUR "
            f"at {c['prices']['eur_per_cpu_hour']} EUR per CPU-hour and {c['prices']['eur_per_gpu_hour']} EUR per GPU-hour. "
            "Per stage: `reports/compute.json`.")  # fmt: skip


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-pdf-header-footer", "--generate-pdf-document-outline",
]  # fmt: skip


def save_pdf(html_path: Path, pdf_path: Path, browser: str) -> None:
    """Prints the HTML report to PDF with headless Chromium (same content and sections).

    Raises:
        GovtuneError: no such browser, or it produced no PDF.
    """
    import shutil
    import subprocess
    import tempfile

    from pipeline.common.io import atomic_path

    binary = shutil.which(browser)
    if binary is None:
        raise GovtuneError("params.yaml: report.browser", f"{browser!r} not found (needed to print the PDF)",
                           "run `make setup` (installs Debian's chromium), or set report.browser to a Chromium/Chrome binary")  # fmt: skip
    with tempfile.TemporaryDirectory() as profile, atomic_path(pdf_path) as tmp:
        args = [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--print-to-pdf={tmp}",
            html_path.resolve().as_uri(),
        ]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
        if proc.returncode != 0 or not tmp.is_file() or not tmp.read_bytes().startswith(b"%PDF"):
            raise GovtuneError(
                str(pdf_path),
                f"{browser} did not print the report (exit {proc.returncode})",
                "check that headless Chromium starts on this machine",
            )


def plot_loss(plots_dir: Path) -> bytes | None:
    """The train/val loss curves as PNG bytes (from the finetune stage's CSVs)."""
    import csv
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for name in ("train_loss", "val_loss"):
        path = plots_dir / f"{name}.csv"
        if path.is_file():
            rows = list(csv.DictReader(path.open()))
            ax.plot(
                [int(r["step"]) for r in rows],
                [float(r[name]) for r in rows],
                marker="." if name == "val_loss" else None,
                label=name,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def load_lineage(params: Params, decision: dict[str, Any]) -> dict[str, Any]:
    """MLflow run per stage (the latest run whose outputs match the files in place), dataset digests."""
    from pipeline.common.tracking import TAG, dvc_md5, setup_mlflow

    datasets = {name: dvc_md5(path) for name, path in (("raw", params.data.raw), ("scrubbed", params.scrub.out), ("train", params.split.out_dir / "train.jsonl"),
                                                        ("val", params.split.out_dir / "val.jsonl"), ("test", params.split.out_dir / "test.jsonl")) if Path(path).exists()}  # fmt: skip
    runs: dict[str, str] = {}
    if params.tracking.enabled:
        mlflow = setup_mlflow(params.tracking)
        probe = {"base_model": params.base_model.out_dir, "validate": params.validate_.report, "scrub": params.scrub.report,
                 "pii_benchmark": params.pii_benchmark.report, "split": params.split.report, "finetune": params.finetune.metrics, "evaluate": params.evaluate.report}  # fmt: skip
        for stage, out in probe.items():
            found = mlflow.search_runs(filter_string=f"tags.`{TAG}stage` = '{stage}' and tags.`{TAG}out.{out}` = '{dvc_md5(out)}'",
                                       order_by=["attributes.start_time DESC"], max_results=1, output_format="list")  # fmt: skip
            runs[stage] = found[0].info.run_id if found else "not found"
        runs["gate"] = decision.get("registry", {}).get("gate_run_id") or "see the model version's govtune.gate_run_id"
    reg = decision.get("registry", {})
    return {"stages": list(STAGES), "runs": runs, "datasets": datasets, "registered_model": reg.get("registered_model"), "version": reg.get("version"),
            "champion_after": reg.get("champion_after")}  # fmt: skip


def environment() -> dict[str, str]:
    import platform
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        **{
            p: version(p)
            for p in (
                "torch",
                "transformers",
                "peft",
                "mlflow",
                "dvc",
                "presidio-analyzer",
                "great-expectations",
                "fairlearn",
            )
        },
    }


def manifest_files(params: Params) -> list[Path]:
    """Every artifact the decision rests on."""
    from pipeline.common.policy import policy_bundle

    r = params.report
    return [params.data.raw, params.data.raw_pii_spans, params.scrub.out, params.pii_benchmark.corpus, params.split.out_dir, params.base_model.out_dir, params.finetune.out_dir,
            *policy_bundle(params), Path("params.yaml"), Path("requirements.lock"), params.validate_.report, params.scrub.report, params.pii_benchmark.report,
            params.split.report, params.finetune.metrics, params.evaluate.report, params.gate.decision, r.json, r.html, r.pdf, r.model_card]  # fmt: skip


def load_inputs(params: Params) -> dict[str, dict[str, Any]]:
    """Every stage's evidence the report is built from, each checked against its schema."""
    from pipeline.common.policy import load_allowlist

    inputs = {name: load_json(path, source) for name, source, path in (
        ("decision", "gate_decision", params.gate.decision), ("evaluation", "evaluation", params.evaluate.report), ("pii", "pii_report", params.scrub.report),
        ("pii_benchmark", "pii_benchmark", params.pii_benchmark.report), ("validation", "data_validation", params.validate_.report),
        ("split", "split_report", params.split.report), ("train", "train_metrics", params.finetune.metrics),
        ("base", "base_model", params.base_model.out_dir / "provenance.json"), ("adapter", "adapter", params.finetune.out_dir / "provenance.json"))}  # fmt: skip
    approved = {m.id: m for m in load_allowlist(params.base_model.allowlist).models}
    entry = approved.get(inputs["base"].get("model_id"))
    inputs["base"]["upstream"] = entry.upstream if entry else None
    return inputs


def report_images(params: Params, report: dict[str, Any]) -> dict[str, bytes]:
    """The plots the HTML embeds: evaluation's, the data-efficiency curve and the training loss."""
    from pipeline.common import curve

    images = {p.stem: p.read_bytes() for p in sorted(params.evaluate.plots_dir.glob("*.png"))}
    if report["data_efficiency"] and curve.OUT_PNG.is_file():
        images["data_efficiency"] = curve.OUT_PNG.read_bytes()
    loss = plot_loss(params.finetune.plots_dir)
    if loss:
        images["loss"] = loss
    return images


def write_manifest(params: Params, key: Any, decision: dict[str, Any]) -> dict[str, Any]:
    """Signs the evidence manifest, chained to the previous one, and records it in the audit log."""
    from pipeline.common.audit import append_entry, now_utc, read_log
    from pipeline.common.evidence import build_manifest, list_files

    previous = [e for e in read_log(params.gate.audit_log) if e.get("event") == "evidence_manifest"]
    manifest = build_manifest(
        list_files(manifest_files(params)), previous[-1]["manifest_hash"] if previous else None, key, now_utc()
    )
    save_json(params.report.manifest, manifest)
    append_entry(params.gate.audit_log, "evidence_manifest", {"manifest_hash": manifest["manifest_hash"], "signed": manifest["signature"]["signed"],
                                                             "decision": decision["decision"], "version": decision.get("candidate_version")})  # fmt: skip
    return manifest


def link_to_registry(params: Params, report_run_id: str | None, decision: dict[str, Any], manifest_hash: str) -> None:
    """Puts the compliance report on the version's training run and tags the version with where
    it is: the auditor's path (version -> training run) ends at its datasets and its report."""
    from pipeline.common.registry import open_registry
    from pipeline.common.tracking import TAG

    rc = params.report
    registry = open_registry(params.tracking)
    version = decision.get("registry", {}).get("version")
    if registry is None or not version or not report_run_id:
        return
    training_run = registry.get_version(version).run_id
    if training_run:
        for path in (rc.html, rc.pdf, rc.json, rc.model_card):
            if path.is_file():
                registry.client.log_artifact(training_run, str(path), "compliance")
    where = f"runs:/{training_run}/compliance" if training_run else f"runs:/{report_run_id}/reports"
    registry.set_tags(version, {f"{TAG}report_run_id": report_run_id, f"{TAG}compliance_report": f"{where}/{rc.html.name}",
                                f"{TAG}model_card": f"{where}/{rc.model_card.name}", f"{TAG}manifest_hash": manifest_hash})  # fmt: skip


def main() -> None:
    """Builds and writes the report, model card and signed manifest; enforces fail_on_reject."""
    from pipeline.common import curve
    from pipeline.common.evidence import load_signing_key
    from pipeline.common.policy import load_promotion_policy
    from pipeline.common.tracking import TAG, stage_run

    params = load_params()
    rc = params.report
    # A report stage that fails leaves no report of an earlier run (the rejection below is no failure).
    with evidence_of_this_run(rc.json, rc.html, rc.pdf, rc.model_card, rc.manifest, params.compute.report):
        key = load_signing_key()  # before anything is written: a bad key stops the stage
        inputs = load_inputs(params)
        decision = inputs["decision"]
        with stage_run(
            params.tracking,
            "report",
            [params.gate.decision],
            [rc.json, rc.html, rc.model_card, rc.manifest, params.compute.report],
            params.compute,
        ) as tracked:
            report = build_report(params, inputs, load_lineage(params, decision), environment())
            compute = compute_section(params)
            save_output("compute", params.compute.report, compute)
            report.update(
                compute=compute,
                data_efficiency=curve.section(params),
                signed=key is not None,
                manifest_path=str(rc.manifest),
            )
            save_json(rc.json, report)
            save_text(rc.html, render_html(report, report_images(params, report)))
            save_pdf(rc.html, rc.pdf, rc.browser)
            save_text(rc.model_card, render_model_card(report, params))
            manifest = write_manifest(params, key, decision)
            for path in (rc.json, rc.html, rc.pdf, rc.model_card, rc.manifest, params.compute.report):
                tracked.log_artifact(path, "reports")
            t = compute["totals"]
            tracked.log_metrics({f"compute_total/{k}": t[k] for k in ("wall_s", "cpu_s", "gpu_s", "peak_rss_mb", "tokens", "energy_kwh") if t[k] is not None}
                                | {"compute_total/cost_eur": compute["cost"]["total_eur"]})  # fmt: skip
            tracked.set_tags({f"{TAG}decision": decision["decision"], f"{TAG}manifest_hash": manifest["manifest_hash"]})
            link_to_registry(params, tracked.run_id, decision, manifest["manifest_hash"])
    log.info(
        "report: %s (%s, manifest %s, %s)",
        rc.html,
        decision["decision"],
        manifest["manifest_hash"][:12],
        "signed" if key else "UNSIGNED",
    )
    if decision["decision"] == "REJECTED" and load_promotion_policy(params.gate.promotion_policy).fail_on_reject:
        print(f"govtune: REJECTED - {decision['summary']}; see {params.gate.decision} and {rc.html}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
