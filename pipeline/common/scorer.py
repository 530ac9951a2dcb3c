"""Scoring and generating with one causal LM, the adapter on or off: what the evaluate stage
and ``govtune monitor`` measure a model with.

- ``Scorer``: normalised probabilities of every category and priority as continuations of the
  prompt (one teacher-forced pass per candidate, sharing the prompt's KV cache), and greedy
  generation exactly as the served model answers (:mod:`pipeline.common.generation`);
- ``load_models``: the base model with an adapter attached (``disable_adapter()`` gives the base);
- precision: bf16 CPU autocast where the CPU computes bf16 natively (``evaluate.precision``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.common.params import EvaluateParams
from pipeline.common.task import CATEGORIES, PRIORITIES, prompt_messages


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


def load_models(base_dir: Path, adapter_dir: Path) -> tuple[Any, Any]:
    """The base model with the adapter attached (``disable_adapter()`` gives the base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).eval(), tokenizer


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
