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
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError, run_main
from pipeline.common.generation import generation_settings
from pipeline.common.io import evidence_of_this_run, save_json, sha256_file
from pipeline.common.outputs import save_output
from pipeline.common.params import EvaluateParams, Params, load_params
from pipeline.common.policy import FairnessPolicy, load_fairness_policy, load_pii_policy
from pipeline.common.task import format_answer, parse_answer, prompt_messages

log = logging.getLogger(__name__)

CATEGORIES = ("billing", "technical_issue", "account_access", "shipping", "refund", "product_question")
PRIORITIES = ("low", "medium", "high", "urgent")

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
    "cf_category_flip_rate": "share of counterfactual variants whose predicted category differs from the original's",
    "cf_priority_flip_rate": "share of counterfactual variants whose predicted priority differs from the original's",
    "cf_mean_abs_prob_change": "mean absolute change in the probability the model gives its original priority answer",
    "escalation_gap": "largest minus smallest share of training tickets labelled with a favourable priority, across the groups of an attribute (groups of min_group_size or more)",
    "escalation_gap_lower_bound": "largest, over pairs of those groups, of their gap in labelled escalation rate less its margin at label_gap_confidence (two-proportion normal interval); 0 when no gap is that certain",
    "canary_exposure": "log2(R+1) - log2(rank of the secret among R random codes + itself); max log2(R+1) = fully memorised",
    "regurgitated_pii_values": "generated replies for training prompts that contain a raw ground-truth PII value of any training ticket",
    "pii_like_output_rate": "share of those generations in which the PII analyzer finds an entity outside replacement tags",
}


# --- scoring with a shared prefix ----------------------------------------------------------


class Scorer:
    """Scores and generates with one causal LM (the adapter on or off)."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens = max_new_tokens  # the served model's (its adapter's generation settings)

    def prompt_text(self, message: str) -> str:
        return self.tokenizer.apply_chat_template(prompt_messages(message), add_generation_prompt=True, tokenize=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prefix_state(self, prefix: list[int]) -> tuple[Any, Any]:
        """Runs the prefix once; returns (log-probs of the next token, KV cache)."""
        import torch

        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([prefix]), use_cache=True)
        return torch.log_softmax(out.logits[0, -1].float(), -1), out.past_key_values

    def suffix_logprobs(self, prefix: list[int], suffixes: Sequence[list[int]], chunk: int = 32) -> list[float]:
        """Sum of log-probs of each suffix after ``prefix`` (exact; the prefix runs once)."""
        import torch

        first, cache = self.prefix_state(prefix)
        scores = []
        for start in range(0, len(suffixes), chunk):
            part = suffixes[start : start + chunk]
            if max(len(s) for s in part) == 1:
                scores.extend(float(first[s[0]]) for s in part)
                continue
            width = max(len(s) for s in part)
            ids = torch.zeros((len(part), width), dtype=torch.long)
            for row, s in enumerate(part):
                ids[row, : len(s)] = torch.tensor(s)
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(part))
            mask = torch.ones((len(part), len(prefix) + width), dtype=torch.long)
            with torch.no_grad():
                out = self.model(input_ids=ids, past_key_values=batch_cache, attention_mask=mask, use_cache=True)
            logp = torch.log_softmax(out.logits.float(), -1)
            for row, s in enumerate(part):
                total = float(first[s[0]])
                total += sum(float(logp[row, j - 1, s[j]]) for j in range(1, len(s)))
                scores.append(total)
        return scores

    def choose(self, context: str, options: Sequence[str], template: Callable[[str], str]) -> dict[str, float]:
        """Normalised probabilities of ``options`` as continuations ``template(option)`` of ``context``."""
        prefix, suffixes = self.split_common([context + template(o) for o in options])
        return _normalise(options, self.suffix_logprobs(prefix, suffixes))

    def classify(self, message: str) -> dict[str, Any]:
        """Predicted category, then priority given it, with the normalised probabilities."""
        context = self.prompt_text(message)
        cat_probs = self.choose(context, CATEGORIES, lambda c: f"category: {c}\n")
        category = max(cat_probs, key=cat_probs.get)
        pri_probs = self.choose(context + f"category: {category}\n", PRIORITIES, lambda p: f"priority: {p}\n")
        return {
            "category": category,
            "category_probs": cat_probs,
            "priority": max(pri_probs, key=pri_probs.get),
            "priority_probs": pri_probs,
        }

    def split_common(self, texts: list[str]) -> tuple[list[int], list[list[int]]]:
        """Tokenises texts; returns their longest common token prefix and the remainders."""
        ids = [self.encode(t) for t in texts]
        common = 0
        while all(len(t) > common for t in ids) and len({t[common] for t in ids}) == 1:
            common += 1
        return ids[0][:common], [t[common:] for t in ids]

    def prefill(self, prefixes: list[list[int]]) -> dict[str, Any]:
        """Runs left-padded prefixes in one pass; returns the state later calls extend."""
        import torch

        width = max(len(p) for p in prefixes)
        ids = torch.zeros((len(prefixes), width), dtype=torch.long)
        mask = torch.zeros((len(prefixes), width), dtype=torch.long)
        for row, p in enumerate(prefixes):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        return {"cache": out.past_key_values, "mask": mask, "last_pos": positions[:, -1],
                "next_logp": torch.log_softmax(out.logits[:, -1].float(), -1)}  # fmt: skip

    def extend(self, state: dict[str, Any], extensions: list[list[int]]) -> dict[str, Any]:
        """Appends right-padded token runs to each row of ``state`` (the cache grows in place)."""
        import torch

        if max(len(e) for e in extensions) == 0:
            return state
        width = max(len(e) for e in extensions)
        ids = torch.zeros((len(extensions), width), dtype=torch.long)
        ext_mask = torch.zeros((len(extensions), width), dtype=torch.long)
        for row, e in enumerate(extensions):
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
            ext_mask[row, : len(e)] = 1
        mask = torch.cat([state["mask"], ext_mask], -1)
        positions = state["last_pos"][:, None] + 1 + torch.arange(width)
        with torch.no_grad():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=state["cache"],
                use_cache=True,
            )
        lengths = torch.tensor([len(e) for e in extensions])
        last = (lengths - 1).clamp(min=0)
        logp = torch.log_softmax(out.logits[torch.arange(len(extensions)), last].float(), -1)
        keep_old = lengths == 0  # rows with nothing appended keep their previous next-token distribution
        logp[keep_old] = state["next_logp"][keep_old]
        return {"cache": out.past_key_values, "mask": mask, "last_pos": state["last_pos"] + lengths, "next_logp": logp}

    def candidates(self, state: dict[str, Any], suffixes: list[list[list[int]]]) -> list[list[float]]:
        """Log-probs of each row's candidate suffixes (same count per row); ``state`` is not changed."""
        import torch

        k = len(suffixes[0])
        first = state["next_logp"]
        flat = [s for row in suffixes for s in row]
        length = max(len(s) for s in flat)
        if length == 1:
            return [[float(first[i, s[0]]) for s in row] for i, row in enumerate(suffixes)]
        cache = copy.deepcopy(state["cache"])
        cache.batch_repeat_interleave(k)
        ids = torch.zeros((len(flat), length), dtype=torch.long)
        for row, s in enumerate(flat):
            ids[row, : len(s)] = torch.tensor(s)
        mask = torch.cat([state["mask"].repeat_interleave(k, 0), torch.ones((len(flat), length), dtype=torch.long)], -1)
        positions = state["last_pos"].repeat_interleave(k, 0)[:, None] + 1 + torch.arange(length)
        with torch.no_grad():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
            )
        logp = torch.log_softmax(out.logits.float(), -1)
        return [
            [
                float(first[i, s[0]]) + sum(float(logp[i * k + j, t - 1, s[t]]) for t in range(1, len(s)))
                for j, s in enumerate(row)
            ]
            for i, row in enumerate(suffixes)
        ]

    def classify_batch(self, messages: Sequence[str], batch_size: int) -> list[dict[str, Any]]:
        """:meth:`classify` for many messages, batched; the prompt runs once per message.

        The category pass's cache is extended by the few tokens of ``<category>\npriority:``
        to score the priorities, instead of running the prompt again.
        """
        out: list[dict[str, Any]] = []
        for start in range(0, len(messages), batch_size):
            contexts = [self.prompt_text(m) for m in messages[start : start + batch_size]]
            cat = [self.split_common([c + f"category: {x}\n" for x in CATEGORIES]) for c in contexts]
            state = self.prefill([p for p, _ in cat])
            cat_probs = [_normalise(CATEGORIES, sc) for sc in self.candidates(state, [r for _, r in cat])]
            picked = [max(p, key=p.get) for p in cat_probs]
            pri = [
                self.split_common([c + f"category: {x}\npriority: {y}\n" for y in PRIORITIES])
                for c, x in zip(contexts, picked, strict=True)
            ]
            if all(p2[: len(p1)] == p1 for (p2, _), (p1, _) in zip(pri, cat, strict=True)):
                state = self.extend(state, [p2[len(p1) :] for (p2, _), (p1, _) in zip(pri, cat, strict=True)])
            else:  # the tokenizer merged across the boundary: run the priority prefix afresh
                state = self.prefill([p for p, _ in pri])
            pri_probs = [_normalise(PRIORITIES, sc) for sc in self.candidates(state, [r for _, r in pri])]
            out.extend(
                {"category": c, "category_probs": cp, "priority": max(pp, key=pp.get), "priority_probs": pp}
                for c, cp, pp in zip(picked, cat_probs, pri_probs, strict=True)
            )
        return out

    def generate(self, messages: Sequence[str], batch_size: int) -> list[str]:
        """Greedy answers, exactly as the served model gives them (:mod:`pipeline.common.generation`)."""
        from pipeline.common.generation import generate_answers

        return generate_answers(self.model, self.tokenizer, messages, self.max_new_tokens, batch_size)


def _normalise(options: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    top = max(scores)
    weights = [math.exp(x - top) for x in scores]
    total = sum(weights)
    return {o: w / total for o, w in zip(options, weights, strict=True)}


# --- statistics ----------------------------------------------------------------------------


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


# --- quality ---------------------------------------------------------------------------------


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


# --- fairness --------------------------------------------------------------------------------


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
            }
        sf = groups[keep]
        yt, yp = y_true_esc[keep], y_pred_esc[keep]

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
            "small_groups": sorted(g for g, v in by_group.items() if v["too_small"]),
            "parity_over_groups": sorted(set(groups[keep])),
        }
    return out


def training_label_bias(
    priority_by_group: dict[str, dict[str, dict[str, int]]], policy: FairnessPolicy
) -> dict[str, Any]:
    """Examines the training labels for bias: escalation rate per group, the gap, its lower bound.

    The model learns what the labels teach, so a label bias shows here even where the model
    has not (yet) picked it up. The lower bound (the largest pairwise gap less its margin) keeps
    small groups from failing a rule by chance.

    Args:
        priority_by_group: ``{attribute: {group: {priority: records}}}`` of the train split
            (the split report's ``priority_by_attribute.train``).
        policy: favourable priorities, ``min_group_size`` and ``label_gap_confidence``.
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + policy.label_gap_confidence / 2)
    fav = set(policy.favourable_priorities)
    out: dict[str, Any] = {}
    for attribute in policy.protected_attributes:
        counts = {g: c for g, c in priority_by_group.get(attribute, {}).items() if g != "None"}
        groups = {}
        for group, by_priority in sorted(counts.items()):
            n, k = sum(by_priority.values()), sum(v for p, v in by_priority.items() if p in fav)
            groups[group] = {
                "n": n,
                "too_small": n < policy.min_group_size,
                "escalation_rate": round(k / n, 4),
                "escalation_rate_ci95": wilson(k, n),
            }
        exact = {
            g: sum(v for p, v in c.items() if p in fav) / sum(c.values()) for g, c in counts.items()
        }  # unrounded, for the bound
        judged = [(g, v["n"], exact[g]) for g, v in groups.items() if not v["too_small"]]
        if len(judged) < 2:
            out[attribute] = {"error": "fewer than two groups with enough training records", "groups": groups}
            continue
        rates = [r for _, _, r in judged]
        bound = 0.0
        for i, (_, n1, p1) in enumerate(judged):
            for _, n2, p2 in judged[i + 1 :]:
                bound = max(bound, abs(p1 - p2) - z * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2))
        n = sum(n for _, n, _ in judged)
        out[attribute] = {
            "groups": groups,
            "escalation_gap": metric(max(rates) - min(rates), n),
            "escalation_gap_lower_bound": metric(bound, n),
            "confidence": policy.label_gap_confidence,
            "small_groups": sorted(g for g, v in groups.items() if v["too_small"]),
        }
    return out


# --- counterfactuals --------------------------------------------------------------------------


def _swap_case(word: str, like: str) -> str:
    if like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_terms(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Swaps each pair both ways (whole words, case kept), in one pass."""
    mapping = {}
    for a, b in pairs:
        mapping[a.lower()], mapping[b.lower()] = b, a
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r")\b", re.I)
    return pattern.sub(lambda m: _swap_case(mapping[m.group(0).lower()], m.group(0)), text)


def flip_age_statements(text: str, policy: FairnessPolicy) -> str:
    """Turns "I'm NN" into the other side of the threshold (young <-> old)."""
    ages = policy.counterfactual.age_statements
    if ages is None:
        return text

    def repl(m: re.Match) -> str:
        age = int(m.group(1))
        return f"I'm {ages.young_age if age >= ages.threshold else ages.old_age}"

    return re.sub(r"\bI'm (\d{2})\b", repl, text)


def make_variant(text: str, attribute: str, policy: FairnessPolicy) -> str:
    """The counterfactual of ``text`` for ``attribute`` (may equal ``text``: no signal)."""
    variant = swap_terms(text, policy.counterfactual.swaps.get(attribute, []))
    if attribute == "age_band":
        variant = flip_age_statements(variant, policy)
    return variant


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
    by_group = json.loads(params.split.report.read_text(encoding="utf-8")).get("priority_by_attribute", {}).get("train")
    if by_group is None:
        raise GovtuneError(
            str(params.split.report),
            "no priority_by_attribute.train (written by an older split stage)",
            "re-run `dvc repro -f split`",
        )
    return Inputs(
        test,
        [attrs.get(t["ticket_id"], {}) for t in test],
        rows("train.jsonl"),
        rows("canaries.jsonl"),
        raw_values,
        by_group,
    )


def load_models(base_dir: Path, adapter_dir: Path) -> tuple[Any, Any]:
    """The base model with the adapter attached (``disable_adapter()`` gives the base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).eval(), tokenizer


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


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """The CPU computes bf16 in hardware (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo's flags).
    Without it torch emulates bf16: measured 10x slower than fp32 on an AVX2-only EPYC."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & NATIVE_BF16_FLAGS)


def resolve_precision(requested: str, native_bf16: bool | None = None) -> str:
    """``evaluate.precision``: auto = bf16 where the CPU has native bf16, else fp32."""
    if requested != "auto":
        return requested
    return "bf16" if (cpu_has_native_bf16() if native_bf16 is None else native_bf16) else "fp32"


def precision_context(cfg: EvaluateParams) -> Any:
    """bf16 CPU autocast, or nothing for fp32 (``evaluate.precision``, resolved)."""
    import torch

    return (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if resolve_precision(cfg.precision) == "bf16"
        else contextlib.nullcontext()
    )


def run(params: Params, cfg: EvaluateParams) -> dict[str, Any]:
    """Evaluates base and fine-tuned models on the same inputs."""
    started = time.perf_counter()
    fairness = load_fairness_policy(cfg.fairness_policy)
    inputs = load_inputs(params)
    scrub_fn, analyzer_fn = build_scrub(params)
    model, tokenizer = load_models(params.base_model.out_dir, params.finetune.out_dir)
    report: dict[str, Any] = {
        "definitions": DEFINITIONS,
        "surviving_signals": surviving_signals(inputs, fairness, scrub_fn),
        "training_labels": training_label_bias(inputs.train_labels_by_group, fairness),
    }
    # both models answer as the served model will: its adapter's generation settings
    generation = generation_settings(params.finetune.out_dir)
    with precision_context(cfg):
        for name in ("base", "finetuned"):
            with model.disable_adapter() if name == "base" else contextlib.nullcontext():
                scorer = Scorer(model, tokenizer, generation["max_new_tokens"])
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
        "adapter_sha256": sha256_file(params.finetune.out_dir / "adapter_model.safetensors"),
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
        with stage_run(params.tracking, "evaluate", deps, [cfg.report, cfg.summary, cfg.plots_dir]) as tracked:
            report = run(params, cfg)
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
