"""Benchmark: generation throughput of the evaluate stage, batched vs one prompt at a time.

The stage's ``Scorer.generate`` (left-padded batches of ``evaluate.batch_size``, greedy, the
stage's precision) against the same call with batch size 1, on the same test messages, with the
fine-tuned model (base + adapter) as the stage loads it, in one process, one after the other.
Throughput counts generated tokens (up to the end-of-sequence token; no padding). A warm-up
batch runs first. Also reports how many answers are identical in the two runs (greedy decoding;
padding and bf16 can change a near tie).

Not a unit test: run it by hand on an otherwise idle machine, after ``dvc repro finetune``.

Run: ``python -m benchmarks.eval_generation [--prompts 16]``
Writes ``reports/bench/eval_generation.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json
from pipeline.common.offline import configure_offline
from pipeline.common.params import load_params


def timed_generate(scorer: Any, messages: list[str], batch_size: int) -> tuple[dict[str, Any], list[str]]:
    start = time.perf_counter()
    answers = scorer.generate(messages, batch_size)
    seconds = time.perf_counter() - start
    tokens = sum(len(scorer.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return {"prompts": len(messages), "batch_size": batch_size, "seconds": seconds, "generated_tokens": tokens,
            "tokens_per_s": tokens / seconds, "prompts_per_s": len(messages) / seconds}, answers  # fmt: skip


def main() -> None:
    configure_offline()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="test messages answered by each contender")
    args = parser.parse_args()
    import torch

    from pipeline.common.generation import generation_settings
    from pipeline.common.scorer import Scorer, load_models

    params = load_params()
    cfg = params.evaluate
    test = [json.loads(line) for line in (params.split.out_dir / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    messages = [t["message"] for t in test[: args.prompts]]
    model, tokenizer = load_models(params.base_model.out_dir, params.finetune.out_dir)
    tokens = generation_settings(params.finetune.out_dir)["max_new_tokens"]  # as the stage and the served model
    scorer = Scorer(model, tokenizer, tokens)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.precision == "bf16" else contextlib.nullcontext()
    with autocast:
        Scorer(model, tokenizer, 8).generate(messages[:2], 2)  # warm-up
        batched, batched_answers = timed_generate(scorer, messages, cfg.batch_size)
        single, single_answers = timed_generate(scorer, messages, 1)
    summary = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
        },
        "precision": cfg.precision,
        "max_new_tokens": tokens,
        "results": {"stage (batched)": batched, "one prompt at a time": single},
        "identical_answers": sum(a == b for a, b in zip(batched_answers, single_answers, strict=True)),
        "ratio_tokens_per_s": batched["tokens_per_s"] / single["tokens_per_s"],
    }
    print(f"\n{'contender':24} {'batch':>5} {'tokens/s':>9} {'prompts/s':>9} {'seconds':>8}")
    for name, r in summary["results"].items():
        print(f"{name:24} {r['batch_size']:5d} {r['tokens_per_s']:9.1f} {r['prompts_per_s']:9.2f} {r['seconds']:8.1f}")
    print(f"identical answers: {summary['identical_answers']}/{len(messages)}")
    print(f"ratio batched / one at a time: {summary['ratio_tokens_per_s']:.2f}x generated tokens/s")
    save_json(Path("reports/bench/eval_generation.json"), summary)


if __name__ == "__main__":
    main()
