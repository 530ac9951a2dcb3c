"""``govtune curve``: how many labelled examples the fine-tune needs (a data-efficiency curve).

Fine-tunes the base model on nested fractions of the training split (each fraction's tickets
include the smaller fractions'; the order is a salted hash of the ticket id, so it does not
depend on the file's order), with the finetune stage's own training loop and the same number
of optimizer steps for every fraction, and evaluates each adapter and the base model (the
0-examples point) on the same test tickets with the evaluate stage's own measures
(:func:`pipeline.common.evaluation.quality_and_fairness`: scored category and priority
accuracy, macro-F1, group fairness, counterfactual flips).

It is opt-in, not a stage of ``dvc repro`` (four fine-tunes cost four times the stage), and by
default runs fewer steps and fewer test tickets than the pipeline; the JSON says how many.
Writes ``reports/data_efficiency.json`` (every point's figures, the adapter sha256 each came
from, the train split's md5 and base model's sha256 it used) and ``reports/data_efficiency.png``;
the report stage shows them, marked stale when the train split or base model changed since.

Run: ``govtune curve [--fractions 0.1 0.25 0.5 1.0] [--steps 20] [--test-examples 64]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.common.curve import OUT_JSON, OUT_PNG
from pipeline.common.errors import GovtuneError
from pipeline.common.io import atomic_path, save_json
from pipeline.common.params import Params

log = logging.getLogger(__name__)

QUALITY = ("category_accuracy", "category_macro_f1", "priority_accuracy")
TARGET_SHARE = 0.95  # the smallest fraction reaching this share of the full run's quality is reported


def nested_fractions(
    records: list[dict[str, Any]], fractions: list[float], salt: str
) -> dict[float, list[dict[str, Any]]]:
    """The first ``ceil(f * n)`` records, for each ``f``, in one fixed order (salted sha256 of the
    ticket id): nested, and independent of the file's order."""
    order = sorted(records, key=lambda r: hashlib.sha256(f"{salt}:{r['ticket_id']}".encode()).hexdigest())
    return {f: order[: max(1, math.ceil(f * len(order)))] for f in fractions}


def smallest_reaching(points: list[dict[str, Any]], metric: str, share: float = TARGET_SHARE) -> dict[str, Any] | None:
    """The smallest fraction whose ``metric`` is at least ``share`` of the largest fraction's."""
    full = max(points, key=lambda p: p["fraction"])
    target = full["quality"][metric] * share
    for point in sorted(points, key=lambda p: p["fraction"]):
        if point["quality"][metric] is not None and point["quality"][metric] >= target:
            return {"fraction": point["fraction"], "examples": point["examples"], "metric": metric, "value": point["quality"][metric],
                    "target": round(target, 4), "share_of_full": share}  # fmt: skip
    return None


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    quality = {k: result["quality"][k]["value"] for k in QUALITY}
    gaps = {
        a: f["demographic_parity_difference"]["value"]
        for a, f in result["fairness"].items()
        if "demographic_parity_difference" in f
    }
    flips = {
        a: c["cf_priority_flip_rate"]["value"]
        for a, c in result["counterfactual"].items()
        if "cf_priority_flip_rate" in c
    }
    return {"quality": quality, "demographic_parity_difference": gaps, "cf_priority_flip_rate": flips, "n": result["quality"]["category_accuracy"]["n"]}  # fmt: skip


def run(
    params: Params, fractions: list[float], steps: int, test_examples: int, keep: Path | None = None
) -> dict[str, Any]:
    """Trains and evaluates every fraction; returns the curve (what the JSON holds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline import finetune
    from pipeline.common.evaluation import build_scrub, quality_and_fairness
    from pipeline.common.finetuned import weights_sha256
    from pipeline.common.policy import load_fairness_policy
    from pipeline.common.scorer import Scorer, precision_context
    from pipeline.common.task import ATTRIBUTE_COLUMNS
    from pipeline.common.tracking import dvc_md5

    split, base_dir = params.split.out_dir, params.base_model.out_dir
    for path in (split / "train.jsonl", split / "val.jsonl", split / "test.jsonl", base_dir / "provenance.json"):
        if not path.is_file():
            raise GovtuneError(str(path), "missing input", "run `dvc repro split base_model` first (or `make run`)")
    train = [r for r in finetune.load_jsonl(split / "train.jsonl") if not r["ticket_id"].startswith("CANARY")]
    val = finetune.load_jsonl(split / "val.jsonl")
    test = finetune.load_jsonl(split / "test.jsonl")[:test_examples]
    attributes = {a["ticket_id"]: a for a in finetune.load_jsonl(split / "test_attributes.jsonl")}
    attrs = [{c: attributes.get(t["ticket_id"], {}).get(c) for c in ATTRIBUTE_COLUMNS} for t in test]
    fairness = load_fairness_policy(params.evaluate.fairness_policy)
    ev = params.evaluate.model_copy(update={"generate_examples": min(params.evaluate.generate_examples, 4)})
    scrub_fn, _ = build_scrub(params)
    base_sha = json.loads((base_dir / "provenance.json").read_text())["output_files_sha256"]["model.safetensors"]
    subsets = nested_fractions(train, sorted(fractions), salt=str(params.finetune.seed))
    started = time.perf_counter()
    points: list[dict[str, Any]] = []
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32).eval()
    with precision_context(ev):
        base_point = _figures(
            quality_and_fairness(
                "base", Scorer(base, tokenizer, params.finetune.max_new_tokens), test, attrs, ev, fairness, scrub_fn
            )
        )
    del base
    with tempfile.TemporaryDirectory(prefix="govtune-curve-") as tmp:
        for fraction, subset in subsets.items():
            cfg = params.finetune.model_copy(update={"max_steps": steps, "checkpoint_interval": 0, "eval_interval": steps,
                                                     "checkpoint_dir": Path(tmp) / "checkpoints"})  # fmt: skip
            fingerprint = hashlib.sha256(f"curve:{fraction}:{base_sha}".encode()).hexdigest()
            model, tok, state, _ = finetune.train(
                cfg, base_dir, finetune.with_counterfactuals(params, subset)[0], val, fingerprint, finetune.Dist()
            )
            model.eval()
            adapter = (keep or Path(tmp)) / f"adapter-{fraction:g}"
            model.save_pretrained(adapter, safe_serialization=True)
            # Only the scoring runs under evaluate.precision: CPU autocast caches the bf16 copy of
            # every weight until the context exits, so training inside one would never see the
            # LoRA weights move (every point was the base model's, 2026-12-06).
            with precision_context(ev):
                result = quality_and_fairness(
                    f"{fraction:g}",
                    Scorer(model, tok, params.finetune.max_new_tokens),
                    test,
                    attrs,
                    ev,
                    fairness,
                    scrub_fn,
                )
            points.append({"fraction": fraction, "examples": len(subset), "steps": state.step, "train_tokens": state.tokens,
                           "val_loss_start": state.evals[0]["val_loss"] if state.evals else None,
                           "val_loss_final": state.evals[-1]["val_loss"] if state.evals else None,
                           "adapter_sha256": weights_sha256(adapter), **_figures(result)})  # fmt: skip
            log.info(
                "curve: %d examples -> category accuracy %.3f",
                len(subset),
                points[-1]["quality"]["category_accuracy"],
            )
            del model
    return {
        "what": "fine-tunes on nested fractions of the training split, each evaluated with the evaluate stage's measures on the same test tickets",
        "settings": {
            "fractions": sorted(fractions),
            "steps_per_fraction": steps,
            "pipeline_steps": params.finetune.max_steps,
            "test_examples": len(test),
            "pipeline_test_examples": params.evaluate.max_test_examples,
            "generate_examples": ev.generate_examples,
            "same_steps_for_every_fraction": True,
        },  # fmt: skip
        "inputs": {
            "train_md5": dvc_md5(split / "train.jsonl"),
            "test_md5": dvc_md5(split / "test.jsonl"),
            "base_model_sha256": base_sha,
            "train_examples": len(train),
        },  # fmt: skip
        "base": {"examples": 0, **base_point},
        "points": points,
        "smallest_fraction_reaching_95pct": {m: smallest_reaching(points, m) for m in QUALITY},
        "seconds": round(time.perf_counter() - started, 1),
        "definitions": "as in reports/evaluation.json (pipeline/common/evaluation.py)",
    }


def plot(curve: dict[str, Any], path: Path) -> None:
    """Quality and fairness gaps against the number of training examples (the base model at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [curve["base"], *curve["points"]]
    xs = [p["examples"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for metric in QUALITY:
        left.plot(xs, [p["quality"][metric] for p in points], marker="o", label=metric.replace("_", " "))
    left.set_xlabel("training examples (0 = base model)")
    left.set_ylim(0, 1)
    left.set_title(
        f"quality, {curve['settings']['steps_per_fraction']} steps each, n={curve['settings']['test_examples']}"
    )
    left.legend(fontsize=8)
    for attribute in sorted({a for p in points for a in p["demographic_parity_difference"]}):
        right.plot(
            xs,
            [p["demographic_parity_difference"].get(attribute) for p in points],
            marker="o",
            label=f"DPD {attribute}",
        )
    right.set_xlabel("training examples (0 = base model)")
    right.set_title("fairness gap (demographic parity difference)")
    right.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (``govtune curve`` and ``python -m pipeline.data_efficiency``)."""
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5, 1.0],
        help="fractions of the training split (nested)",
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="optimizer steps for every fraction (the pipeline's: finetune.max_steps)"
    )
    parser.add_argument("--test-examples", type=int, default=64, help="test tickets each point is evaluated on")
    parser.add_argument("--keep-adapters", type=Path, default=None, help="a folder to keep each fraction's adapter in")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="govtune curve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Makes the curve, writes the JSON and the plot, says where they are."""
    from pipeline.common.offline import configure_offline
    from pipeline.common.params import load_params

    if not all(0 < f <= 1 for f in args.fractions) or len(set(args.fractions)) < 2:
        raise GovtuneError("--fractions", f"{args.fractions}", "give two or more distinct fractions in (0, 1]")
    configure_offline()
    params = load_params()
    curve = run(params, args.fractions, args.steps, args.test_examples, args.keep_adapters)
    save_json(OUT_JSON, curve)
    plot(curve, OUT_PNG)
    best = curve["smallest_fraction_reaching_95pct"]["category_accuracy"]
    print(f"wrote {OUT_JSON} and {OUT_PNG} in {curve['seconds']:.0f} s; "
          + (f"{best['examples']} examples ({best['fraction']:g} of the split) reach 95% of the full run's category accuracy" if best else "no fraction reaches 95%")
          + "; `dvc repro -f -s report` shows it in the compliance report")  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    from pipeline.common.errors import run_main

    run_main(lambda: sys.exit(main()))
