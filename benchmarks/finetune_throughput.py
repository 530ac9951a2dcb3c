"""Benchmark: fine-tune throughput of the stage vs a plain Hugging Face Trainer + PEFT script.

Both train the same base model (``models/base/``) with the same LoRA config, batch size,
sequence length, learning rate and train split, for the same number of optimizer steps, in
one process, one after the other; then the stage again with ``finetune.share_prefix: true``
(the shared system prompt run once per micro-batch). Throughput counts real (non-padding)
tokens per second of training-step time, the first step of each excluded (warm-up). Padding
waste is reported for each. Not a unit test: run it by hand on an otherwise idle machine.

``--profile`` instead runs the stage's loop for a few steps under the torch profiler and sums
the self CPU time of its operators: the share in matrix multiplies is work both contenders must
do per real token, so it bounds what batching and padding can win.

Run: ``python -m benchmarks.finetune_throughput [--steps 10] [--profile]`` (after ``dvc repro split base_model``)
Writes ``reports/bench/finetune_throughput.json`` (``finetune_profile.json`` with ``--profile``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from pipeline.common.io import save_json
from pipeline.common.offline import configure_offline
from pipeline.common.params import load_params


def bench_stage(cfg: Any, base_dir: Path, train: list[dict], steps: int) -> dict[str, Any]:
    """The finetune stage's own loop (length-grouped batches, dynamic padding)."""
    from pipeline import finetune

    cfg = cfg.model_copy(
        update={"max_steps": steps, "eval_interval": 10**9, "checkpoint_interval": 0, "eval_max_examples": 1}
    )
    dist = finetune.Dist()
    _, _, state, _ = finetune.train(cfg, base_dir, train, train[:1], "bench", dist)
    timed = state.history[1:]  # drop the warm-up step
    tokens = sum(h["tokens"] for h in timed)
    seconds = sum(h["seconds"] for h in timed)
    return {"steps_timed": len(timed), "real_tokens": tokens, "seconds": seconds,
            "padding_waste": 1 - state.tokens / state.padded_tokens, "tokens_per_s": tokens / seconds}  # fmt: skip


def bench_trainer(cfg: Any, base_dir: Path, train: list[dict], steps: int) -> dict[str, Any]:
    """What a user would otherwise write: Trainer + DataCollatorForSeq2Seq + get_peft_model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from pipeline.common.task import encode_example, format_answer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    rows = []
    for r in train:
        ids, labels, _ = encode_example(
            tokenizer, r["message"], format_answer(r["category"], r["priority"], r["reply"]), cfg.max_seq_len
        )
        rows.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)})
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                             target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"))  # fmt: skip
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    counts: list[tuple[int, int]] = []

    def counting_collator(features: list[dict]) -> dict:
        batch = collator(features)
        counts.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
        return batch

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    args = TrainingArguments(
        output_dir="/tmp/govtune-bench-trainer", per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, max_steps=steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.schedule, warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, report_to=[], save_strategy="no", logging_strategy="no",
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collator, callbacks=[timer]).train()
    # Micro-batches are collated in order; drop the warm-up step's.
    per_step = cfg.grad_accum
    real = sum(c[0] for c in counts[per_step : steps * per_step])
    padded = sum(c[1] for c in counts[: steps * per_step])
    seconds = sum(timer.times[1:])
    return {"steps_timed": len(timer.times) - 1, "real_tokens": real, "seconds": seconds,
            "padding_waste": 1 - sum(c[0] for c in counts[: steps * per_step]) / padded, "tokens_per_s": real / seconds}  # fmt: skip


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
ATTENTION_OPS = ("scaled_dot_product", "flash_attention")


def profile_stage(cfg: Any, base_dir: Path, train: list[dict], steps: int) -> dict[str, Any]:
    """The stage's loop under ``torch.profiler``: self CPU time per operator, grouped."""
    from torch.profiler import ProfilerActivity, profile

    from pipeline import finetune

    cfg = cfg.model_copy(
        update={"max_steps": steps, "eval_interval": 10**9, "checkpoint_interval": 0, "eval_max_examples": 1}
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        finetune.train(cfg, base_dir, train, train[:1], "bench", finetune.Dist())
    ops = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]
    total = sum(seconds for _, seconds, _ in ops)
    matmul = sum(seconds for name, seconds, _ in ops if name in MATMUL_OPS)
    attention = sum(seconds for name, seconds, _ in ops if any(a in name for a in ATTENTION_OPS))
    top = sorted(ops, key=lambda op: -op[1])[:12]
    return {"steps": steps, "self_cpu_seconds": total, "matmul_share": matmul / total, "attention_share": attention / total,
            "top_ops": [{"op": name, "self_cpu_s": round(seconds, 2), "share": round(seconds / total, 4), "calls": count}
                        for name, seconds, count in top]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per method (first one is warm-up)")
    parser.add_argument("--profile", action="store_true", help="profile the stage's loop instead (--steps steps)")
    args = parser.parse_args()
    configure_offline()
    params = load_params()
    cfg = params.finetune
    train = [json.loads(line) for line in (params.split.out_dir / "train.jsonl").read_text().splitlines()]
    base = params.base_model.out_dir
    if args.profile:
        result = profile_stage(cfg, base, train, args.steps)
        print(f"\nstage loop, {args.steps} steps: {result['self_cpu_seconds']:.1f} s self CPU time in torch operators")
        for op in result["top_ops"]:
            print(f"  {op['share']:6.1%} {op['self_cpu_s']:8.2f} s {op['calls']:7d} calls  {op['op']}")
        print(
            f"matrix multiplies (mm, addmm, bmm): {result['matmul_share']:.1%}; attention: {result['attention_share']:.1%}"
        )
        save_json(Path("reports/bench/finetune_profile.json"), result)
        return
    trainer = bench_trainer(cfg, base, train, args.steps)
    stage = bench_stage(cfg, base, train, args.steps)
    shared = bench_stage(cfg.model_copy(update={"share_prefix": True}), base, train, args.steps)
    ratio = stage["tokens_per_s"] / trainer["tokens_per_s"]
    shared_ratio = shared["tokens_per_s"] / trainer["tokens_per_s"]
    print(f"\n{'method':<36}{'steps':>6}{'real tokens':>13}{'padding':>9}{'seconds':>9}{'tokens/s':>10}")
    rows = (("HF Trainer + PEFT", trainer), ("govtune finetune stage", stage), ("stage, share_prefix: true", shared))
    for name, r in rows:
        print(
            f"{name:<36}{r['steps_timed']:>6}{r['real_tokens']:>13}{r['padding_waste']:>9.1%}{r['seconds']:>9.1f}{r['tokens_per_s']:>10.1f}"
        )
    print(f"ratio (stage / Trainer): {ratio:.2f}x; with share_prefix {shared_ratio:.2f}x  (target >= 1.5x)")
    save_json(Path("reports/bench/finetune_throughput.json"), {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": __import__("os").cpu_count()},
        "model": str(base), "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "max_seq_len": cfg.max_seq_len, "lora_r": cfg.lora_r,
        "trainer": trainer, "stage": stage, "ratio": ratio, "stage_share_prefix": shared, "ratio_share_prefix": shared_ratio,
    })  # fmt: skip


if __name__ == "__main__":
    main()
