"""The evaluate stage's measures of one model on labelled, scrubbed records: quality, group
fairness and counterfactual flips, each with its definition, sample size and interval.

The evaluate stage runs them on the test split; ``govtune monitor`` runs them for the champion on
a labelled new batch, so both use one definition of every metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.common.counterfactual import make_variant
from pipeline.common.params import EvaluateParams, Params
from pipeline.common.policy import FairnessPolicy, load_pii_policy
from pipeline.common.scorer import Scorer
from pipeline.common.task import CATEGORIES, parse_answer

DEFINITIONS = {
    "category_accuracy": "share of test tickets whose highest-probability category (scored) is the true one",
    "category_macro_f1": "unweighted mean over categories of the F1 score of the scored category",
    "priority_accuracy": "share of test tickets whose highest-probability priority (scored, given the predicted category) is the true one",
    "answer_loss": "mean cross-entropy per answer token on the test tickets (teacher-forced); lower is better",
    "well_formed_rate": "share of generated answers (greedy) that parse as category/priority/reply lines",
    "reply_rouge_l": "mean ROUGE-L F1 (longest common subsequence of words) of the generated reply vs the reference reply",
    "escalation_rate": "share of test tickets whose predicted priority is a favourable one (policy: favourable_priorities)",
    "demographic_parity_difference": "largest minus smallest escalation rate across the groups of an attribute (Fairlearn)",
    "demographic_parity_ratio": "smallest divided by largest escalation rate across groups (Fairlearn); 1 = parity",
    "equalized_odds_difference": "largest gap across groups in true- or false-positive rate of escalation (Fairlearn)",
    "category_parity_difference": "largest, over categories, of the gap between groups in the share of tickets predicted as that category (demographic parity of routing; the category is named beside it)",
    "cf_category_flip_rate": "share of counterfactual variants whose predicted category differs from the original's",
    "cf_priority_flip_rate": "share of counterfactual variants whose predicted priority differs from the original's",
    "cf_mean_abs_prob_change": "mean absolute change in the probability the model gives its original priority answer",
    "escalation_gap": "largest minus smallest share of training tickets labelled with a favourable priority, across the groups of an attribute (groups of min_group_size or more)",
    "escalation_gap_lower_bound": "largest, over pairs of those groups, of their gap in labelled escalation rate less its margin at label_gap_confidence (two-proportion normal interval); 0 when no gap is that certain",
    "category_gap": "for the category named in category_gap_category: largest minus smallest share of training tickets labelled with it, across the groups of an attribute (groups of min_group_size or more); a routing bias shows here",
    "category_gap_lower_bound": "largest, over categories and pairs of groups, of their gap in the share of training tickets labelled with the category less its margin at label_gap_confidence; 0 when no gap is that certain; category_gap_category names the category with the largest bound (ties: the largest gap)",
    "canary_exposure": "log2(R+1) - log2(rank of the secret among R random codes + itself); max log2(R+1) = fully memorised",
    "regurgitated_pii_values": "generated replies for training prompts that contain a raw ground-truth PII value of any training ticket",
    "pii_like_output_rate": "share of those generations in which the PII analyzer finds an entity outside replacement tags",
}


def wilson(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """Wilson score interval of a proportion."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def bootstrap_ci(
    metric_fn: Callable[[Any, Any], float], y_true: Any, y_pred: Any, groups: Any, boot: Any, of: str = "overall"
) -> list[float] | None:
    """Percentile bootstrap interval from Fairlearn's ``MetricFrame`` (``n_boot``, ``ci_quantiles``).

    Records are resampled with replacement ``boot.samples`` times (seeded by ``boot.seed``);
    ``of`` picks the statistic: ``overall`` (the metric on all records; ``groups`` may be one
    constant) or ``difference`` (the largest gap between groups, e.g. the demographic parity
    difference when ``metric_fn`` is the selection rate).
    """
    from fairlearn.metrics import MetricFrame

    if len(y_true) == 0:
        return None
    tail = (1 - boot.confidence) / 2
    frame = MetricFrame(
        metrics=metric_fn, y_true=y_true, y_pred=y_pred, sensitive_features=groups,
        n_boot=boot.samples, ci_quantiles=[tail, 1 - tail], random_state=boot.seed,
    )  # fmt: skip
    lo, hi = frame.overall_ci if of == "overall" else frame.difference_ci()
    if any(math.isnan(float(v)) for v in (lo, hi)):
        return None
    return [round(float(lo), 4), round(float(hi), 4)]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased word tokens."""
    a, b = re.findall(r"\w+", candidate.lower()), re.findall(r"\w+", reference.lower())
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def metric(value: float | None, n: int, ci: list[float] | None = None, definition: str | None = None) -> dict[str, Any]:
    """One reported metric: value, sample size, interval, definition."""
    out: dict[str, Any] = {"value": None if value is None else round(float(value), 4), "n": n}
    if ci is not None:
        out["ci95"] = ci
    if definition:
        out["definition"] = definition
    return out


def quality_metrics(
    preds: list[dict],
    truths: list[dict],
    generations: list[str],
    gen_truths: list[dict],
    answer_loss: tuple[float, int],
    boot: Any,
) -> dict[str, Any]:
    """Scored and generated quality metrics of one model."""
    from sklearn.metrics import f1_score

    n = len(truths)
    cat_ok = [p["category"] == t["category"] for p, t in zip(preds, truths, strict=True)]
    pri_ok = [p["priority"] == t["priority"] for p, t in zip(preds, truths, strict=True)]
    y_true = [t["category"] for t in truths]
    y_pred = [p["category"] for p in preds]

    def macro_f1(yt: Any, yp: Any) -> float:
        return float(f1_score(yt, yp, average="macro", labels=list(CATEGORIES), zero_division=0))

    everyone = ["all"] * n  # the overall metric's interval needs one (constant) group
    parsed = [parse_answer(g) for g in generations]
    rouge = [rouge_l(p["reply"], t["reply"]) if p else 0.0 for p, t in zip(parsed, gen_truths, strict=True)]
    m = len(generations)
    return {
        "category_accuracy": metric(sum(cat_ok) / n, n, wilson(sum(cat_ok), n)),
        "category_macro_f1": metric(
            macro_f1(y_true, y_pred), n, bootstrap_ci(macro_f1, y_true, y_pred, everyone, boot)
        ),
        "priority_accuracy": metric(sum(pri_ok) / n, n, wilson(sum(pri_ok), n)),
        "answer_loss": metric(answer_loss[0], answer_loss[1]),
        "well_formed_rate": metric(
            sum(p is not None for p in parsed) / m if m else None, m, wilson(sum(p is not None for p in parsed), m)
        ),
        "reply_rouge_l": metric(sum(rouge) / m if m else None, m),
    }


def group_fairness(preds: list[dict], truths: list[dict], attrs: list[dict], policy: FairnessPolicy) -> dict[str, Any]:
    """Fairlearn MetricFrame per protected attribute, parity metrics with bootstrap CIs."""
    import numpy as np
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        selection_rate,
    )  # fmt: skip

    fav = set(policy.favourable_priorities)
    y_true_cat = np.array([t["category"] for t in truths])
    y_pred_cat = np.array([p["category"] for p in preds])
    y_true_esc = np.array([t["priority"] in fav for t in truths], dtype=int)
    y_pred_esc = np.array([p["priority"] in fav for p in preds], dtype=int)
    y_pred_urgent = np.array([p["priority"] == "urgent" for p in preds], dtype=int)
    pri_ok = np.array([p["priority"] == t["priority"] for p, t in zip(preds, truths, strict=True)], dtype=int)
    boot = policy.bootstrap
    out: dict[str, Any] = {}
    for attribute in policy.protected_attributes:
        groups = np.array([str(a.get(attribute)) for a in attrs])
        present = groups != "None"
        sizes = {g: int(np.sum(groups == g)) for g in set(groups[present])}
        # Parity is judged over groups large enough to estimate a rate; smaller ones are still
        # reported per group and listed in small_groups.
        keep = present & np.array([sizes.get(g, 0) >= policy.min_group_size for g in groups])
        if len({g for g in groups[keep]}) < 2:
            out[attribute] = {"error": "fewer than two groups with enough test records", "group_sizes": sizes}
            continue
        frame = MetricFrame(
            metrics={
                "category_accuracy": lambda yt, yp: float(np.mean(yt == yp)),
                "n": lambda yt, yp: len(yt),
            },
            y_true=y_true_cat[keep], y_pred=y_pred_cat[keep], sensitive_features=groups[keep],
        )  # fmt: skip
        by_group = {}
        for group in sorted(set(groups[present])):
            sel = groups == group
            n = int(sel.sum())
            by_group[group] = {
                "n": n,
                "too_small": n < policy.min_group_size,
                "category_accuracy": round(float(np.mean(y_true_cat[sel] == y_pred_cat[sel])), 4),
                "category_accuracy_ci95": wilson(int(np.sum(y_true_cat[sel] == y_pred_cat[sel])), n),
                "priority_accuracy": round(float(pri_ok[sel].mean()), 4),
                "escalation_rate": round(float(y_pred_esc[sel].mean()), 4),
                "escalation_rate_ci95": wilson(int(y_pred_esc[sel].sum()), n),
                "urgent_rate": round(float(y_pred_urgent[sel].mean()), 4),
                "predicted_category_share": {c: round(float(np.mean(y_pred_cat[sel] == c)), 4) for c in CATEGORIES},
            }
        sf = groups[keep]
        yt, yp = y_true_esc[keep], y_pred_esc[keep]
        routed, routing_gap = category_parity(y_pred_cat[keep], sf)
        routed_sel = (y_pred_cat[keep] == routed).astype(int)

        out[attribute] = {
            "groups": by_group,
            "demographic_parity_difference": metric(
                demographic_parity_difference(yt, yp, sensitive_features=sf),
                int(keep.sum()),
                bootstrap_ci(selection_rate, yt, yp, sf, boot, of="difference"),
            ),  # fmt: skip
            "demographic_parity_ratio": metric(
                demographic_parity_ratio(yt, yp, sensitive_features=sf), int(keep.sum())
            ),
            "equalized_odds_difference": metric(
                equalized_odds_difference(yt, yp, sensitive_features=sf), int(keep.sum())
            ),
            "category_accuracy_difference": metric(float(frame.difference()["category_accuracy"]), int(keep.sum())),
            "category_parity_difference": metric(
                routing_gap,
                int(keep.sum()),
                bootstrap_ci(selection_rate, routed_sel, routed_sel, sf, boot, of="difference"),
            ),  # fmt: skip
            "category_parity_category": routed,
            "small_groups": sorted(g for g, v in by_group.items() if v["too_small"]),
            "parity_over_groups": sorted(set(groups[keep])),
        }
    return out


def category_parity(predicted: Any, groups: Any) -> tuple[str, float]:
    """The category whose predicted share differs most between groups, and that gap (Fairlearn's
    demographic parity difference of "predicted as that category").

    A routing bias shows here: one group's tickets sent to a category more (or less) often than
    others'. Ties go to the first category in ``CATEGORIES`` order.
    """
    from fairlearn.metrics import demographic_parity_difference

    gaps = {}
    for category in CATEGORIES:
        chosen = (predicted == category).astype(int)
        gaps[category] = round(float(demographic_parity_difference(chosen, chosen, sensitive_features=groups)), 4)
    worst = max(CATEGORIES, key=lambda c: gaps[c])
    return worst, gaps[worst]


def quality_and_fairness(name: str, scorer: Scorer, test: list[dict], attrs: list[dict], cfg: EvaluateParams,
                         fairness: FairnessPolicy, scrub_fn: Callable[[list[str]], list[str]]) -> dict[str, Any]:  # fmt: skip
    """Quality, group fairness and counterfactuals of one model on labelled, scrubbed records.

    The test split here; ``govtune monitor`` calls it for the champion on a labelled new batch,
    so both use one definition of every metric.
    """
    from tqdm import tqdm

    from pipeline.common.training import encode_records, evaluate_loss

    preds: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(test), cfg.batch_size), desc=f"score {name}", unit="batch"):
        preds.extend(
            scorer.classify_batch([t["message"] for t in test[start : start + cfg.batch_size]], cfg.batch_size)
        )
    examples, _ = encode_records(scorer.tokenizer, test[: cfg.loss_examples], cfg.max_seq_len)
    loss = evaluate_loss(scorer.model, examples, scorer.tokenizer.pad_token_id or 0, cfg.batch_size, "cpu")
    gen_sample = test[: cfg.generate_examples]
    generations = scorer.generate([t["message"] for t in gen_sample], cfg.batch_size)
    result: dict[str, Any] = {
        "quality": quality_metrics(preds, test, generations, gen_sample, (loss, len(examples)), fairness.bootstrap),
        "fairness": group_fairness(preds, test, attrs, fairness),
    }
    # Counterfactuals: only messages that carry a signal of the attribute.
    cf: dict[str, Any] = {}
    for attribute in fairness.counterfactual.swaps:
        pairs = [(i, make_variant(t["message"], attribute, fairness)) for i, t in enumerate(test)]
        pairs = [(i, v) for i, v in pairs if v != test[i]["message"]][: fairness.counterfactual.max_examples]
        if not pairs:
            cf[attribute] = {"n": 0, "note": "no test message carries a signal of this attribute"}
            continue
        variants = scrub_fn([v for _, v in pairs])
        vpreds = scorer.classify_batch(variants, cfg.batch_size)
        cat_flips = sum(vp["category"] != preds[i]["category"] for (i, _), vp in zip(pairs, vpreds, strict=True))
        pri_flips = sum(vp["priority"] != preds[i]["priority"] for (i, _), vp in zip(pairs, vpreds, strict=True))
        deltas = [abs(vp["priority_probs"][preds[i]["priority"]] - preds[i]["priority_probs"][preds[i]["priority"]])
                  for (i, _), vp in zip(pairs, vpreds, strict=True)]  # fmt: skip
        n = len(pairs)
        cf[attribute] = {
            "cf_category_flip_rate": metric(cat_flips / n, n, wilson(cat_flips, n)),
            "cf_priority_flip_rate": metric(pri_flips / n, n, wilson(pri_flips, n)),
            "cf_mean_abs_prob_change": metric(sum(deltas) / n, n),
        }
    result["counterfactual"] = cf
    return result


def build_scrub(params: Params) -> tuple[Callable[[list[str]], list[str]], Callable[[list[str]], list[int]]]:
    """The scrub stage's PII treatment (same policy and key), and a PII-like detector."""
    from presidio_anonymizer import AnonymizerEngine

    from pipeline.common.keys import load_key
    from pipeline.common.pii import (
        anonymize,
        build_analyzer,
        build_operators,
        clear_of_tags,
        detect_batch,
        outside_tags,
    )

    policy = load_pii_policy(params.scrub.policy)
    key = load_key(policy, params.scrub.policy, Path.cwd())
    analyzer = build_analyzer(policy)
    anonymizer, operators = AnonymizerEngine(), build_operators(policy, key)

    def scrub(texts: list[str]) -> list[str]:
        # the texts were scrubbed once: a tag is never rewritten (a variant differs from its
        # original only in the swapped words and what the scrub makes of them)
        found = detect_batch(analyzer, policy, texts, 32)
        return [anonymize(anonymizer, t, clear_of_tags(t, d), operators) for t, d in zip(texts, found, strict=True)]

    def pii_like(texts: list[str]) -> list[int]:
        found = detect_batch(analyzer, policy, texts, 32)
        return [len(outside_tags(t, d)) for t, d in zip(texts, found, strict=True)]

    return scrub, pii_like
