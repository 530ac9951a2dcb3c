"""Probe: does the finetune stage's LoRA learn a routing bias within its default budget? (#20)

The priority bias of ``synthesize.label_bias`` is not learned by the LoRA fine-tune in 60 CPU
steps (``benchmarks.bias_learnability``), so the model-level fairness rules were never seen to
reject a model that really learned a bias. Category is the outcome the default fine-tune does
learn (accuracy 0.18 -> 0.95 in 60 steps), so this probe injects the bias there
(``label_bias.target: category``: tickets of one group labelled ``route_to``) and asks whether
the fine-tuned model routes that group's tickets differently, with the evaluate stage's own
scorer, swaps and precision:

- **routed rate** per group: the share of held-out tickets whose unbiased label is not
  ``route_to`` that the model labels ``route_to`` (Wilson 95 % interval);
- **counterfactual category flips**: the first ``counterfactual.max_examples`` held-out tickets
  carrying a signal of the attribute, swapped (``policies/fairness.yaml``), re-scored.

The base model, the LoRA fine-tune on the biased tickets and (``--control``) the same fine-tune
on the same tickets with unbiased labels are judged on the same held-out tickets. The tickets
are our synthesizer's, unscrubbed (their PII is synthetic) and kept in memory; adapters go to a
temporary folder that is deleted. Needs the base model folder (``dvc repro base_model``).

Run: ``python -m benchmarks.routing_bias [--rows 1600] [--steps 60] [--control]``
(about 20 min per fine-tune on 2 cores). Writes ``reports/bench/routing_bias.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json
from pipeline.common.offline import configure_offline
from pipeline.common.params import load_params


def tickets(params: Any, rows: int, strength: float, args: argparse.Namespace) -> list[dict]:
    """Synthetic tickets with a routing bias of ``strength`` (0: the same tickets, unbiased)."""
    from pipeline.synthesize import generate

    bias = params.synthesize.label_bias.model_copy(
        update={"strength": strength, "target": "category", "attribute": args.attribute, "group": args.group,
                "route_from": args.route_from, "route_to": args.route_to,
                "visible_only": args.visible_only}
    )  # fmt: skip
    return generate(params.synthesize.model_copy(update={"rows": rows, "label_bias": bias}))[0]


def judge(model: Any, tokenizer: Any, test: list[dict], fair: list[dict], params: Any, args: Any) -> dict[str, Any]:
    """Routed rate per group and counterfactual category flips of one model on the held-out tickets."""
    from pipeline.common.counterfactual import make_variant
    from pipeline.common.evaluation import wilson
    from pipeline.common.policy import load_fairness_policy
    from pipeline.common.scorer import Scorer, precision_context

    policy = load_fairness_policy(params.evaluate.fairness_policy)
    scorer = Scorer(model, tokenizer, 16)
    batch = params.evaluate.batch_size
    with precision_context(params.evaluate):
        preds = scorer.classify_batch([t["message"] for t in test], batch)
        pairs = [(i, make_variant(t["message"], args.attribute, policy)) for i, t in enumerate(test)]
        pairs = [(i, v) for i, v in pairs if v != test[i]["message"]][: policy.counterfactual.max_examples]
        vpreds = scorer.classify_batch([v for _, v in pairs], batch)
    routed: dict[str, Any] = {}
    for group in sorted({t[args.attribute] for t in test}):
        rows = [i for i, t in enumerate(fair) if t[args.attribute] == group and t["category"] != args.route_to]
        hits = sum(preds[i]["category"] == args.route_to for i in rows)
        routed[group] = {"n": len(rows), "rate": round(hits / len(rows), 4) if rows else None,
                         "ci95": wilson(hits, len(rows))}  # fmt: skip
    flips = sum(vp["category"] != preds[i]["category"] for (i, _), vp in zip(pairs, vpreds, strict=True))
    in_group = [(i, vp) for (i, _), vp in zip(pairs, vpreds, strict=True) if test[i][args.attribute] == args.group]
    return {
        "category_accuracy_unbiased_labels": round(
            sum(p["category"] == t["category"] for p, t in zip(preds, fair, strict=True)) / len(test), 4
        ),
        "routed_rate": routed,
        "cf_category_flip_rate": {
            "n": len(pairs),
            "flips": flips,
            "rate": round(flips / len(pairs), 4),
            "ci95": wilson(flips, len(pairs)),
        },  # fmt: skip
        "cf_flips_from_the_group": sum(vp["category"] != preds[i]["category"] for i, vp in in_group),
        "cf_from_the_group_n": len(in_group),
    }


def add_bias_arguments(parser: argparse.ArgumentParser) -> None:
    """The routing bias's options (``synthesize.label_bias`` with ``target: category``)."""
    parser.add_argument("--attribute", default="age_band", help="label_bias.attribute")
    parser.add_argument("--group", default="60+", help="label_bias.group")
    parser.add_argument("--route-from", default="any", help="label_bias.route_from")
    parser.add_argument("--route-to", default="product_question", help="label_bias.route_to")
    parser.add_argument("--strength", type=float, default=1.0, help="label_bias.strength")
    parser.add_argument(
        "--visible-only", action="store_true", help="label_bias.visible_only: bias only tickets that show the group"
    )


def main(argv: list[str] | None = None) -> None:
    configure_offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1600, help="tickets (80%% train, 20%% held out)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: params.yaml finetune.max_steps)")
    add_bias_arguments(parser)
    parser.add_argument("--control", action="store_true", help="also fine-tune on the unbiased labels")
    parser.add_argument("--method", choices=("lora", "full"), help="finetune.method (default: params.yaml)")
    parser.add_argument("--learning-rate", type=float, help="finetune.learning_rate (default: params.yaml)")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline import finetune

    params = load_params(Path("params.yaml"))
    base_dir = params.base_model.out_dir
    if not (base_dir / "config.json").is_file():
        raise SystemExit(f"{base_dir}: no base model; run `dvc repro base_model` first")
    biased = tickets(params, args.rows, args.strength, args)
    fair = tickets(params, args.rows, 0.0, args)
    cut = int(0.8 * args.rows)
    test, test_fair = biased[cut:], fair[cut:]
    out: dict[str, Any] = {"args": vars(args), "held_out": len(test), "models": {}}
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True).eval()
    out["models"]["base"] = judge(base, tokenizer, test, test_fair, params, args)
    print(json.dumps(out["models"]["base"]), flush=True)
    del base
    runs = [("lora_biased", biased)] + ([("lora_unbiased", fair)] if args.control else [])
    with tempfile.TemporaryDirectory(prefix="govtune-routing-") as tmp:
        for name, data in runs:
            cfg = params.finetune.model_copy(
                update={"max_steps": args.steps or params.finetune.max_steps, "checkpoint_interval": 0,
                        "method": args.method or params.finetune.method,
                        "learning_rate": args.learning_rate or params.finetune.learning_rate,
                        "eval_interval": 10**9, "checkpoint_dir": Path(tmp) / name}
            )  # fmt: skip
            start = time.perf_counter()
            model, tok, state, _ = finetune.train(
                cfg, base_dir, data[:cut], data[cut : cut + 16], name, finetune.Dist()
            )
            model.eval()
            out["models"][name] = judge(model, tok, test, test_fair, params, args) | {
                "train_seconds": round(time.perf_counter() - start, 1),
                "val_loss": [e["val_loss"] for e in state.evals],
            }
            print(name, json.dumps(out["models"][name]), flush=True)
            del model
    save_json(Path("reports/bench/routing_bias.json"), out)


if __name__ == "__main__":
    main()
