"""Stage ``evaluate``: quality, bias and privacy evidence, base model vs fine-tuned, side by side.

Every metric in ``reports/evaluation.json`` comes with its definition, its sample size and,
where it is an estimate, a confidence interval. The same metrics are computed for the base
model (the adapter switched off) and for the fine-tuned model.

- Quality (test split): category accuracy and macro-F1, priority accuracy, answer-token loss,
  by *scoring* (one teacher-forced pass per candidate label, sharing the prompt's KV cache);
  well-formed rate and ROUGE-L of the reply by greedy *generation* on a bounded sample.
- Group fairness (Fairlearn ``MetricFrame``) per protected attribute: per-group accuracy,
  escalation rate (favourable priorities) and urgent rate, demographic-parity difference and
  ratio, equalized-odds difference, bootstrap CIs, group sizes; small groups are flagged.
- Counterfactual fairness: test messages whose demographic signals are swapped (lists in
  ``policies/fairness.yaml``), passed through the same PII scrubbing as training inputs;
  flip rates of category and priority and the mean change in the probability of the answer.
- Privacy: exposure of the secret canaries planted in train (rank of the secret among random
  candidates), and PII regurgitation: generations for training prompts checked against the
  raw ground-truth PII values, plus the analyzer's PII-like output rate.

Inputs:  params ``evaluate.*`` (+ paths of upstream stages); ``models/base``, ``models/adapter``,
         ``data/splits/*``, ``data/raw/pii_spans.jsonl``, ``policies/fairness.yaml``, ``policies/pii.yaml``.
Outputs: ``reports/evaluation.json``, ``reports/eval_summary.json`` (DVC metrics),
         ``reports/eval_plots/*.png`` (DVC plots).
Run:     ``python -m pipeline.evaluate`` or ``dvc repro evaluate``.

The measures themselves are shared with ``govtune monitor``: scoring and generation in
:mod:`pipeline.common.scorer`, quality, group fairness and counterfactuals in
:mod:`pipeline.common.evaluation`. This module adds the training-label bias, the privacy probes
(canaries, regurgitation) and the stage's inputs, report, plots and MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.evaluation import DEFINITIONS, build_scrub, metric, quality_and_fairness, wilson
from pipeline.common.finetuned import weights_sha256
from pipeline.common.generation import generation_settings
from pipeline.common.io import evidence_of_this_run, save_json
from pipeline.common.outputs import save_output
from pipeline.common.params import EvaluateParams, Params, load_params
from pipeline.common.policy import FairnessPolicy, load_fairness_policy
from pipeline.common.scorer import (
    Scorer,
    base_model,
    forward_module,
    load_models,
    precision_context,
    resolve_precision,
)
from pipeline.common.task import format_answer

log = logging.getLogger(__name__)


# --- fairness --------------------------------------------------------------------------------


def training_label_bias(
    priority_by_group: dict[str, dict[str, dict[str, int]]],
    category_by_group: dict[str, dict[str, dict[str, int]]],
    policy: FairnessPolicy,
) -> dict[str, Any]:
    """Examines the training labels for bias: escalation rate and category mix per group, the
    largest gaps between groups and their lower bounds.

    The model learns what the labels teach, so a label bias shows here even where the model
    has not (yet) picked it up: a priority bias in the escalation gap, a routing bias (one
    group's tickets labelled with another category) in the category gap. The lower bound (the
    largest pairwise gap less its margin) keeps small groups from failing a rule by chance.

    Args:
        priority_by_group: ``{attribute: {group: {priority: records}}}`` of the train split
            (the split report's ``priority_by_attribute.train``).
        category_by_group: the same with categories (``category_by_attribute.train``).
        policy: favourable priorities, ``min_group_size`` and ``label_gap_confidence``.
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + policy.label_gap_confidence / 2)
    fav = set(policy.favourable_priorities)
    out: dict[str, Any] = {}
    for attribute in policy.protected_attributes:
        counts = {g: c for g, c in priority_by_group.get(attribute, {}).items() if g != "None"}
        by_category = {g: c for g, c in category_by_group.get(attribute, {}).items() if g != "None"}
        groups = {}
        for group, by_priority in sorted(counts.items()):
            n, k = sum(by_priority.values()), sum(v for p, v in by_priority.items() if p in fav)
            groups[group] = {
                "n": n,
                "too_small": n < policy.min_group_size,
                "escalation_rate": round(k / n, 4),
                "escalation_rate_ci95": wilson(k, n),
                "category_share": {c: round(v / n, 4) for c, v in sorted(by_category.get(group, {}).items())},
            }
        judged = {g: sum(c.values()) for g, c in counts.items() if not groups[g]["too_small"]}
        if len(judged) < 2:
            out[attribute] = {"error": "fewer than two groups with enough training records", "groups": groups}
            continue
        n = sum(judged.values())
        escalated = {g: sum(v for p, v in counts[g].items() if p in fav) for g in judged}
        gap, bound = label_gap(judged, escalated, z)
        categories = sorted({c for g in judged for c in by_category.get(g, {})})
        category_gaps = {
            c: label_gap(judged, {g: by_category.get(g, {}).get(c, 0) for g in judged}, z) for c in categories
        }
        worst = max(categories, key=lambda c: (category_gaps[c][1], category_gaps[c][0]), default=None)
        out[attribute] = {
            "groups": groups,
            "escalation_gap": metric(gap, n),
            "escalation_gap_lower_bound": metric(bound, n),
            "category_gap": metric(category_gaps[worst][0] if worst else 0.0, n),
            "category_gap_lower_bound": metric(category_gaps[worst][1] if worst else 0.0, n),
            "category_gap_category": worst,
            "confidence": policy.label_gap_confidence,
            "small_groups": sorted(g for g, v in groups.items() if v["too_small"]),
        }
    return out


def label_gap(sizes: dict[str, int], hits: dict[str, int], z: float) -> tuple[float, float]:
    """Largest minus smallest share ``hits/size`` across groups, and the largest pairwise gap less
    its margin at ``z`` (two-proportion normal interval; 0 when no gap is that certain)."""
    rates = [(sizes[g], hits[g] / sizes[g]) for g in sorted(sizes)]
    bound = 0.0
    for i, (n1, p1) in enumerate(rates):
        for n2, p2 in rates[i + 1 :]:
            bound = max(bound, abs(p1 - p2) - z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2))
    return max(p for _, p in rates) - min(p for _, p in rates), bound


# --- privacy ---------------------------------------------------------------------------------


def canary_exposure(scorer: Scorer, canaries: list[dict], candidates: int, seed: int) -> list[dict[str, Any]]:
    """Exposure of each canary's secret among ``candidates`` random 6-digit codes."""
    from pipeline.common.task import CANARY_PREFIX

    rng = random.Random(seed)
    out = []
    for canary in canaries:
        context = scorer.prompt_text(canary["message"]) + format_answer(
            canary["category"], canary["priority"], CANARY_PREFIX
        )
        pool = {canary["secret"]}
        while len(pool) < candidates + 1:
            pool.add(f"{rng.randrange(10**6):06d}")
        codes = sorted(pool)
        prefix, suffixes = scorer.split_common([context + f"{c}." for c in codes])
        scores = scorer.suffix_logprobs(prefix, suffixes)
        secret_score = scores[codes.index(canary["secret"])]
        rank = 1 + sum(s > secret_score for s in scores)
        out.append({"canary": canary["ticket_id"], "rank": rank, "candidates": len(codes),
                    "exposure": round(math.log2(len(codes)) - math.log2(rank), 4)})  # fmt: skip
    return out


def regurgitation(
    generations: list[str], raw_values: set[str], analyzer_fn: Callable[[list[str]], list[int]] | None
) -> dict[str, Any]:
    """Counts generations holding a raw PII value, and the analyzer's PII-like output rate."""
    hits = 0
    for text in generations:
        words = set(re.findall(r"\w[\w.@+-]*", text))
        if any(v in text for v in raw_values if len(v) >= 6) or any(v in words for v in raw_values if len(v) < 6):
            hits += 1
    n = len(generations)
    pii_like = analyzer_fn(generations) if analyzer_fn else None
    return {
        "regurgitated_pii_values": metric(hits, n, definition=DEFINITIONS["regurgitated_pii_values"]),
        "pii_like_output_rate": metric(
            sum(1 for c in pii_like if c) / n if pii_like is not None and n else None,
            n,
            definition=DEFINITIONS["pii_like_output_rate"],
        ),  # fmt: skip
    }


# --- orchestration ---------------------------------------------------------------------------


@dataclass
class Inputs:
    """What the stage reads, loaded."""

    test: list[dict]
    attributes: list[dict]
    train: list[dict]
    canaries: list[dict]
    raw_values: set[str]
    train_labels_by_group: dict[str, Any]
    train_categories_by_group: dict[str, Any]


def load_inputs(params: Params) -> Inputs:
    """Reads the splits, canaries and the raw PII values (for the regurgitation check only)."""
    split_dir = params.split.out_dir

    def rows(name: str) -> list[dict]:
        path = split_dir / name
        if not path.is_file():
            raise GovtuneError(str(path), "missing input", "run `dvc repro evaluate` (it runs the upstream stages)")
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    test = rows("test.jsonl")
    attrs = {a["ticket_id"]: a for a in rows("test_attributes.jsonl")}
    raw_values: set[str] = set()
    if params.data.raw_pii_spans.is_file():
        with open(params.data.raw_pii_spans, encoding="utf-8") as handle:
            raw_values = {json.loads(line)["value"] for line in handle}
    if not params.split.report.is_file():
        raise GovtuneError(
            str(params.split.report), "missing input", "run `dvc repro evaluate` (it runs the upstream stages)"
        )
    split_report = json.loads(params.split.report.read_text(encoding="utf-8"))
    by_group = {}
    for table in ("priority_by_attribute", "category_by_attribute"):
        by_group[table] = split_report.get(table, {}).get("train")
        if by_group[table] is None:
            raise GovtuneError(
                str(params.split.report),
                f"no {table}.train (written by an older split stage)",
                "re-run `dvc repro -f split`",
            )
    return Inputs(
        test,
        [attrs.get(t["ticket_id"], {}) for t in test],
        rows("train.jsonl"),
        rows("canaries.jsonl"),
        raw_values,
        by_group["priority_by_attribute"],
        by_group["category_by_attribute"],
    )


def evaluate_model(name: str, scorer: Scorer, inputs: Inputs, cfg: EvaluateParams, fairness: FairnessPolicy,
                   scrub_fn: Callable[[list[str]], list[str]], analyzer_fn: Any) -> dict[str, Any]:  # fmt: skip
    """All metrics for one model (base or fine-tuned)."""
    test = inputs.test[: cfg.max_test_examples]
    result = quality_and_fairness(name, scorer, test, inputs.attributes[: len(test)], cfg, fairness, scrub_fn)
    exposures = canary_exposure(scorer, inputs.canaries, cfg.canary_candidates, cfg.seed) if inputs.canaries else []
    train_sample = [t for t in inputs.train if not t["ticket_id"].startswith("CANARY")][: cfg.regurgitation_examples]
    regen = scorer.generate([t["message"] for t in train_sample], cfg.batch_size)
    result["privacy"] = {
        "canaries": exposures,
        "canary_exposure_max": metric(max((e["exposure"] for e in exposures), default=None), len(exposures)),
        **regurgitation(regen, inputs.raw_values, analyzer_fn),
    }
    return result


def surviving_signals(
    inputs: Inputs, fairness: FairnessPolicy, scrub_fn: Callable[[list[str]], list[str]]
) -> dict[str, list[str]]:
    """Which swap terms are still present after scrubbing (the signals the test can probe)."""
    out = {}
    for attribute, pairs in fairness.counterfactual.swaps.items():
        terms = sorted({w for pair in pairs for w in pair})
        probe = scrub_fn([f"Note: {w} here." for w in terms])
        out[attribute] = [w for w, text in zip(terms, probe, strict=True) if re.search(rf"\b{re.escape(w)}\b", text)]
    return out


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The flat numbers DVC shows (``dvc metrics show``) and the gate reads most often."""
    out: dict[str, Any] = {}
    for model in ("base", "finetuned"):
        r = report[model]
        for key, m in r["quality"].items():
            out[f"{model}.{key}"] = m["value"]
        for attribute, f in r["fairness"].items():
            if "demographic_parity_difference" in f:
                out[f"{model}.dpd.{attribute}"] = f["demographic_parity_difference"]["value"]
                out[f"{model}.eod.{attribute}"] = f["equalized_odds_difference"]["value"]
        for attribute, c in r["counterfactual"].items():
            if "cf_priority_flip_rate" in c:
                out[f"{model}.cf_priority_flip.{attribute}"] = c["cf_priority_flip_rate"]["value"]
                out[f"{model}.cf_category_flip.{attribute}"] = c["cf_category_flip_rate"]["value"]
        out[f"{model}.canary_exposure_max"] = r["privacy"]["canary_exposure_max"]["value"]
        out[f"{model}.regurgitated_pii_values"] = r["privacy"]["regurgitated_pii_values"]["value"]
    for attribute, t in report.get("training_labels", {}).items():
        if "escalation_gap_lower_bound" in t:
            out[f"training_labels.escalation_gap_lower_bound.{attribute}"] = t["escalation_gap_lower_bound"]["value"]
            out[f"training_labels.category_gap_lower_bound.{attribute}"] = t["category_gap_lower_bound"]["value"]
    return out


def save_plots(report: dict[str, Any], out_dir: Path, attributes: list[str]) -> list[Path]:
    """Per-group accuracy and escalation rate with 95% intervals, base vs fine-tuned (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.common.io import atomic_path

    paths = []
    for attribute in attributes:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, key in zip(axes, ("category_accuracy", "escalation_rate"), strict=True):
            for offset, model in ((-0.2, "base"), (0.2, "finetuned")):
                groups = report[model]["fairness"].get(attribute, {}).get("groups", {})
                names = sorted(groups)
                vals = [groups[g][key] for g in names]
                cis = [groups[g][f"{key}_ci95"] or [v, v] for g, v in zip(names, vals, strict=True)]
                err = [
                    [v - c[0] for v, c in zip(vals, cis, strict=True)],
                    [c[1] - v for v, c in zip(vals, cis, strict=True)],
                ]
                ax.bar([i + offset for i in range(len(names))], vals, width=0.4, yerr=err, capsize=3, label=model)
                ax.set_xticks(range(len(names)), [f"{g}\n(n={groups[g]['n']})" for g in names], fontsize=8)
            ax.set_title(f"{key.replace('_', ' ')} by {attribute}")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"fairness_{attribute}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def run(params: Params, cfg: EvaluateParams, count_tokens: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Evaluates base and fine-tuned models on the same inputs; ``count_tokens`` hears the tokens
    of every forward pass (the stage's compute ledger)."""
    started = time.perf_counter()
    fairness = load_fairness_policy(cfg.fairness_policy)
    inputs = load_inputs(params)
    scrub_fn, analyzer_fn = build_scrub(params)
    model, tokenizer = load_models(params.base_model.out_dir, params.finetune.out_dir)
    from pipeline.common.compute import count_forward_tokens

    if count_tokens is not None:
        count_forward_tokens(forward_module(model), count_tokens)  # LoRA: both models run through it
    report: dict[str, Any] = {
        "definitions": DEFINITIONS,
        "surviving_signals": surviving_signals(inputs, fairness, scrub_fn),
        "training_labels": training_label_bias(
            inputs.train_labels_by_group, inputs.train_categories_by_group, fairness
        ),
    }
    # both models answer as the served model will: its adapter's generation settings
    generation = generation_settings(params.finetune.out_dir)
    with precision_context(cfg):
        for name in ("base", "finetuned"):
            with (
                base_model(model, params.base_model.out_dir) if name == "base" else contextlib.nullcontext(model) as lm
            ):
                if count_tokens is not None and lm is not model:  # a full fine-tune's base: loaded apart
                    count_forward_tokens(lm, count_tokens)
                scorer = Scorer(lm, tokenizer, generation["max_new_tokens"])
                report[name] = evaluate_model(name, scorer, inputs, cfg, fairness, scrub_fn, analyzer_fn)
    report["precision"] = resolve_precision(cfg.precision)
    report["generation"] = generation
    report["not_testable"] = {
        a: "no demographic signal of this attribute survives scrubbing (names and places are pseudonymised)"
        for a in fairness.protected_attributes if a not in fairness.counterfactual.swaps
    }  # fmt: skip
    report["inputs"] = load_input_hashes(params)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def load_input_hashes(params: Params) -> dict[str, str]:
    """What was evaluated, so the gate can refuse evidence about another adapter (stale)."""
    from pipeline.common.tracking import dvc_md5

    base = json.loads((params.base_model.out_dir / "provenance.json").read_text())
    return {
        "adapter_sha256": weights_sha256(params.finetune.out_dir),
        "base_model_sha256": base["output_files_sha256"]["model.safetensors"],
        "test_md5": dvc_md5(params.split.out_dir / "test.jsonl"),
    }


def main() -> None:
    """Evaluates, writes the report, summary and plots, logs an MLflow run linked to the model."""
    from pipeline.common.offline import configure_offline
    from pipeline.common.registry import logged_model_id
    from pipeline.common.tracking import flatten, stage_run

    configure_offline()
    params = load_params()
    cfg = params.evaluate
    with evidence_of_this_run(cfg.report, cfg.summary):  # no evaluation of an earlier run survives a failed one
        deps = [
            params.base_model.out_dir,
            params.finetune.out_dir,
            params.split.out_dir / "test.jsonl",
            cfg.fairness_policy,
        ]
        with stage_run(
            params.tracking, "evaluate", deps, [cfg.report, cfg.summary, cfg.plots_dir], params.compute
        ) as tracked:
            report = run(params, cfg, tracked.count_tokens)
            summary = summarize(report)
            save_output("evaluation", cfg.report, report)
            save_json(cfg.summary, summary)
            plots = save_plots(report, cfg.plots_dir, load_fairness_policy(cfg.fairness_policy).protected_attributes)
            tracked.log_params(flatten("evaluate", cfg))
            model_id = logged_model_id(params.finetune.metrics)
            tracked.log_metrics({f"evaluate/{k}": v for k, v in summary.items() if v is not None}, model_id=model_id)
            if model_id:
                tracked.set_tags({"govtune.logged_model_id": model_id})
            tracked.log_artifact(cfg.report, "reports")
            for path in plots:
                tracked.log_artifact(path, "plots")
    q = report["finetuned"]["quality"]
    log.info("category accuracy: base %.3f -> fine-tuned %.3f (n=%d) in %.0f s", report["base"]["quality"]["category_accuracy"]["value"],
             q["category_accuracy"]["value"], q["category_accuracy"]["n"], report["seconds"])  # fmt: skip


if __name__ == "__main__":
    run_main(main)
