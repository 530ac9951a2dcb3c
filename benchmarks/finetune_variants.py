"""Benchmark: candidate speed-ups of the fine-tune step, each against the stage's own step.

The stage's step (:func:`pipeline.common.training.answer_loss`, then backward) and a variant
run on the same micro-batches of the train split, alternating plain / variant per batch, on
the base model with the stage's LoRA config. Reported per batch: both times, their ratio, and
for an exact variant the loss and largest relative gradient difference (LoRA dropout off, so
both see the same function). Not a unit test: run it by hand on an otherwise idle machine.

Variants:

- ``prefix``: ``finetune.share_prefix`` (:mod:`pipeline.common.shared_prefix`): every example
  starts with the same system prompt (49 tokens of ~243 on the default data); it runs once at
  batch 1, its key/value cache is repeated over the batch, and the rest of each example
  attends to it. Exact (same loss and gradients); it skips (B-1)/B of the prefix's compute.
- ``compile``: ``torch.compile(dynamic=True)`` on the decoder (Inductor). The first batch
  includes the compile time; the ratio is over the batches after it.

Run: ``python -m benchmarks.finetune_variants --variant prefix|compile [--batches 4] [--repeats 2]``
(after ``dvc repro split base_model``). Writes ``reports/bench/finetune_variants_<variant>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json
from pipeline.common.offline import configure_offline
from pipeline.common.params import load_params
from pipeline.common.shared_prefix import common_prefix, shared_prefix_loss


def timed_step(model: Any, batch: dict[str, Any], loss_fn: Any) -> tuple[float, float, list[Any]]:
    """Seconds of one forward + backward, the mean answer-token loss, and the trained parameters' gradients."""
    started = time.perf_counter()
    loss, n = loss_fn(model, batch)
    (loss / n).backward()
    seconds = time.perf_counter() - started
    grads = [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    return seconds, float(loss.detach()) / n, grads


def main() -> None:
    import torch
    from transformers import AutoTokenizer

    from pipeline.common.training import answer_loss, collate, encode_records
    from pipeline.finetune import build_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("prefix", "compile"), required=True)
    parser.add_argument("--batches", type=int, default=4, help="micro-batches of the stage's batch size")
    parser.add_argument("--repeats", type=int, default=2, help="passes over those batches")
    args = parser.parse_args()
    configure_offline()
    params = load_params()
    cfg = params.finetune.model_copy(update={"lora_dropout": 0.0})  # the same function on both sides
    base = params.base_model.out_dir
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = [json.loads(line) for line in (params.split.out_dir / "train.jsonl").read_text().splitlines()]
    examples, _ = encode_records(tokenizer, rows[: cfg.batch_size * args.batches * 4], cfg.max_seq_len)
    examples.sort(key=lambda e: -len(e.input_ids))  # length-grouped, as the stage batches
    size = cfg.batch_size
    batches = [
        collate(examples[i : i + size], tokenizer.pad_token_id or 0) for i in range(0, size * args.batches, size)
    ]
    torch.manual_seed(cfg.seed)
    model = build_model(base, cfg, "fp32", "cpu").train()
    variant_loss = shared_prefix_loss
    if args.variant == "compile":
        decoder = model.base_model.model.model
        compiled = torch.compile(decoder, dynamic=True)
        variant_loss = answer_loss

        def swap(on: bool) -> None:
            model.base_model.model.model = compiled if on else decoder

    else:

        def swap(on: bool) -> None:
            return None

    results = []
    for repeat in range(args.repeats):
        for i, batch in enumerate(batches):
            swap(False)
            t_plain, loss_plain, g_plain = timed_step(model, batch, answer_loss)
            swap(True)
            t_var, loss_var, g_var = timed_step(model, batch, variant_loss)
            diff = max(
                float((a - b).abs().max() / (a.abs().max() + 1e-12)) for a, b in zip(g_plain, g_var, strict=True)
            )
            row = {"repeat": repeat, "batch": i, "shape": list(batch["input_ids"].shape), "plain_s": round(t_plain, 3),
                   "variant_s": round(t_var, 3), "ratio": round(t_plain / t_var, 3), "loss_plain": loss_plain,
                   "loss_variant": loss_var, "max_rel_grad_diff": diff}  # fmt: skip
            if args.variant == "prefix":
                row["prefix_tokens"] = common_prefix(batch)
            results.append(row)
            print(f"{row['shape']} plain {t_plain:6.2f} s  {args.variant} {t_var:7.2f} s  ratio {row['ratio']:.3f}  "
                  f"loss {loss_plain:.6f} / {loss_var:.6f}  grad diff {diff:.1e}", flush=True)  # fmt: skip
    timed = results[1:] if args.variant == "compile" else results  # the first compiled batch holds the compile
    ratios = [r["ratio"] for r in timed]
    summary = {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
               "total_ratio": sum(r["plain_s"] for r in timed) / sum(r["variant_s"] for r in timed)}  # fmt: skip
    if args.variant == "compile":
        summary["first_batch_s"] = results[0]["variant_s"]
    print(f"{args.variant}: median ratio {summary['median_ratio']:.3f} (range {summary['min_ratio']:.3f}-"
          f"{summary['max_ratio']:.3f}), total {summary['total_ratio']:.3f} (plain time / variant time)")  # fmt: skip
    save_json(Path(f"reports/bench/finetune_variants_{args.variant}.json"), {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "model": str(base), "batch_size": size, "variant": args.variant, "summary": summary, "batches": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
