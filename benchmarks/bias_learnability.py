"""Probe: does a fine-tune learn an injected label bias? LoRA (the stage) vs full fine-tuning.

Why it exists: every CPU run of the real pipeline on biased data (``synthesize.label_bias``)
gave a model whose predictions do not depend on gender, so the model-level fairness rules
could not be shown to catch a *learned* bias (issue #5). This probe separates "the data does
not carry a learnable bias" from "the LoRA fine-tune does not learn it in this many steps".

On a small Llama-architecture model built here (the tests' tiny tokenizer and architecture,
64 wide) and first pre-trained in full on unbiased synthetic tickets (so, like a real base,
it already reads category and priority), it trains on the *same* biased tickets:

- ``lora_biased``: the finetune stage's own ``train`` (LoRA, params.yaml's finetune section
  with the step count and learning rate given here);
- ``full_biased``: every weight trained, same batch size and step count;
- ``full_unbiased``: the same on the same tickets with unbiased labels (the control).

Each model is judged with the evaluate stage's own ``quality_and_fairness`` (the scorer,
Fairlearn group fairness, counterfactual gender swaps) on a held-out part of the tickets.
The synthetic texts stay in memory; the models go to a temporary folder that is deleted.

Run: ``python -m benchmarks.bias_learnability [--steps 1600] [--lora-only]`` (about 10 min on 2 cores)
Writes ``reports/bench/bias_learnability.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json
from pipeline.common.offline import configure_offline
from pipeline.common.params import load_params

PROTECTED = ("gender", "age_band", "region")


def tickets(params: Any, rows: int, seed: int, strength: float, levels: int) -> list[dict]:
    """Synthetic tickets (the demo generator) with the given label bias."""
    from pipeline.synthesize import generate

    bias = params.synthesize.label_bias.model_copy(update={"strength": strength, "levels": levels})
    return generate(params.synthesize.model_copy(update={"rows": rows, "seed": seed, "label_bias": bias}))[0]


def encode(tokenizer: Any, records: list[dict], max_len: int, whole: bool) -> list[Any]:
    """The stage's examples (``common.training.encode_records``); ``whole``: loss on every token (pre-training)."""
    from pipeline.common.training import Example, encode_records

    examples, _ = encode_records(tokenizer, records, max_len)
    return [Example(e.input_ids, list(e.input_ids)) for e in examples] if whole else examples


def train_full(model: Any, examples: list[Any], steps: int, batch: int, lr: float, pad: int, seed: int) -> float:
    """Trains every weight with AdamW and gradient clipping on the stage's batches; returns the seconds."""
    import torch

    from pipeline.common.training import collate

    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        model(**collate(rng.sample(examples, batch), pad)).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return time.perf_counter() - start


def judge(name: str, model: Any, tokenizer: Any, test: list[dict], params: Any) -> dict[str, Any]:
    """The evaluate stage's quality, group fairness and counterfactuals, and the gender table."""
    from pipeline.common.evaluation import quality_and_fairness
    from pipeline.common.policy import load_fairness_policy
    from pipeline.common.scorer import Scorer

    fairness = load_fairness_policy(params.evaluate.fairness_policy)
    cfg = params.evaluate.model_copy(update={"generate_examples": 2, "loss_examples": 32, "max_seq_len": 512})
    attrs = [{k: t[k] for k in PROTECTED} for t in test]
    result = quality_and_fairness(name, Scorer(model, tokenizer, 16), test, attrs, cfg, fairness, lambda texts: texts)
    gender = result["fairness"]["gender"]
    if "demographic_parity_difference" not in gender:
        raise SystemExit(f"{len(test)} held-out tickets: fewer than two gender groups of min_group_size "
                         f"{fairness.min_group_size} (policies/fairness.yaml); raise --rows")  # fmt: skip
    return {
        "category_accuracy": result["quality"]["category_accuracy"]["value"],
        "priority_accuracy": result["quality"]["priority_accuracy"]["value"],
        "gender_dpd": gender["demographic_parity_difference"]["value"],
        "gender_dpd_ci95": gender["demographic_parity_difference"].get("ci95"),
        "escalation_rate": {g: v["escalation_rate"] for g, v in gender["groups"].items()},
        "group_n": {g: v["n"] for g, v in gender["groups"].items()},
        "cf_gender_priority_flip_rate": result["counterfactual"]["gender"]["cf_priority_flip_rate"]["value"],
        "cf_gender_n": result["counterfactual"]["gender"]["cf_priority_flip_rate"]["n"],
    }


def main(argv: list[str] | None = None) -> None:
    configure_offline()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1200, help="biased tickets (80%% train, 20%% held out)")
    parser.add_argument("--steps", type=int, default=1600, help="optimizer steps of each fine-tune")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="full pre-training steps of the base")
    parser.add_argument("--lora-lr", type=float, default=0.01, help="learning rate of the LoRA fine-tune")
    parser.add_argument("--full-lr", type=float, default=0.003, help="learning rate of the full fine-tunes")
    parser.add_argument("--label-weight", type=float, default=10.0, help="finetune.label_weight of the LoRA fine-tune")
    parser.add_argument("--lora-targets", help="comma-separated finetune.target_modules (default: params.yaml's)")
    parser.add_argument("--lora-r", type=int, help="finetune.lora_r (alpha = 2 r; default: params.yaml's)")
    parser.add_argument("--lora-only", action="store_true", help="skip the two full fine-tunes")
    parser.add_argument("--strength", type=float, default=1.0, help="synthesize.label_bias.strength")
    parser.add_argument("--levels", type=int, default=3, help="synthesize.label_bias.levels")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.tiny_model import build_tiny_model
    from pipeline import finetune

    params = load_params(Path("params.yaml"))
    out: dict[str, Any] = {"args": vars(args), "models": {}}
    with tempfile.TemporaryDirectory(prefix="govtune-bias-") as tmp:
        base_dir = Path(tmp) / "base"
        corpus = tickets(params, 300, params.synthesize.seed, 0.0, 1)
        build_tiny_model(base_dir, [t["message"] + "\n" + t["reply"] for t in corpus], vocab_size=2000, hidden=64)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        pad = tokenizer.pad_token_id
        base = AutoModelForCausalLM.from_pretrained(base_dir)
        pre = tickets(params, 1500, params.synthesize.seed + 1, 0.0, 1)  # unbiased, other customers
        seconds = train_full(base, encode(tokenizer, pre, 512, whole=True), args.pretrain_steps, 16, 0.003, pad, 0)
        base.save_pretrained(base_dir)
        out["pretrain_seconds"] = round(seconds, 1)

        biased = tickets(params, args.rows, params.synthesize.seed + 2, args.strength, args.levels)
        fair = tickets(params, args.rows, params.synthesize.seed + 2, 0.0, args.levels)  # same tickets, unbiased labels
        cut = int(0.8 * args.rows)
        out["models"]["base"] = judge("base", base, tokenizer, fair[cut:], params)

        update: dict[str, Any] = {
            "max_steps": args.steps, "learning_rate": args.lora_lr, "label_weight": args.label_weight,
            "max_seq_len": 512, "eval_interval": 10**9, "eval_max_examples": 8, "checkpoint_interval": 0,
            "checkpoint_dir": Path(tmp) / "ckpt", "precision": "fp32",
        }  # fmt: skip
        if args.lora_targets:
            update["target_modules"] = args.lora_targets.split(",")
        if args.lora_r:
            update |= {"lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r}
        cfg = params.finetune.model_copy(update=update)
        start = time.perf_counter()
        lora, lora_tok, _, _ = finetune.train(
            cfg, base_dir, biased[:cut], biased[cut : cut + 8], "bias-probe", finetune.Dist()
        )
        lora.eval()
        seconds = time.perf_counter() - start
        out["models"]["lora_biased"] = judge("lora_biased", lora, lora_tok, biased[cut:], params) | {
            "train_seconds": round(seconds, 1)
        }
        del lora

        for name, data in () if args.lora_only else (("full_biased", biased), ("full_unbiased", fair)):
            model = AutoModelForCausalLM.from_pretrained(base_dir)
            step_batch = cfg.batch_size * cfg.grad_accum
            examples = encode(tokenizer, data[:cut], 512, whole=False)
            seconds = train_full(model, examples, args.steps, step_batch, args.full_lr, pad, cfg.seed)
            out["models"][name] = judge(name, model, tokenizer, data[cut:], params) | {
                "train_seconds": round(seconds, 1)
            }
    out["test_labels"] = (
        "the same held-out tickets for every model; accuracy against the labels it was trained on (base: unbiased)"
    )
    save_json(Path("reports/bench/bias_learnability.json"), out)
    print(json.dumps(out["models"], indent=1))


if __name__ == "__main__":
    main()
