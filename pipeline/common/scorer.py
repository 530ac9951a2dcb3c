"""Scoring and generating with one causal LM, the adapter on or off: what the evaluate stage
and ``govtune monitor`` measure a model with.

- ``Scorer``: the task's questions put to the model: normalised probabilities of every category,
  then of every priority given the chosen category, as continuations of the prompt (the token
  work is :mod:`pipeline.common.continuations`: each prompt runs once), and greedy generation
  exactly as the served model answers (:mod:`pipeline.common.generation`);
- ``load_models``: the fine-tuned model (LoRA: the base with the adapter attached; full: the
  trained model), and ``base_model``: the base beside it (the adapter switched off, or loaded);
- precision: bf16 CPU autocast where the CPU computes bf16 natively (``evaluate.precision``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.common import continuations
from pipeline.common.params import EvaluateParams
from pipeline.common.task import CATEGORIES, PRIORITIES, prompt_messages


class Scorer:
    """Puts the task's questions to one causal LM (the adapter on or off)."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens = max_new_tokens  # the served model's (its adapter's generation settings)

    def prompt_text(self, message: str) -> str:
        return self.tokenizer.apply_chat_template(prompt_messages(message), add_generation_prompt=True, tokenize=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def split_common(self, texts: list[str]) -> tuple[list[int], list[list[int]]]:
        """Tokenises texts; returns their longest common token prefix and the remainders."""
        return continuations.common_prefix([self.encode(t) for t in texts])

    def suffix_logprobs(self, prefix: list[int], suffixes: Sequence[list[int]]) -> list[float]:
        """Sum of log-probs of each suffix after ``prefix`` (exact; the prefix runs once)."""
        return continuations.suffix_logprobs(self.model, prefix, suffixes)

    def classify_batch(self, messages: Sequence[str], batch_size: int) -> list[dict[str, Any]]:
        """Predicted category, then priority given it, with the normalised probabilities, for
        ``batch_size`` messages at a time; the prompt runs once per message.

        The category pass's cache is extended by the few tokens of ``<category>\npriority:``
        to score the priorities, instead of running the prompt again.
        """
        out: list[dict[str, Any]] = []
        for start in range(0, len(messages), batch_size):
            contexts = [self.prompt_text(m) for m in messages[start : start + batch_size]]
            cat = [self.split_common([c + f"category: {x}\n" for x in CATEGORIES]) for c in contexts]
            rows = continuations.prefill(self.model, [p for p, _ in cat])
            cat_scores = continuations.candidates(self.model, rows, [r for _, r in cat])
            cat_probs = [continuations.normalise(CATEGORIES, sc) for sc in cat_scores]
            picked = [max(p, key=p.get) for p in cat_probs]
            pri = [
                self.split_common([c + f"category: {x}\npriority: {y}\n" for y in PRIORITIES])
                for c, x in zip(contexts, picked, strict=True)
            ]
            if all(p2[: len(p1)] == p1 for (p2, _), (p1, _) in zip(pri, cat, strict=True)):
                rows = continuations.extend(
                    self.model, rows, [p2[len(p1) :] for (p2, _), (p1, _) in zip(pri, cat, strict=True)]
                )
            else:  # the tokenizer merged across the boundary: run the priority prefix afresh
                rows = continuations.prefill(self.model, [p for p, _ in pri])
            pri_scores = continuations.candidates(self.model, rows, [r for _, r in pri])
            pri_probs = [continuations.normalise(PRIORITIES, sc) for sc in pri_scores]
            out.extend(
                {"category": c, "category_probs": cp, "priority": max(pp, key=pp.get), "priority_probs": pp}
                for c, cp, pp in zip(picked, cat_probs, pri_probs, strict=True)
            )
        return out

    def generate(self, messages: Sequence[str], batch_size: int) -> list[str]:
        """Greedy answers, exactly as the served model gives them (:mod:`pipeline.common.generation`)."""
        from pipeline.common.generation import generate_answers

        return generate_answers(self.model, self.tokenizer, messages, self.max_new_tokens, batch_size)


def load_models(base_dir: Path, adapter_dir: Path) -> tuple[Any, Any]:
    """The fine-tuned model (``finetune.method`` as the folder says) and its tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from pipeline.common.finetuned import load_finetuned

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir, local_files_only=True)
    return load_finetuned(base_dir, adapter_dir, torch.float32), tokenizer


@contextlib.contextmanager
def base_model(model: Any, base_dir: Path) -> Any:
    """The base model beside a fine-tuned ``model``: a LoRA model with its adapter switched off
    (the same object), or, for a full fine-tune, the base weights loaded from ``base_dir``."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
        return
    import torch
    from transformers import AutoModelForCausalLM

    yield AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32).eval()


def forward_module(model: Any) -> Any:
    """The module every forward pass of ``model`` runs through (for token counting hooks)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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
